// SPDX-License-Identifier: Apache-2.0
//! [`Enclave`]: one enclave being set up or running, the equivalent of the enclave fd,
//! with the validation order and `NE_ERR_*` codes of `ne_misc_dev.c`.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use ne_abi::uapi::{
    is_reserved_cid, EIF_IMAGE, EIF_LOAD_OFFSET, ENCLAVE_START_MAX_FLAG_VAL,
    IMAGE_LOAD_MAX_FLAG_VAL, MEMORY_REGION_MAX_FLAG_VAL, MIN_ENCLAVE_MEM_SIZE, MIN_MEM_REGION_SIZE,
};
use ne_abi::{
    EnclaveStartReq, EnclaveState, EnclaveStopReq, NeError, NeUserMemoryRegion, SlotAddMemReq,
    SlotAddVcpuReq, SlotFreeReq,
};
use zerocopy::little_endian::{U32, U64};

use crate::bar::Bar;
use crate::cpu_pool::CpuPool;
use crate::error::Result;
use crate::memory::{walk_region, UserMemory};
use crate::shared::{lock, EnclaveCell, EnclaveInner, Shared};

/// A snapshot of an enclave, for describing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveInfo {
    /// The device's slot uid.
    pub slot_uid: u64,
    /// The state as the driver knows it (`NE_STATE_*`).
    pub state: u16,
    /// The CID, once started.
    pub cid: u64,
    /// The start flags, once started.
    pub flags: u64,
    /// Memory added, in bytes.
    pub mem_size: u64,
    /// `SLOT_ADD_MEM` commands sent.
    pub nr_mem_regions: u64,
    /// The vCPUs added, in CPU order.
    pub vcpus: Vec<u32>,
}

/// One enclave: the equivalent of the fd `NE_CREATE_VM` returns. Dropping it releases the
/// enclave as closing the fd does: `ENCLAVE_STOP` unless it is INIT or STOPPED, then
/// `SLOT_FREE`, then its cores go back to the pool.
pub struct Enclave<B: Bar + 'static> {
    shared: Arc<Shared<B>>,
    cell: Arc<EnclaveCell>,
}

impl<B: Bar + 'static> std::fmt::Debug for Enclave<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("info", &self.info())
            .finish()
    }
}

fn check_flags(flags: u64, max: u64) -> Result<()> {
    if flags >= max {
        return Err(NeError::InvalidFlagValue.into());
    }
    Ok(())
}

