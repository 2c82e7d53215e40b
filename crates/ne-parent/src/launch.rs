// SPDX-License-Identifier: Apache-2.0
//! [`launch`]: running an enclave from an EIF the way nitro-cli does through
//! `/dev/nitro_enclaves`, on any [`ParentInstance`]: the image checked and measured, an
//! enclave created, hugepage memory mapped with the image at the offset
//! `NE_GET_IMAGE_LOAD_INFO` gives, one `NE_SET_USER_MEMORY_REGION` per hugepage, vCPUs,
//! then `NE_START_ENCLAVE`, and — where enclaves boot — the heartbeat on vsock port 9000. Written once; the emulated parent and the kernel's driver
//! differ only behind the traits.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ne_abi::uapi::{EIF_IMAGE, ENCLAVE_DEBUG_MODE, MIN_ENCLAVE_MEM_SIZE};
use ne_abi::NeUserMemoryRegion;
use ne_driver::{EnclaveDevice, EnclaveFd};
use ne_eif::{Eif, EifError, Measurements, Metadata};
use thiserror::Error;

use crate::donor::{DonorError, MemoryDonor};
use crate::heartbeat::{heartbeat_timeout, HeartbeatError};
use crate::hugepages::{HUGEPAGE_BYTES, HUGEPAGE_LEN};
use crate::instance::ParentInstance;

const MIB: u64 = 1 << 20;
/// How many console lines a failed boot reports.
const CONSOLE_LINES: usize = 20;

/// Which CPUs an enclave gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuRequest {
    /// This many, picked from the pool (`--cpu-count`).
    Count(u32),
    /// These (`--cpu-ids`).
    Ids(Vec<u32>),
}

/// What to launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// The EIF's bytes.
    pub eif: Vec<u8>,
    /// Enclave memory in MiB; rounded up to whole 2 MiB hugepages, as nitro-cli does.
    pub memory_mib: u64,
    /// Its CPUs.
    pub cpus: CpuRequest,
    /// The CID wanted; 0 lets the device pick.
    pub cid: u64,
    /// Start in debug mode.
    pub debug: bool,
}

/// The step of a launch that failed; each has a nitro-cli error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchStep {
    /// The request itself is wrong (E03, E20).
    Request,
    /// The image is not a valid EIF (E35).
    Image,
    /// Too little memory asked for the image (E26).
    MemoryRequested,
    /// Not enough hugepages free (E27).
    MemoryAvailable,
    /// `NE_CREATE_VM` (E28).
    CreateVm,
    /// `NE_GET_IMAGE_LOAD_INFO` (E30).
    ImageLoadInfo,
    /// `NE_SET_USER_MEMORY_REGION` (E31).
    SetMemory,
    /// `NE_ADD_VCPU` (E32).
    AddVcpu,
    /// `NE_START_ENCLAVE` (E33).
    Start,
    /// The enclave booted no further than its heartbeat (E36).
    Heartbeat,
}

