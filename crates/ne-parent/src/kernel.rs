// SPDX-License-Identifier: Apache-2.0
//! [`KernelParent`]: the machine this runs on as the parent — an EC2 instance, or a guest
//! of `nectl serve` — through the Linux driver's `/dev/nitro_enclaves`.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use ne_driver::parse_cpu_list;
use ne_driver::sys::KernelDevice;

use ne_hypervisor::Console;

use crate::donor::KernelHugepages;
use crate::heartbeat::HeartbeatListener;
use crate::instance::{ParentInstance, ParentStatus, Unsupported};

/// Where the driver publishes its CPU pool.
const NE_CPUS: &str = "/sys/module/nitro_enclaves/parameters/ne_cpus";
/// The CPUs that can ever be online.
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";
/// The 2 MiB hugepage counters.
const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// The kernel's NE driver, opened.
#[derive(Clone, Debug)]
pub struct KernelParent {
    device: Arc<KernelDevice>,
}

impl KernelParent {
    /// Opens the device at `path` (usually `/dev/nitro_enclaves`).
    pub fn open(path: &Path) -> io::Result<KernelParent> {
        Ok(KernelParent {
            device: Arc::new(KernelDevice::open(path)?),
        })
    }
}

/// The parent's CPU count, `nr_cpu_ids`: one past the highest possible CPU. (The online
/// count is smaller while the driver holds pool CPUs offline.)
fn possible_cpus() -> Option<u32> {
    let possible = std::fs::read_to_string(POSSIBLE_CPUS).ok()?;
    parse_cpu_list(&possible).ok()?.last().map(|cpu| cpu + 1)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl ParentInstance for KernelParent {
    type Device = Arc<KernelDevice>;
    type Memory = KernelHugepages;

    fn process(&self) -> (Self::Device, Self::Memory) {
        (Arc::clone(&self.device), KernelHugepages::default())
    }

    fn status(&self) -> ParentStatus {
        let pool = std::fs::read_to_string(NE_CPUS).unwrap_or_default();
        let hugepages =
            |file: &str| read_number(&format!("{HUGEPAGES_2M}/{file}")).map(|pages| pages * 2);
        ParentStatus {
            backend: "kernel".to_owned(),
            cpus: possible_cpus(),
            cpu_pool: parse_cpu_list(&pool)
                .map(|cpus| cpus.into_iter().collect())
                .unwrap_or_default(),
            cores: kernel_cores(possible_cpus().unwrap_or(0)),
            memory_mib: None,
            hugepages_total_mib: hugepages("nr_hugepages"),
            hugepages_free_mib: hugepages("free_hugepages"),
            max_enclaves: None,
        }
    }

    fn heartbeat(&self) -> io::Result<Option<HeartbeatListener>> {
        HeartbeatListener::kernel()
    }

    /// The hypervisor serves a debug enclave's console at CID 0, port `cid + 10000`.
    fn console(&self, _slot_uid: u64, cid: u64) -> Option<Console> {
        let port = u32::try_from(ne_vsock::console_port(cid)).ok()?;
        let mut stream = vsock::VsockStream::connect_with_cid_port(
            ne_vsock::HYPERVISOR_CID.try_into().ok()?,
            port,
        )
        .map_err(|e| tracing::warn!(cid, "no console at CID 0, port {port}: {e}"))
        .ok()?;
        let console = Console::new();
        let feed = console.clone();
        std::thread::Builder::new()
            .name("ne-console".to_owned())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(read @ 1..) = stream.read(&mut chunk) {
                    feed.push(chunk.get(..read).unwrap_or_default());
                }
                feed.close();
            })
            .ok()?;
        Some(console)
    }

    fn end_enclave(&self, _slot_uid: u64, _crash: bool) -> Result<bool, Unsupported> {
        Err(Unsupported(
            "the kernel's driver cannot make an enclave end; only the hypervisor decides",
        ))
    }
}

/// The machine's cores, from each CPU's `topology/thread_siblings_list`.
fn kernel_cores(cpus: u32) -> Vec<Vec<u32>> {
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for cpu in 0..cpus {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
        let Some(siblings) = std::fs::read_to_string(path)
            .ok()
            .and_then(|list| parse_cpu_list(&list).ok())
        else {
            continue;
        };
        let siblings: Vec<u32> = siblings.into_iter().collect();
        if !cores.contains(&siblings) {
            cores.push(siblings);
        }
    }
    cores
}