impl<B: Bar + 'static> Enclave<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>, cell: Arc<EnclaveCell>) -> Self {
        Enclave { shared, cell }
    }

    /// The device's slot uid.
    pub fn slot_uid(&self) -> u64 {
        lock(&self.cell.inner).slot_uid
    }

    /// A snapshot of the enclave.
    pub fn info(&self) -> EnclaveInfo {
        let inner = lock(&self.cell.inner);
        EnclaveInfo {
            slot_uid: inner.slot_uid,
            state: inner.state,
            cid: inner.cid,
            flags: inner.flags,
            mem_size: inner.mem_size,
            nr_mem_regions: inner.nr_mem_regions,
            vcpus: inner.vcpu_ids.iter().copied().collect(),
        }
    }

    /// `NE_ADD_VCPU`: adds parent CPU `vcpu_id`, or (0) picks one from the pool, and returns
    /// it. Checks, in order: INIT state, id within the parent's CPUs, then the pool (a core
    /// is claimed whole, and stays claimed even if the device refuses the vCPU, as in Linux).
    pub fn add_vcpu(&self, vcpu_id: u32) -> Result<u32> {
        let mut inner = lock(&self.cell.inner);
        if inner.state != EnclaveState::Init.value() {
            return Err(NeError::NotInInitState.into());
        }
        if u64::from(vcpu_id) >= u64::from(inner.parent_cores) * u64::from(inner.threads_per_core) {
            return Err(NeError::InvalidVcpu.into());
        }
        let vcpu = {
            let mut pool = lock(&self.shared.pool);
            let pool = pool.as_mut().ok_or(NeError::NoCpusAvailInPool)?;
            if vcpu_id == 0 {
                pick_vcpu(&mut inner, pool)?
            } else {
                claim_vcpu(&mut inner, pool, vcpu_id)?
            }
        };
        let req = SlotAddVcpuReq {
            slot_uid: U64::new(inner.slot_uid),
            vcpu_id: U32::new(vcpu),
            padding: [0; 4],
        };
        lock(&self.shared.transport).request(&req)?;
        inner.vcpu_ids.insert(vcpu);
        Ok(vcpu)
    }

    /// `NE_GET_IMAGE_LOAD_INFO`: where the EIF goes in enclave memory (8 MiB). No command.
    pub fn image_load_info(&self, flags: u64) -> Result<u64> {
        let inner = lock(&self.cell.inner);
        if inner.state != EnclaveState::Init.value() {
            return Err(NeError::NotInInitState.into());
        }
        if flags != EIF_IMAGE || flags >= IMAGE_LOAD_MAX_FLAG_VAL {
            return Err(NeError::InvalidFlagValue.into());
        }
        Ok(EIF_LOAD_OFFSET)
    }

    /// `NE_SET_USER_MEMORY_REGION`: adds `region` of `memory` (the caller's address space),
    /// one `SLOT_ADD_MEM` per physically contiguous run of its hugepages. Checks, in order:
    /// flags, INIT state, size and address alignment, `access_ok`, overlap with this
    /// enclave's regions, each page (hugetlbfs, 2 MiB multiple, NUMA node, physical
    /// alignment), then the region limit. A command that fails leaves earlier runs counted.
    pub fn set_user_memory_region(
        &self,
        region: NeUserMemoryRegion,
        memory: &dyn UserMemory,
    ) -> Result<()> {
        check_flags(region.flags, MEMORY_REGION_MAX_FLAG_VAL)?;
        let mut inner = lock(&self.cell.inner);
        if inner.state != EnclaveState::Init.value() {
            return Err(NeError::NotInInitState.into());
        }
        let (addr, size) = (region.userspace_addr, region.memory_size);
        if size % MIN_MEM_REGION_SIZE != 0 {
            return Err(NeError::InvalidMemRegionSize.into());
        }
        if addr % MIN_MEM_REGION_SIZE != 0 {
            return Err(NeError::UnalignedMemRegionAddr.into());
        }
        let end = addr
            .checked_add(size)
            .ok_or(NeError::InvalidMemRegionAddr)?;
        if !memory.access_ok(addr, size) {
            return Err(NeError::InvalidMemRegionAddr.into());
        }
        // The regions never overlap one another, so only the last one starting before
        // `end` can overlap [addr, end): one lookup, not a walk of every region.
        if inner
            .user_regions
            .range(..end)
            .next_back()
            .is_some_and(|(_, &stop)| stop > addr)
        {
            return Err(NeError::MemRegionAlreadyUsed.into());
        }
        let runs = walk_region(memory, addr, size, inner.numa_node)?;
        if inner.nr_mem_regions + runs.len() as u64 > inner.max_mem_regions {
            return Err(NeError::MemMaxRegions.into());
        }
        inner.user_regions.insert(addr, end);
        for run in runs {
            let req = SlotAddMemReq {
                slot_uid: U64::new(inner.slot_uid),
                paddr: U64::new(run.paddr),
                size: U64::new(run.size),
            };
            lock(&self.shared.transport).request(&req)?;
            inner.mem_size += run.size;
            inner.nr_mem_regions += 1;
        }
        Ok(())
    }

    /// `NE_START_ENCLAVE`: starts the enclave with `flags` and `cid` (0: any) and returns
    /// the CID it got. Checks, in order: flags, CID (1, 2, 3, `u32::MAX` and wider are
    /// refused), INIT state, memory added, 64 MiB, vCPUs added, full cores.
    pub fn start(&self, flags: u64, cid: u64) -> Result<u64> {
        check_flags(flags, ENCLAVE_START_MAX_FLAG_VAL)?;
        if is_reserved_cid(cid) {
            return Err(NeError::InvalidEnclaveCid.into());
        }
        let mut inner = lock(&self.cell.inner);
        if inner.state != EnclaveState::Init.value() {
            return Err(NeError::NotInInitState.into());
        }
        if inner.nr_mem_regions == 0 {
            return Err(NeError::NoMemRegionsAdded.into());
        }
        if inner.mem_size < MIN_ENCLAVE_MEM_SIZE {
            return Err(NeError::EnclaveMemMinSize.into());
        }
        if inner.vcpu_ids.is_empty() {
            return Err(NeError::NoVcpusAdded.into());
        }
        let partial = inner
            .cores
            .values()
            .any(|threads| !threads.is_subset(&inner.vcpu_ids));
        if partial {
            return Err(NeError::FullCoresNotUsed.into());
        }
        let req = EnclaveStartReq {
            slot_uid: U64::new(inner.slot_uid),
            enclave_cid: U64::new(cid),
            flags: U64::new(flags),
        };
        let reply = lock(&self.shared.transport).request(&req)?;
        inner.state = EnclaveState::Running.value();
        inner.cid = reply.enclave_cid.get();
        inner.flags = flags;
        Ok(inner.cid)
    }

    /// Whether an event (the enclave stopped by itself) has been seen: poll's `EPOLLHUP`.
    /// Sticky, as in Linux.
    pub fn has_event(&self) -> bool {
        lock(&self.cell.inner).has_event
    }

    /// Waits up to `timeout` for an event, as `poll` on the enclave fd does; true on
    /// `EPOLLHUP`.
    pub fn wait_event(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = lock(&self.cell.inner);
        while !inner.has_event {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            inner = self
                .cell
                .event
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        inner.has_event
    }

    /// Releases the enclave now (what dropping it does), reporting a failure: the device
    /// refused `ENCLAVE_STOP` or `SLOT_FREE`. As in Linux, a failed release leaves the
    /// enclave's resources held.
    pub fn release(self) -> Result<()> {
        self.release_now()
    }

    /// Closes the enclave once: a refused close is not tried again (on drop), as an fd is
    /// closed only once.
    fn release_now(&self) -> Result<()> {
        let mut enclaves = lock(&self.shared.enclaves);
        let mut inner = lock(&self.cell.inner);
        if inner.closed || inner.slot_uid == 0 {
            return Ok(());
        }
        inner.closed = true;
        let stopped = [EnclaveState::Init.value(), EnclaveState::Stopped.value()];
        let slot_uid = U64::new(inner.slot_uid);
        if !stopped.contains(&inner.state) {
            lock(&self.shared.transport).request(&EnclaveStopReq { slot_uid })?;
        }
        lock(&self.shared.transport).request(&SlotFreeReq { slot_uid })?;
        enclaves.retain(|cell| !Arc::ptr_eq(cell, &self.cell));
        if let Some(pool) = lock(&self.shared.pool).as_mut() {
            pool.give_back(&inner.cores);
        }
        inner.cores.clear();
        Ok(())
    }
}

