// SPDX-License-Identifier: Apache-2.0
//! Where the parent process runs enclaves: on an emulated parent (the default), or through
//! the Linux kernel's driver at `/dev/nitro_enclaves` (`--device`), as nitro-cli does on a
//! real parent — or in a guest of `nectl serve`.

use std::io;
use std::path::Path;
use std::time::Duration;

use ne_abi::uapi::{EIF_IMAGE, ENCLAVE_DEBUG_MODE};
use ne_abi::{EnclaveState, NeError, NeUserMemoryRegion};
use ne_driver::sys::{HugepageMemory, KernelDevice, KernelEnclave};
use ne_parent::{LaunchError, LaunchRequest, LaunchStep, Launched, Parent, HUGEPAGE_BYTES};
use serde_json::{json, Value};

use crate::json::MeasurementsJson;

/// The enclave host.
#[derive(Debug)]
pub enum Host {
    /// An emulated parent in this process.
    Emulated(Box<Parent>),
    /// The kernel's driver.
    Kernel(KernelDevice),
}

/// An enclave launched through the kernel: its fd and the hugepages it was given.
#[derive(Debug)]
pub struct KernelRunning {
    enclave: KernelEnclave,
    memory: Vec<HugepageMemory>,
    cpu_ids: Vec<u32>,
    memory_mib: u64,
    cid: u64,
    debug: bool,
}

/// A running enclave on either host.
#[derive(Debug)]
pub enum Running {
    /// On the emulated parent.
    Emulated(Box<Launched>),
    /// Through the kernel.
    Kernel(KernelRunning),
}

impl Running {
    /// The device's slot uid.
    pub fn slot_uid(&self) -> u64 {
        match self {
            Running::Emulated(l) => l.enclave.slot_uid(),
            Running::Kernel(k) => k.enclave.slot_uid(),
        }
    }

    /// Its CID.
    pub fn cid(&self) -> u64 {
        match self {
            Running::Emulated(l) => l.cid,
            Running::Kernel(k) => k.cid,
        }
    }

    /// Its CPUs.
    pub fn cpu_ids(&self) -> &[u32] {
        match self {
            Running::Emulated(l) => &l.cpu_ids,
            Running::Kernel(k) => &k.cpu_ids,
        }
    }

    /// Its memory in MiB.
    pub fn memory_mib(&self) -> u64 {
        match self {
            Running::Emulated(l) => l.memory_mib,
            Running::Kernel(k) => k.memory_mib,
        }
    }

    /// Whether it was started in debug mode.
    pub fn debug(&self) -> bool {
        match self {
            Running::Emulated(l) => l.enclave.info().flags & ENCLAVE_DEBUG_MODE != 0,
            Running::Kernel(k) => k.debug,
        }
    }

    /// Whether the driver still reports it running.
    pub fn is_running(&self) -> bool {
        match self {
            Running::Emulated(l) => l.enclave.info().state == EnclaveState::Running.value(),
            Running::Kernel(k) => !k.enclave.wait_hangup(0).unwrap_or(false),
        }
    }

    /// Waits up to `timeout` for the enclave to stop on its own (POLLHUP).
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        match self {
            Running::Emulated(l) => l.enclave.wait_event(timeout),
            Running::Kernel(k) => {
                let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
                k.enclave.wait_hangup(ms).unwrap_or(false)
            }
        }
    }

    /// Terminates it: the driver sends `ENCLAVE_STOP` (unless it stopped) and `SLOT_FREE`.
    pub fn release(self) -> Result<(), String> {
        match self {
            Running::Emulated(l) => {
                let Launched {
                    enclave, memory, ..
                } = *l;
                let released = enclave.release().map_err(|e| e.to_string());
                drop(memory);
                released
            }
            Running::Kernel(k) => {
                // Closing the fd is the release; the kernel reports no error for it.
                drop(k.enclave);
                drop(k.memory);
                Ok(())
            }
        }
    }
}

/// An io::Error from an ioctl as the driver error it stands for.
fn driver_error(error: &io::Error) -> ne_driver::Error {
    let errno = error.raw_os_error().unwrap_or(ne_driver::errno::EIO);
    match u32::try_from(errno)
        .ok()
        .and_then(|code| NeError::try_from(code).ok())
    {
        Some(ne) => ne_driver::Error::Ne(ne),
        None => ne_driver::Error::Errno {
            errno,
            context: error.to_string(),
        },
    }
}

fn ioctl_failed(step: LaunchStep, what: &str, error: &io::Error) -> LaunchError {
    let driver = driver_error(error);
    LaunchError {
        step,
        message: format!("{what} failed: {driver}"),
        driver: Some(driver),
    }
}

impl Host {
    /// Opens the kernel's device at `path`.
    pub fn kernel(path: &Path) -> io::Result<Host> {
        KernelDevice::open(path).map(Host::Kernel)
    }

