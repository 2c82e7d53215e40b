// SPDX-License-Identifier: Apache-2.0
//! [`ParentInstance`]: a parent instance that launches enclaves, whatever it is — the
//! emulated [`crate::Parent`], or the machine this runs on through the kernel's driver
//! ([`crate::KernelParent`]). [`crate::launch`] is written once over it.

use ne_driver::EnclaveDevice;

use ne_hypervisor::Console;

use crate::donor::MemoryDonor;
use crate::heartbeat::HeartbeatListener;

/// What a parent reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentStatus {
    /// What runs the enclaves: `emulated` or `kernel`.
    pub backend: String,
    /// The parent's CPUs, when known.
    pub cpus: Option<u32>,
    /// The NE CPU pool (`ne_cpus`), as CPU ids.
    pub cpu_pool: Vec<u32>,
    /// The parent's cores, each as the CPU ids of its threads (empty when not known):
    /// enclaves take whole cores.
    pub cores: Vec<Vec<u32>>,
    /// The parent's RAM in MiB, when known.
    pub memory_mib: Option<u64>,
    /// Hugepages reserved, in MiB, when known.
    pub hugepages_total_mib: Option<u64>,
    /// Hugepages free, in MiB, when known.
    pub hugepages_free_mib: Option<u64>,
    /// The most enclaves at once, when known.
    pub max_enclaves: Option<usize>,
}

/// Why an operator request cannot be carried out on this parent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub &'static str);

/// A parent instance that can launch enclaves.
pub trait ParentInstance: Send + Sync {
    /// The enclave device a process of this parent opens.
    type Device: EnclaveDevice;
    /// The memory such a process donates from.
    type Memory: MemoryDonor + Send;

    /// A new process: the device as it opened it, and its memory.
    fn process(&self) -> (Self::Device, Self::Memory);

    /// The parent's resources.
    fn status(&self) -> ParentStatus;

    /// Makes the enclave of `slot_uid` exit by itself (or crash), as the hypervisor would
    /// report it; false if none runs there.
    fn end_enclave(&self, slot_uid: u64, crash: bool) -> Result<bool, Unsupported>;

    /// Listens for an enclave's heartbeat (vsock port 9000 of the parent), before it
    /// starts; `None` when this parent's enclaves send none (they boot nothing, or the
    /// parent has no vsock).
    fn heartbeat(&self) -> std::io::Result<Option<HeartbeatListener>>;

    /// What the backend says of the enclave of `slot_uid` (its process, its accelerator).
    fn enclave_details(&self, _slot_uid: u64) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The console of the debug enclave of `slot_uid` at `cid`, where this parent can see it.
    fn console(&self, _slot_uid: u64, _cid: u64) -> Option<Console> {
        None
    }
}
