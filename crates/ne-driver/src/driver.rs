// SPDX-License-Identifier: Apache-2.0
//! [`NeDriver`]: one probed NE device, the equivalent of `/dev/nitro_enclaves`, with the
//! event worker (`ne_event_work_handler`) running beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use ne_abi::{CmdReply, MsixVector};

use crate::api::DeviceFile;
use crate::bar::{Bar, Vectors};
use crate::cpu_pool::{CpuPool, Topology};
use crate::enclave::Enclave;
use crate::error::{errno, Error, Result};
use crate::memory::UserMemory;
use crate::shared::{lock, Shared};
use crate::transport::{DriverConfig, Transport};

/// One probed NE device: the equivalent of `/dev/nitro_enclaves`. Enclaves made from it
/// keep it alive; [`NeDriver::remove`] (or dropping it) disables the device.
pub struct NeDriver<B: Bar + 'static> {
    shared: Arc<Shared<B>>,
    worker: Option<JoinHandle<()>>,
}

impl<B: Bar + 'static> std::fmt::Debug for NeDriver<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeDriver").finish_non_exhaustive()
    }
}

impl<B: Bar + 'static> NeDriver<B> {
    /// Probes the device behind `bar` as `ne_pci_probe` does (disable and poll, version 1
    /// echoed, enable echoed), then starts the event worker. `vectors` must be raised by
    /// whatever delivers the device's MSI-X messages; `topology` is the parent's CPUs.
    pub fn probe(
        bar: B,
        vectors: Arc<Vectors>,
        topology: Topology,
        config: DriverConfig,
    ) -> Result<Self> {
        let transport = Transport::new(bar, Arc::clone(&vectors), config);
        transport.probe()?;
        let shared = Arc::new(Shared {
            transport: Mutex::new(transport),
            enclaves: Mutex::new(Vec::new()),
            pool: Mutex::new(None),
            topology,
            vectors,
            removed: AtomicBool::new(false),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = thread::Builder::new()
            .name("ne-events".to_owned())
            .spawn(move || event_worker(&worker_shared))
            .map_err(|e| {
                Error::with_errno(errno::ENOMEM, format!("cannot start the event worker: {e}"))
            })?;
        Ok(NeDriver {
            shared,
            worker: Some(worker),
        })
    }

    /// Sets the CPU pool from a CPU list, as writing `ne_cpus` does. Fails with `EPERM`
    /// while any enclave exists, and with `EINVAL` for a list `ne_setup_cpu_pool` refuses
    /// (the pool is then empty, as Linux resets the parameter).
    pub fn set_cpu_pool(&self, list: &str) -> Result<()> {
        let enclaves = lock(&self.shared.enclaves);
        if !enclaves.is_empty() {
            return Err(Error::with_errno(
                errno::EPERM,
                "the CPU pool cannot change while enclaves exist",
            ));
        }
        let mut pool = lock(&self.shared.pool);
        *pool = None;
        *pool = Some(CpuPool::from_list(list, &self.shared.topology)?);
        Ok(())
    }

    /// The CPU pool, if one is set.
    pub fn cpu_pool(&self) -> Option<CpuPool> {
        lock(&self.shared.pool).clone()
    }

    /// The parent's CPU topology.
    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    /// `NE_CREATE_VM`: a new enclave in INIT state. Fails with
    /// `NE_ERR_NO_CPUS_AVAIL_IN_POOL`, without a command, when no pool core is free.
    pub fn create_vm(&self) -> Result<Enclave<B>> {
        self.shared.create_vm()
    }

    /// The device as a process whose memory is `memory` sees it after `open`: the
    /// [`crate::EnclaveDevice`] of the enclave API.
    pub fn open<M: UserMemory + Send + Sync>(&self, memory: Arc<M>) -> DeviceFile<B, M> {
        DeviceFile::new(Arc::clone(&self.shared), memory)
    }

    /// `ne_do_request` with any command number and payload, with Linux's argument checks:
    /// for commands the enclave API does not send (`SLOT_COUNT`, `NEXT_SLOT`, …).
    pub fn request(&self, command: u32, payload: &[u8]) -> Result<CmdReply> {
        lock(&self.shared.transport).request_raw(command, payload)
    }

    /// Runs the event work now, as if vector 1 had arrived.
    pub fn handle_event(&self) {
        self.shared.handle_event();
    }

    /// `ne_pci_remove`: disables the device (write 0 to `NE_ENABLE`, poll until it reads
    /// 0) and stops the event worker. Returns whether the device confirmed the disable.
    pub fn remove(mut self) -> bool {
        self.shut_down()
    }

    fn shut_down(&mut self) -> bool {
        if self.shared.removed.swap(true, Ordering::SeqCst) {
            return true;
        }
        let disabled = lock(&self.shared.transport).disable();
        self.shared.vectors.close();
        if let Some(worker) = self.worker.take() {
            // The worker only ends by returning; a panic in it has already been reported.
            let _ = worker.join();
        }
        disabled
    }
}

impl<B: Bar + 'static> Drop for NeDriver<B> {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The event workqueue: one pass of the event work per burst of vector-1 messages.
fn event_worker<B: Bar>(shared: &Shared<B>) {
    let mut seen = 0;
    loop {
        let counts = shared.vectors.wait_beyond(MsixVector::Event, seen, None);
        if counts.closed {
            return;
        }
        seen = counts.event;
        shared.handle_event();
    }
}
