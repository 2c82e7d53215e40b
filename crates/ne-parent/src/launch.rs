// SPDX-License-Identifier: Apache-2.0
//! Launching an enclave from an EIF the way nitro-cli does through the driver: hugepage
//! memory, the image copied at the offset `NE_GET_IMAGE_LOAD_INFO` gives, one
//! `NE_SET_USER_MEMORY_REGION` per hugepage, vCPUs, then `NE_START_ENCLAVE`.

use std::collections::BTreeSet;

use ne_abi::uapi::{EIF_IMAGE, ENCLAVE_DEBUG_MODE, MIN_ENCLAVE_MEM_SIZE};
use ne_abi::NeUserMemoryRegion;
use thiserror::Error;

use crate::address_space::AddressSpace;
use crate::hugepages::{HUGEPAGE_BYTES, HUGEPAGE_LEN};
use crate::parent::{Parent, ParentEnclave};

const MIB: u64 = 1 << 20;

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
    /// Enclave memory in MiB.
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
}

/// A failed launch: the step, and why.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct LaunchError {
    /// Where it failed.
    pub step: LaunchStep,
    /// What went wrong, for a person.
    pub message: String,
    /// The driver's error, if the driver refused.
    #[source]
    pub driver: Option<ne_driver::Error>,
}

impl LaunchError {
    fn new(step: LaunchStep, message: impl Into<String>) -> Self {
        LaunchError {
            step,
            message: message.into(),
            driver: None,
        }
    }

    fn driver(step: LaunchStep, what: &str, error: ne_driver::Error) -> Self {
        LaunchError {
            step,
            message: format!("{what} failed: {error}"),
            driver: Some(error),
        }
    }
}

/// A launched enclave and the memory it was given. Dropping it terminates the enclave
/// (the driver's release) and frees its hugepages.
#[derive(Debug)]
pub struct Launched {
    /// The enclave. Declared first: it is released before its memory is unmapped.
    pub enclave: ParentEnclave,
    /// The process memory holding its hugepages.
    pub memory: AddressSpace,
    /// Its CPUs, in the order they were added.
    pub cpu_ids: Vec<u32>,
    /// Its memory in MiB.
    pub memory_mib: u64,
    /// Its CID.
    pub cid: u64,
}

/// The least memory nitro-cli accepts for an image: 4 times its size, at least 64 MiB,
/// rounded up to whole hugepages.
pub fn min_memory_mib(eif_len: u64) -> u64 {
    let bytes = (eif_len.saturating_mul(4)).max(MIN_ENCLAVE_MEM_SIZE);
    bytes.div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES / MIB
}

impl CpuRequest {
    /// The ids to pass to `NE_ADD_VCPU`, in order: 0 (any) per CPU counted, or the ids.
    pub fn vcpu_ids(&self) -> Vec<u32> {
        match self {
            CpuRequest::Count(count) => vec![0; usize::try_from(*count).unwrap_or(0)],
            CpuRequest::Ids(ids) => ids.clone(),
        }
    }
}

impl LaunchRequest {
    /// The checks nitro-cli makes before it touches the driver: a CPU request that names
    /// something, and enough memory for the image in whole 2 MiB hugepages.
    pub fn check(&self) -> Result<(), LaunchError> {
        check_cpus(&self.cpus)?;
        let min_mib = min_memory_mib(self.eif.len() as u64);
        if self.memory_mib < min_mib {
            return Err(LaunchError::new(
                LaunchStep::MemoryRequested,
                format!(
                    "{} MiB of memory asked for, but this {}-byte EIF needs at least {min_mib} MiB",
                    self.memory_mib,
                    self.eif.len()
                ),
            ));
        }
        if !self.memory_mib.is_multiple_of(2) {
            return Err(LaunchError::new(
                LaunchStep::MemoryRequested,
                format!(
                    "{} MiB is not a whole number of 2 MiB hugepages",
                    self.memory_mib
                ),
            ));
        }
        Ok(())
    }
}

