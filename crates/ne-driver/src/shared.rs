// SPDX-License-Identifier: Apache-2.0
//! What a probed device and its enclaves share: the transport (`pci_dev_mutex`), the
//! enclave list, the CPU pool, and each enclave's record (`struct ne_enclave`) with the wait
//! queue its poll sleeps on. The event work (`ne_event_work_handler`) runs over it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use ne_abi::{EnclaveState, NeError, SlotAllocReq, SlotInfoReq};
use zerocopy::little_endian::U64;

use crate::bar::{Bar, Vectors};
use crate::cpu_pool::{CpuPool, Topology};
use crate::enclave::Enclave;
use crate::error::Result;
use crate::transport::Transport;

/// Locks a mutex, keeping its data if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the device and its enclaves share. Lock order: enclave list, then an enclave, then
/// the pool, then the transport (as in Linux: list mutex, enclave mutex, pci_dev_mutex).
pub(crate) struct Shared<B: Bar> {
    pub(crate) transport: Mutex<Transport<B>>,
    pub(crate) enclaves: Mutex<Vec<Arc<EnclaveCell>>>,
    pub(crate) pool: Mutex<Option<CpuPool>>,
    pub(crate) topology: Topology,
    pub(crate) vectors: Arc<Vectors>,
    pub(crate) removed: AtomicBool,
}

impl<B: Bar> Shared<B> {
    /// `NE_CREATE_VM` (`ne_create_vm_ioctl`): a new enclave in INIT state. Fails with
    /// `NE_ERR_NO_CPUS_AVAIL_IN_POOL`, without a command, when no pool core is free.
    pub(crate) fn create_vm(self: &Arc<Self>) -> Result<Enclave<B>> {
        let mut enclaves = lock(&self.enclaves);
        let pool = lock(&self.pool)
            .as_ref()
            .filter(|pool| pool.has_free_core())
            .cloned()
            .ok_or(NeError::NoCpusAvailInPool)?;
        let reply = lock(&self.transport).request(&SlotAllocReq::default())?;
        let cell = Arc::new(EnclaveCell::new(
            reply.slot_uid.get(),
            reply.mem_regions.get(),
            &pool,
        ));
        enclaves.insert(0, Arc::clone(&cell));
        Ok(Enclave::new(Arc::clone(self), cell))
    }

    /// `ne_event_work_handler`: `SLOT_INFO` for every running enclave, newest first; a
    /// changed state is copied, flagged as an event and its waiters woken.
    ///
    /// Knowingly unlike Linux: a failed `SLOT_INFO` leaves the enclave as it was, where
    /// Linux would copy a stale or zero state from its reused reply buffer.
    pub(crate) fn handle_event(&self) {
        let enclaves = lock(&self.enclaves);
        for cell in enclaves.iter() {
            let mut enclave = lock(&cell.inner);
            if enclave.state != EnclaveState::Running.value() {
                continue;
            }
            let req = SlotInfoReq {
                slot_uid: U64::new(enclave.slot_uid),
            };
            let Ok(reply) = lock(&self.transport).request(&req) else {
                continue;
            };
            if reply.state.get() != enclave.state {
                enclave.state = reply.state.get();
                enclave.has_event = true;
                cell.event.notify_all();
            }
        }
    }
}

/// What the driver keeps about one enclave (`struct ne_enclave`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnclaveInner {
    pub(crate) slot_uid: u64,
    pub(crate) state: u16,
    pub(crate) max_mem_regions: u64,
    pub(crate) nr_mem_regions: u64,
    pub(crate) mem_size: u64,
    pub(crate) vcpu_ids: BTreeSet<u32>,
    pub(crate) cores: BTreeMap<u32, BTreeSet<u32>>,
    pub(crate) numa_node: u32,
    pub(crate) parent_cores: u32,
    pub(crate) threads_per_core: u32,
    pub(crate) user_regions: BTreeMap<u64, u64>,
    pub(crate) has_event: bool,
    pub(crate) cid: u64,
    pub(crate) flags: u64,
    /// The fd was closed (released), whether or not the device accepted it.
    pub(crate) closed: bool,
}

/// An enclave's record and the wait queue its poll sleeps on.
#[derive(Debug)]
pub(crate) struct EnclaveCell {
    pub(crate) inner: Mutex<EnclaveInner>,
    pub(crate) event: Condvar,
}

impl EnclaveCell {
    pub(crate) fn new(slot_uid: u64, max_mem_regions: u64, pool: &CpuPool) -> Self {
        EnclaveCell {
            inner: Mutex::new(EnclaveInner {
                slot_uid,
                state: EnclaveState::Init.value(),
                max_mem_regions,
                nr_mem_regions: 0,
                mem_size: 0,
                vcpu_ids: BTreeSet::new(),
                cores: BTreeMap::new(),
                numa_node: pool.numa_node,
                parent_cores: pool.parent_cores,
                threads_per_core: pool.threads_per_core,
                user_regions: BTreeMap::new(),
                has_event: false,
                cid: 0,
                flags: 0,
                closed: false,
            }),
            event: Condvar::new(),
        }
    }
}