    /// Launches an enclave; also returns its measurements when known.
    pub fn launch(
        &self,
        request: &LaunchRequest,
    ) -> Result<(Running, Option<MeasurementsJson>), LaunchError> {
        match self {
            Host::Emulated(parent) => {
                let launched = parent.launch(request)?;
                let measurements = parent
                    .image(launched.enclave.slot_uid())
                    .map(|image| MeasurementsJson::from(&image.measurements));
                Ok((Running::Emulated(Box::new(launched)), measurements))
            }
            Host::Kernel(device) => {
                // As nitro-cli does, measure the image here: the kernel does not report it.
                let measurements = ne_eif::Eif::parse(&request.eif)
                    .map(|eif| MeasurementsJson::from(&eif.measurements()))
                    .map_err(|e| LaunchError {
                        step: LaunchStep::Request,
                        message: format!("the file is not a valid EIF: {e}"),
                        driver: None,
                    })?;
                let running = launch_kernel(device, request)?;
                Ok((Running::Kernel(running), Some(measurements)))
            }
        }
    }

    /// Makes an enclave exit or crash on its own; only the emulated parent can.
    pub fn end(&self, running: &Running, crash: bool) -> Result<bool, String> {
        match self {
            Host::Emulated(parent) => {
                let uid = running.slot_uid();
                Ok(if crash {
                    parent.crash(uid)
                } else {
                    parent.exit(uid)
                })
            }
            Host::Kernel(_) => Err(
                "the kernel backend cannot make an enclave crash; the hypervisor decides"
                    .to_owned(),
            ),
        }
    }

    /// Why the hypervisor refused the last image, if it said.
    pub fn refusal_reason(&self) -> Option<String> {
        match self {
            Host::Emulated(parent) => parent
                .device()
                .last_rejection()
                .map(|r| r.error.to_string()),
            Host::Kernel(_) => None,
        }
    }

    /// The most enclaves at once, if known.
    pub fn max_enclaves(&self) -> Option<usize> {
        match self {
            Host::Emulated(parent) => Some(parent.config().max_slots),
            Host::Kernel(_) => None,
        }
    }

    /// A description of the host.
    pub fn status(&self) -> Value {
        match self {
            Host::Emulated(parent) => {
                let config = parent.config();
                let hugepage_mib = parent.hugepage_bytes() >> 20;
                json!({
                    "Backend": "emulated",
                    "CPUs": config.cores * config.threads_per_core,
                    "CpuPool": parent.driver().cpu_pool().map(|p| p.cpus().into_iter().collect::<Vec<u32>>()),
                    "MemoryMiB": config.ram_mib,
                    "HugepagesTotalMiB": parent.total_hugepages() * hugepage_mib,
                    "HugepagesFreeMiB": parent.free_hugepages(0) * hugepage_mib,
                    "MaxEnclaves": config.max_slots,
                })
            }
            Host::Kernel(_) => json!({
                "Backend": "kernel",
                "CpuPool": std::fs::read_to_string("/sys/module/nitro_enclaves/parameters/ne_cpus").ok().map(|s| s.trim().to_owned()),
            }),
        }
    }
}

/// nitro-cli's launch through the kernel's ioctls: hugepages one by one, the image at the
/// load offset, one region per page, vCPUs, start.
fn launch_kernel(
    device: &KernelDevice,
    request: &LaunchRequest,
) -> Result<KernelRunning, LaunchError> {
    request.check()?;
    let enclave = device
        .create_vm()
        .map_err(|e| ioctl_failed(LaunchStep::CreateVm, "NE_CREATE_VM", &e))?;
    let offset = enclave
        .image_load_info(EIF_IMAGE)
        .map_err(|e| ioctl_failed(LaunchStep::ImageLoadInfo, "NE_GET_IMAGE_LOAD_INFO", &e))?;
    let page_len = usize::try_from(HUGEPAGE_BYTES).unwrap_or(usize::MAX);
    let pages = request.memory_mib * (1 << 20) / HUGEPAGE_BYTES;
    let mut memory = Vec::new();
    for _ in 0..pages {
        let page = HugepageMemory::new(page_len).map_err(|e| LaunchError {
            step: LaunchStep::MemoryAvailable,
            message: format!(
                "cannot map a 2 MiB hugepage ({e}); reserve more in /proc/sys/vm/nr_hugepages"
            ),
            driver: None,
        })?;
        memory.push(page);
    }
    let first = usize::try_from(offset / HUGEPAGE_BYTES).unwrap_or(usize::MAX);
    for (chunk, page) in request
        .eif
        .chunks(page_len)
        .zip(memory.iter_mut().skip(first))
    {
        page.as_mut_slice()[..chunk.len()].copy_from_slice(chunk);
    }
    for page in &memory {
        let region = NeUserMemoryRegion {
            flags: 0,
            memory_size: HUGEPAGE_BYTES,
            userspace_addr: page.addr(),
        };
        enclave
            .set_user_memory_region(region)
            .map_err(|e| ioctl_failed(LaunchStep::SetMemory, "NE_SET_USER_MEMORY_REGION", &e))?;
    }
    let cpu_ids = request
        .cpus
        .vcpu_ids()
        .into_iter()
        .map(|id| {
            enclave
                .add_vcpu(id)
                .map_err(|e| ioctl_failed(LaunchStep::AddVcpu, "NE_ADD_VCPU", &e))
        })
        .collect::<Result<Vec<u32>, LaunchError>>()?;
    let flags = if request.debug { ENCLAVE_DEBUG_MODE } else { 0 };
    let cid = enclave
        .start(flags, request.cid)
        .map_err(|e| ioctl_failed(LaunchStep::Start, "NE_START_ENCLAVE", &e))?;
    Ok(KernelRunning {
        enclave,
        memory,
        cpu_ids,
        memory_mib: request.memory_mib,
        cid,
        debug: request.debug,
    })
}