impl Parent {
    /// Launches an enclave as nitro-cli does, returning it running.
    pub fn launch(&self, request: &LaunchRequest) -> Result<Launched, LaunchError> {
        request.check()?;
        let enclave = self
            .driver()
            .create_vm()
            .map_err(|e| LaunchError::driver(LaunchStep::CreateVm, "NE_CREATE_VM", e))?;
        let node = self.driver().cpu_pool().map_or(0, |pool| pool.numa_node());
        let mut memory = self.address_space();
        let pages = self.map_image(&enclave, &mut memory, request, node)?;
        for page in pages {
            let region = NeUserMemoryRegion {
                flags: 0,
                memory_size: HUGEPAGE_BYTES,
                userspace_addr: page,
            };
            enclave
                .set_user_memory_region(region, &memory)
                .map_err(|e| {
                    LaunchError::driver(LaunchStep::SetMemory, "NE_SET_USER_MEMORY_REGION", e)
                })?;
        }
        let cpu_ids = add_cpus(&enclave, &request.cpus)?;
        let flags = if request.debug { ENCLAVE_DEBUG_MODE } else { 0 };
        let cid = enclave
            .start(flags, request.cid)
            .map_err(|e| LaunchError::driver(LaunchStep::Start, "NE_START_ENCLAVE", e))?;
        Ok(Launched {
            enclave,
            memory,
            cpu_ids,
            memory_mib: request.memory_mib,
            cid,
        })
    }

    /// Maps the enclave's memory one hugepage at a time and copies the image in at the
    /// load offset; returns the pages' addresses in order.
    fn map_image(
        &self,
        enclave: &ParentEnclave,
        memory: &mut AddressSpace,
        request: &LaunchRequest,
        node: u32,
    ) -> Result<Vec<u64>, LaunchError> {
        let count = request.memory_mib * MIB / HUGEPAGE_BYTES;
        let free = self.free_hugepages(node);
        if free < count {
            return Err(LaunchError::new(
                LaunchStep::MemoryAvailable,
                format!(
                    "{} MiB asked for, but only {} MiB of hugepages are free on NUMA node {node}",
                    request.memory_mib,
                    free * HUGEPAGE_BYTES / MIB
                ),
            ));
        }
        let offset = enclave.image_load_info(EIF_IMAGE).map_err(|e| {
            LaunchError::driver(LaunchStep::ImageLoadInfo, "NE_GET_IMAGE_LOAD_INFO", e)
        })?;
        let mut pages = Vec::new();
        for _ in 0..count {
            let page = memory
                .mmap_hugepages(HUGEPAGE_BYTES, node)
                .map_err(|e| LaunchError::new(LaunchStep::MemoryAvailable, e.to_string()))?;
            pages.push(page);
        }
        // Enclave memory is the pages in order; the image starts `offset` bytes in.
        for (index, chunk) in request.eif.chunks(HUGEPAGE_LEN).enumerate() {
            let at = offset + index as u64 * HUGEPAGE_BYTES;
            let page = pages.get(usize::try_from(at / HUGEPAGE_BYTES).unwrap_or(usize::MAX));
            let page = page.ok_or_else(|| {
                LaunchError::new(LaunchStep::MemoryRequested, "the image does not fit")
            })?;
            memory
                .write(page + at % HUGEPAGE_BYTES, chunk)
                .map_err(|e| LaunchError::new(LaunchStep::MemoryAvailable, e.to_string()))?;
        }
        Ok(pages)
    }
}

fn check_cpus(cpus: &CpuRequest) -> Result<(), LaunchError> {
    match cpus {
        CpuRequest::Count(0) => Err(LaunchError::new(
            LaunchStep::Request,
            "--cpu-count must be at least 1",
        )),
        CpuRequest::Ids(ids) if ids.is_empty() => Err(LaunchError::new(
            LaunchStep::Request,
            "--cpu-ids lists no CPU",
        )),
        CpuRequest::Ids(ids) => {
            let mut seen = BTreeSet::new();
            match ids.iter().find(|id| !seen.insert(**id)) {
                Some(id) => Err(LaunchError::new(
                    LaunchStep::Request,
                    format!("CPU {id} is listed twice in --cpu-ids"),
                )),
                None => Ok(()),
            }
        }
        CpuRequest::Count(_) => Ok(()),
    }
}

fn add_cpus(enclave: &ParentEnclave, cpus: &CpuRequest) -> Result<Vec<u32>, LaunchError> {
    cpus.vcpu_ids()
        .into_iter()
        .map(|id| {
            enclave
                .add_vcpu(id)
                .map_err(|e| LaunchError::driver(LaunchStep::AddVcpu, "NE_ADD_VCPU", e))
        })
        .collect()
}