impl<B: Bar + 'static> Drop for Enclave<B> {
    fn drop(&mut self) {
        // Closing an fd cannot report failure; Linux ignores it too.
        let _ = self.release_now();
    }
}

/// Auto vCPU: the lowest unused thread of a core this enclave already claimed, else the
/// lowest thread of the lowest pool core with free threads, claimed whole.
fn pick_vcpu(inner: &mut EnclaveInner, pool: &mut CpuPool) -> Result<u32> {
    let unused = inner
        .cores
        .values()
        .flatten()
        .find(|cpu| !inner.vcpu_ids.contains(cpu))
        .copied();
    if let Some(cpu) = unused {
        return Ok(cpu);
    }
    let (core, threads) = pool.claim_any_core().ok_or(NeError::NoCpusAvailInPool)?;
    let cpu = threads.first().copied().ok_or(NeError::NoCpusAvailInPool)?;
    inner.cores.insert(core, threads);
    Ok(cpu)
}

/// Explicit vCPU: not already used, then a thread of a claimed core, else the pool core
/// holding it is claimed whole.
fn claim_vcpu(inner: &mut EnclaveInner, pool: &mut CpuPool, vcpu: u32) -> Result<u32> {
    if inner.vcpu_ids.contains(&vcpu) {
        return Err(NeError::VcpuAlreadyUsed.into());
    }
    if inner.cores.values().any(|threads| threads.contains(&vcpu)) {
        return Ok(vcpu);
    }
    let core = pool.core_of(vcpu).ok_or(NeError::VcpuNotInCpuPool)?;
    if core >= inner.parent_cores {
        return Err(NeError::VcpuInvalidCpuCore.into());
    }
    let (core, threads) = pool.claim_core(core).ok_or(NeError::VcpuNotInCpuPool)?;
    inner.cores.insert(core, threads);
    Ok(vcpu)
}