/// Why a launch failed.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// `--cpu-count 0`.
    #[error("--cpu-count must be at least 1")]
    NoCpus,
    /// `--cpu-ids` with nothing in it.
    #[error("--cpu-ids lists no CPU")]
    EmptyCpuIds,
    /// A CPU listed twice.
    #[error("CPU {0} is listed twice in --cpu-ids")]
    DuplicateCpu(u32),
    /// The file is not an EIF.
    #[error("The file is not a valid EIF")]
    Image(#[source] EifError),
    /// Less memory than the image needs.
    #[error("{asked} MiB of memory asked for, but this {eif_bytes}-byte EIF needs at least {needed} MiB")]
    MemoryTooSmall {
        /// MiB asked for.
        asked: u64,
        /// The image's size.
        eif_bytes: u64,
        /// The least that works.
        needed: u64,
    },
    /// Memory too large to address.
    #[error("{0} MiB is more memory than can be mapped")]
    MemoryTooLarge(u64),
    /// The memory could not be mapped or written.
    #[error("Cannot prepare the enclave's memory")]
    Memory(#[source] DonorError),
    /// The parent cannot listen for the heartbeat.
    #[error("Cannot listen for the enclave's heartbeat on vsock port 9000")]
    HeartbeatListen(#[source] std::io::Error),
    /// The enclave sent no heartbeat; it was terminated. Its console's last lines, if seen.
    #[error("The enclave did not boot: no heartbeat")]
    NoHeartbeat {
        /// Why.
        #[source]
        source: HeartbeatError,
        /// The last lines of its console.
        console: Option<String>,
    },
    /// An ioctl failed.
    #[error("{ioctl} failed")]
    Ioctl {
        /// The step.
        step: LaunchStep,
        /// The ioctl's name.
        ioctl: &'static str,
        /// The driver's error, with the errno.
        #[source]
        source: ne_driver::Error,
    },
}

impl LaunchError {
    /// The step that failed.
    pub fn step(&self) -> LaunchStep {
        match self {
            LaunchError::NoCpus | LaunchError::EmptyCpuIds | LaunchError::DuplicateCpu(_) => {
                LaunchStep::Request
            }
            LaunchError::Image(_) => LaunchStep::Image,
            LaunchError::MemoryTooSmall { .. } | LaunchError::MemoryTooLarge(_) => {
                LaunchStep::MemoryRequested
            }
            LaunchError::Memory(_) => LaunchStep::MemoryAvailable,
            LaunchError::HeartbeatListen(_) | LaunchError::NoHeartbeat { .. } => {
                LaunchStep::Heartbeat
            }
            LaunchError::Ioctl { step, .. } => *step,
        }
    }

    /// The driver's error, when an ioctl failed.
    pub fn driver_error(&self) -> Option<&ne_driver::Error> {
        match self {
            LaunchError::Ioctl { source, .. } => Some(source),
            _ => None,
        }
    }

    fn ioctl(step: LaunchStep, ioctl: &'static str) -> impl FnOnce(ne_driver::Error) -> Self {
        move |source| LaunchError::Ioctl {
            step,
            ioctl,
            source,
        }
    }
}

/// A launched enclave and the memory it was given. Dropping it terminates the enclave
/// (closing the enclave fd) and frees its hugepages.
#[derive(Debug)]
pub struct Launched<P: ParentInstance> {
    /// The enclave fd. Declared first: it is released before its memory is unmapped.
    pub enclave: <P::Device as EnclaveDevice>::Enclave,
    /// The process memory holding its hugepages.
    pub memory: P::Memory,
    /// Its CPUs, in the order they were added.
    pub cpu_ids: Vec<u32>,
    /// Its memory in MiB (what was asked, rounded up to whole hugepages).
    pub memory_mib: u64,
    /// Its CID.
    pub cid: u64,
    /// Whether it runs in debug mode.
    pub debug: bool,
    /// The image's PCRs.
    pub measurements: Measurements,
    /// The image's metadata section, if it has one.
    pub metadata: Option<Metadata>,
    /// From `NE_START_ENCLAVE` to the heartbeat, when the enclave sent one.
    pub boot_time: Option<Duration>,
}

impl<P: ParentInstance> Launched<P> {
    /// Terminates the enclave: `close` on its fd, then its memory is freed.
    pub fn release(self) -> ne_driver::Result<()> {
        let Launched {
            enclave, memory, ..
        } = self;
        let released = enclave.release();
        drop(memory);
        released
    }
}

/// The least memory nitro-cli accepts for an image: 4 times its size, at least 64 MiB,
/// rounded up to whole hugepages.
pub fn min_memory_mib(eif_len: u64) -> u64 {
    let bytes = (eif_len.saturating_mul(4)).max(MIN_ENCLAVE_MEM_SIZE);
    bytes.div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES / MIB
}

impl LaunchRequest {
    /// The checks nitro-cli makes before it touches the driver: a CPU request that names
    /// something, a valid image, and enough memory for it in whole 2 MiB hugepages.
    /// Returns the image's measurements.
    pub fn check(&self) -> Result<(Measurements, Option<Metadata>), LaunchError> {
        check_cpus(&self.cpus)?;
        let eif = Eif::parse(&self.eif).map_err(LaunchError::Image)?;
        // parse() checked the metadata section.
        let metadata = eif.metadata().ok().flatten();
        let measurements = eif.measurements();
        let eif_bytes = self.eif.len() as u64;
        let needed = min_memory_mib(eif_bytes);
        if self.memory_mib < needed {
            return Err(LaunchError::MemoryTooSmall {
                asked: self.memory_mib,
                eif_bytes,
                needed,
            });
        }
        if self.memory_bytes().is_none() {
            return Err(LaunchError::MemoryTooLarge(self.memory_mib));
        }
        Ok((measurements, metadata))
    }

    /// The memory the enclave gets: what was asked, rounded up to whole 2 MiB hugepages
    /// (what was asked when that cannot be counted: [`check`](Self::check) refuses it).
    pub fn hugepage_mib(&self) -> u64 {
        self.memory_mib
            .checked_next_multiple_of(HUGEPAGE_BYTES / MIB)
            .unwrap_or(self.memory_mib)
    }

    fn memory_bytes(&self) -> Option<u64> {
        self.memory_mib
            .checked_next_multiple_of(HUGEPAGE_BYTES / MIB)?
            .checked_mul(MIB)
            .filter(|bytes| usize::try_from(*bytes).is_ok())
    }
}

/// Launches an enclave on `parent` as nitro-cli does, returning it running.
pub fn launch<P: ParentInstance>(
    parent: &P,
    request: &LaunchRequest,
) -> Result<Launched<P>, LaunchError> {
    let (measurements, metadata) = request.check()?;
    // nitro-cli listens before it starts the enclave, so an early heartbeat is not lost.
    let heartbeat = parent.heartbeat().map_err(LaunchError::HeartbeatListen)?;
    let (device, mut memory) = parent.process();
    let enclave = device
        .create_vm()
        .map_err(LaunchError::ioctl(LaunchStep::CreateVm, "NE_CREATE_VM"))?;
    let offset = enclave
        .image_load_info(EIF_IMAGE)
        .map_err(LaunchError::ioctl(
            LaunchStep::ImageLoadInfo,
            "NE_GET_IMAGE_LOAD_INFO",
        ))?;
    let pages = map_image(&mut memory, request, offset)?;
    for page in pages {
        let region = NeUserMemoryRegion {
            flags: 0,
            memory_size: HUGEPAGE_BYTES,
            userspace_addr: page,
        };
        enclave
            .set_user_memory_region(region)
            .map_err(LaunchError::ioctl(
                LaunchStep::SetMemory,
                "NE_SET_USER_MEMORY_REGION",
            ))?;
    }
    let cpu_ids = add_cpus(&enclave, &request.cpus)?;
    let flags = if request.debug { ENCLAVE_DEBUG_MODE } else { 0 };
    let started = Instant::now();
    let cid = enclave
        .start(flags, request.cid)
        .map_err(LaunchError::ioctl(LaunchStep::Start, "NE_START_ENCLAVE"))?;
    let mut boot_time = None;
    if let Some(listener) = heartbeat {
        let timeout = heartbeat_timeout(request.eif.len() as u64);
        if let Err(source) = listener.wait_while_running(&enclave, timeout) {
            let console = parent
                .console(enclave.slot_uid(), cid)
                .map(|c| c.tail(CONSOLE_LINES));
            // As nitro-cli does: an enclave that did not boot is terminated.
            let _ = enclave.release();
            return Err(LaunchError::NoHeartbeat { source, console });
        }
        boot_time = Some(started.elapsed());
    }
    Ok(Launched {
        enclave,
        memory,
        cpu_ids,
        memory_mib: request.hugepage_mib(),
        cid,
        debug: request.debug,
        measurements,
        metadata,
        boot_time,
    })
}

/// Maps the enclave's memory one hugepage at a time, as nitro-cli does, and copies the
/// image in at `offset` of their concatenation; returns the pages' addresses in order.
fn map_image<M: MemoryDonor>(
    memory: &mut M,
    request: &LaunchRequest,
    offset: u64,
) -> Result<Vec<u64>, LaunchError> {
    let bytes = request
        .memory_bytes()
        .ok_or(LaunchError::MemoryTooLarge(request.memory_mib))?;
    let count = bytes / HUGEPAGE_BYTES;
    let mut pages = Vec::new();
    for _ in 0..count {
        pages.push(
            memory
                .map_hugepages(HUGEPAGE_BYTES)
                .map_err(LaunchError::Memory)?,
        );
    }
    for (index, chunk) in request.eif.chunks(HUGEPAGE_LEN).enumerate() {
        let at = offset + index as u64 * HUGEPAGE_BYTES;
        let page = usize::try_from(at / HUGEPAGE_BYTES)
            .ok()
            .and_then(|page| pages.get(page))
            .ok_or(LaunchError::MemoryTooSmall {
                asked: request.memory_mib,
                eif_bytes: request.eif.len() as u64,
                needed: min_memory_mib(request.eif.len() as u64),
            })?;
        memory
            .write(page + at % HUGEPAGE_BYTES, chunk)
            .map_err(LaunchError::Memory)?;
    }
    Ok(pages)
}

fn check_cpus(cpus: &CpuRequest) -> Result<(), LaunchError> {
    match cpus {
        CpuRequest::Count(0) => Err(LaunchError::NoCpus),
        CpuRequest::Ids(ids) if ids.is_empty() => Err(LaunchError::EmptyCpuIds),
        CpuRequest::Ids(ids) => {
            let mut seen = BTreeSet::new();
            match ids.iter().find(|id| !seen.insert(**id)) {
                Some(id) => Err(LaunchError::DuplicateCpu(*id)),
                None => Ok(()),
            }
        }
        CpuRequest::Count(_) => Ok(()),
    }
}

/// `NE_ADD_VCPU` for each CPU asked for: `count` times "any" (0), or each id. The pool
/// runs out long before a huge count does: nothing is allocated per CPU asked.
fn add_cpus<E: EnclaveFd>(enclave: &E, cpus: &CpuRequest) -> Result<Vec<u32>, LaunchError> {
    let add = |id| {
        enclave
            .add_vcpu(id)
            .map_err(LaunchError::ioctl(LaunchStep::AddVcpu, "NE_ADD_VCPU"))
    };
    match cpus {
        CpuRequest::Count(count) => (0..*count).map(|_| add(0)).collect(),
        CpuRequest::Ids(ids) => ids.iter().map(|&id| add(id)).collect(),
    }
}
