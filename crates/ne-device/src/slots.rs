// SPDX-License-Identifier: Apache-2.0
//! The slot table: every enclave's donated memory and vCPUs, its CID and its state.
//!
//! Each command is a method that checks everything first and changes state only once
//! nothing can fail, so a rejected command leaves the table as it was.

use std::collections::BTreeMap;
use std::ops::Range;

use ne_abi::uapi::{
    is_reserved_cid, ENCLAVE_START_MAX_FLAG_VAL, LAST_ENCLAVE_CID, MIN_ENCLAVE_MEM_SIZE,
};
use ne_abi::EnclaveState;

use crate::config::{DeviceConfig, REGION_ALIGN_BYTES};
use crate::error::CmdError;
use crate::hypervisor::{EnclaveSpec, MemRegion, StopReason};

/// The first CID the device assigns when the driver asks for any (CID 0). CIDs 4 to 15 are
/// left for drivers that choose their own.
pub const FIRST_AUTO_CID: u64 = 16;
/// The first slot uid the device hands out.
pub const FIRST_SLOT_UID: u64 = 1;

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Allocated and being set up (`NE_STATE_INIT`).
    Init,
    /// `ENCLAVE_START` accepted; the hypervisor is still booting it. Reported as INIT.
    Starting {
        /// The CID it will have.
        cid: u64,
        /// The start flags.
        flags: u64,
    },
    /// Started (`NE_STATE_RUNNING`).
    Running {
        /// The enclave's CID.
        cid: u64,
        /// The start flags.
        flags: u64,
    },
    /// Stopped by request or by itself (`NE_STATE_STOPPED`); its CID is free again.
    Stopped {
        /// The CID it had.
        cid: u64,
        /// The start flags it had.
        flags: u64,
        /// Why it stopped.
        reason: StopReason,
    },
}

impl SlotState {
    /// The state `SLOT_INFO` reports.
    pub fn wire(self) -> EnclaveState {
        match self {
            SlotState::Init | SlotState::Starting { .. } => EnclaveState::Init,
            SlotState::Running { .. } => EnclaveState::Running,
            SlotState::Stopped { .. } => EnclaveState::Stopped,
        }
    }

    /// The enclave's CID, once `ENCLAVE_START` chose one.
    pub fn cid(self) -> Option<u64> {
        match self {
            SlotState::Init => None,
            SlotState::Starting { cid, .. }
            | SlotState::Running { cid, .. }
            | SlotState::Stopped { cid, .. } => Some(cid),
        }
    }

    /// The start flags, once `ENCLAVE_START` was accepted.
    pub fn flags(self) -> u64 {
        match self {
            SlotState::Init => 0,
            SlotState::Starting { flags, .. }
            | SlotState::Running { flags, .. }
            | SlotState::Stopped { flags, .. } => flags,
        }
    }

    /// The state in words, for errors and logs.
    pub fn describe(self) -> &'static str {
        match self {
            SlotState::Init => "being set up",
            SlotState::Starting { .. } => "starting",
            SlotState::Running { .. } => "running",
            SlotState::Stopped { .. } => "stopped",
        }
    }

    fn is_live(self) -> bool {
        matches!(self, SlotState::Starting { .. } | SlotState::Running { .. })
    }
}

/// One slot: an enclave being set up, running or stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    uid: u64,
    state: SlotState,
    regions: Vec<MemRegion>,
    /// The regions' ends by their starts, for the overlap check.
    region_ends: BTreeMap<u64, u64>,
    vcpus: Vec<u32>,
    mem_size: u64,
}

impl Slot {
    /// The slot's uid (the driver's `slot_uid`).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The slot's state.
    pub fn state(&self) -> SlotState {
        self.state
    }

    /// The donated memory regions, in arrival order.
    pub fn regions(&self) -> &[MemRegion] {
        &self.regions
    }

    /// The donated parent CPUs, in arrival order.
    pub fn vcpus(&self) -> &[u32] {
        &self.vcpus
    }

    /// The donated memory in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// Whether one of this slot's regions overlaps `start..end`: only the last region that
    /// starts before `end` can (a slot's regions never overlap each other).
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.region_ends
            .range(..end)
            .next_back()
            .is_some_and(|(_, &region_end)| region_end > start)
    }

    /// What the hypervisor needs to start this slot's enclave with `cid` and `flags`.
    pub fn spec(&self, cid: u64, flags: u64) -> EnclaveSpec<'_> {
        EnclaveSpec {
            slot_uid: self.uid,
            cid,
            flags,
            regions: &self.regions,
            vcpus: &self.vcpus,
        }
    }
}

/// Every slot, and indexes of what they hold, so that no region, vCPU or live CID is held
/// twice. Each slot indexes its own regions: an overlap check is one lookup per slot, and
/// freeing a slot drops its index whole instead of removing its regions one by one from a
/// shared one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTable {
    max_slots: usize,
    max_mem_regions: u64,
    max_vcpus_per_slot: u32,
    parent_cpus: u32,
    parent_ram: Vec<Range<u64>>,
    slots: BTreeMap<u64, Slot>,
    vcpu_owners: BTreeMap<u32, u64>,
    live_cids: BTreeMap<u64, u64>,
    next_uid: u64,
    next_cid: u64,
}

impl SlotTable {
    /// An empty table with `config`'s limits and parent resources.
    pub fn new(config: &DeviceConfig) -> Self {
        SlotTable {
            max_slots: config.max_slots,
            max_mem_regions: config.max_mem_regions,
            max_vcpus_per_slot: config.max_vcpus_per_slot,
            parent_cpus: config.parent_cpus,
            parent_ram: config.parent_ram.clone(),
            slots: BTreeMap::new(),
            vcpu_owners: BTreeMap::new(),
            live_cids: BTreeMap::new(),
            next_uid: FIRST_SLOT_UID,
            next_cid: FIRST_AUTO_CID,
        }
    }

    /// The slot with `uid`.
    pub fn get(&self, uid: u64) -> Option<&Slot> {
        self.slots.get(&uid)
    }

    /// Every slot, in uid order.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.values()
    }

    /// How many slots exist.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot exists.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most memory regions one slot accepts.
    pub fn max_mem_regions(&self) -> u64 {
        self.max_mem_regions
    }

    /// The parent's RAM ranges that regions must lie in.
    pub fn parent_ram(&self) -> &[Range<u64>] {
        &self.parent_ram
    }

    /// Replaces the parent's RAM ranges (validated by the caller). Regions already donated
    /// stay as they are.
    pub fn set_parent_ram(&mut self, ranges: Vec<Range<u64>>) {
        self.parent_ram = ranges;
    }

    /// `SLOT_ALLOC`: a new empty slot; its uid is never 0 and never reused.
    pub fn alloc(&mut self) -> Result<u64, CmdError> {
        if self.slots.len() >= self.max_slots {
            return Err(CmdError::TooManySlots {
                limit: self.max_slots,
            });
        }
        let uid = self.next_uid;
        self.next_uid = uid.checked_add(1).unwrap_or(FIRST_SLOT_UID);
        self.slots.insert(
            uid,
            Slot {
                uid,
                state: SlotState::Init,
                regions: Vec::new(),
                region_ends: BTreeMap::new(),
                vcpus: Vec::new(),
                mem_size: 0,
            },
        );
        Ok(uid)
    }

    /// `SLOT_FREE`: forgets a slot that is not starting or running.
    pub fn free(&mut self, uid: u64) -> Result<(), CmdError> {
        let slot = self.slot(uid)?;
        if slot.state.is_live() {
            return Err(wrong_state(slot));
        }
        self.remove(uid);
        Ok(())
    }

    /// `SLOT_ADD_MEM`: donates `paddr..paddr + size` to a slot being set up.
    pub fn add_mem(&mut self, uid: u64, paddr: u64, size: u64) -> Result<(), CmdError> {
        let slot = self.slot_in_init(uid)?;
        let region = MemRegion { paddr, size };
        let aligned =
            paddr.is_multiple_of(REGION_ALIGN_BYTES) && size.is_multiple_of(REGION_ALIGN_BYTES);
        if size == 0 || !aligned {
            return Err(CmdError::RegionUnaligned { paddr, size });
        }
        let end = paddr
            .checked_add(size)
            .ok_or(CmdError::RegionOutsideRam { paddr, size })?;
        if !self
            .parent_ram
            .iter()
            .any(|ram| ram.start <= paddr && end <= ram.end)
        {
            return Err(CmdError::RegionOutsideRam { paddr, size });
        }
        if let Some(owner) = self.region_overlapping(paddr, end) {
            return Err(CmdError::RegionOverlap { paddr, size, owner });
        }
        if slot.regions.len() as u64 >= self.max_mem_regions {
            return Err(CmdError::TooManyRegions {
                limit: self.max_mem_regions,
            });
        }
        let slot = self.slot_mut(uid)?;
        slot.region_ends.insert(paddr, end);
        slot.regions.push(region);
        slot.mem_size = slot.mem_size.saturating_add(size);
        Ok(())
    }

    /// `SLOT_ADD_VCPU`: donates parent CPU `vcpu` to a slot being set up.
    pub fn add_vcpu(&mut self, uid: u64, vcpu: u32) -> Result<(), CmdError> {
        let slot = self.slot_in_init(uid)?;
        if vcpu >= self.parent_cpus {
            return Err(CmdError::VcpuOutOfRange {
                vcpu,
                cpus: self.parent_cpus,
            });
        }
        if vcpu == 0 {
            return Err(CmdError::VcpuBootCpu);
        }
        if let Some(&owner) = self.vcpu_owners.get(&vcpu) {
            return Err(CmdError::VcpuInUse { vcpu, owner });
        }
        self.check_vcpu_room(slot, 1)?;
        self.give_vcpus(uid, &[vcpu])
    }

    /// `SLOT_ADD_BULK_VCPUS`: donates the `count` lowest-numbered free parent CPUs (never
    /// CPU 0), returning them.
    pub fn add_bulk_vcpus(&mut self, uid: u64, count: u64) -> Result<Vec<u32>, CmdError> {
        let slot = self.slot_in_init(uid)?;
        if count == 0 {
            return Err(CmdError::BulkZeroVcpus);
        }
        self.check_vcpu_room(slot, count)?;
        let picked: Vec<u32> = (1..self.parent_cpus)
            .filter(|cpu| !self.vcpu_owners.contains_key(cpu))
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect();
        if (picked.len() as u64) < count {
            return Err(CmdError::NotEnoughFreeVcpus {
                wanted: count,
                free: picked.len() as u64,
            });
        }
        self.give_vcpus(uid, &picked)?;
        Ok(picked)
    }

    /// The checks of `ENCLAVE_START`, in the Linux driver's order, and the CID the enclave
    /// gets. Changes nothing: see [`SlotTable::mark_starting`].
    pub fn check_start(&self, uid: u64, cid: u64, flags: u64) -> Result<u64, CmdError> {
        self.check_startable(uid, cid, flags)?;
        if cid == 0 {
            return self.pick_cid();
        }
        self.check_cid_free(cid).map(|()| cid)
    }

    /// `ENCLAVE_START`'s checks of the slot, the flags and the CID's range: all but whether
    /// the CID is free.
    fn check_startable(&self, uid: u64, cid: u64, flags: u64) -> Result<(), CmdError> {
        let slot = self.slot(uid)?;
        if flags >= ENCLAVE_START_MAX_FLAG_VAL {
            return Err(CmdError::InvalidFlags { flags });
        }
        if is_reserved_cid(cid) {
            return Err(CmdError::CidReserved { cid });
        }
        if slot.state != SlotState::Init {
            return Err(wrong_state(slot));
        }
        if slot.regions.is_empty() {
            return Err(CmdError::NoMemory { slot_uid: uid });
        }
        if slot.mem_size < MIN_ENCLAVE_MEM_SIZE {
            return Err(CmdError::MemoryBelowMinimum {
                mem_size: slot.mem_size,
            });
        }
        if slot.vcpus.is_empty() {
            return Err(CmdError::NoVcpus { slot_uid: uid });
        }
        Ok(())
    }

    /// Whether no live enclave holds `cid`.
    fn check_cid_free(&self, cid: u64) -> Result<(), CmdError> {
        match self.live_cids.get(&cid) {
            Some(&owner) => Err(CmdError::CidInUse { cid, owner }),
            None => Ok(()),
        }
    }

    /// Records that the enclave of `uid` is starting with `cid` (from
    /// [`SlotTable::check_start`]).
    pub fn mark_starting(&mut self, uid: u64, cid: u64, flags: u64) -> Result<(), CmdError> {
        self.slot_mut(uid)?.state = SlotState::Starting { cid, flags };
        self.live_cids.insert(cid, uid);
        if cid >= self.next_cid {
            self.next_cid = auto_cid_after(cid);
        }
        Ok(())
    }

    /// A starting enclave now runs.
    pub fn mark_running(&mut self, uid: u64) -> Result<(), CmdError> {
        let slot = self.slot_mut(uid)?;
        if let SlotState::Starting { cid, flags } = slot.state {
            slot.state = SlotState::Running { cid, flags };
        }
        Ok(())
    }

    /// A starting enclave failed to start: the slot is being set up again.
    pub fn abort_start(&mut self, uid: u64) {
        if let Some(slot) = self.slots.get_mut(&uid) {
            if let SlotState::Starting { cid, .. } = slot.state {
                slot.state = SlotState::Init;
                self.live_cids.remove(&cid);
            }
        }
    }

    /// `ENCLAVE_STOP`'s checks: whether the slot's enclave runs (true) or already stopped
    /// (false, nothing to do). Changes nothing.
    pub fn check_stop(&self, uid: u64) -> Result<bool, CmdError> {
        let slot = self.slot(uid)?;
        match slot.state {
            SlotState::Running { .. } => Ok(true),
            SlotState::Stopped { .. } => Ok(false),
            SlotState::Init => Err(CmdError::NotStarted { slot_uid: uid }),
            SlotState::Starting { .. } => Err(wrong_state(slot)),
        }
    }

    /// Marks a running enclave stopped for `reason`, freeing its CID; false if it was not
    /// running (then nothing changes).
    pub fn mark_stopped(&mut self, uid: u64, reason: StopReason) -> bool {
        let Some(slot) = self.slots.get_mut(&uid) else {
            return false;
        };
        let SlotState::Running { cid, flags } = slot.state else {
            return false;
        };
        slot.state = SlotState::Stopped { cid, flags, reason };
        self.live_cids.remove(&cid);
        true
    }

    /// The running enclave with `cid`.
    pub fn by_cid(&self, cid: u64) -> Result<&Slot, CmdError> {
        self.live_cids
            .get(&cid)
            .and_then(|uid| self.slots.get(uid))
            .filter(|slot| matches!(slot.state, SlotState::Running { .. }))
            .ok_or(CmdError::NoSuchEnclave { cid })
    }

    /// The slot with the smallest uid above `after` (0 gives the first slot).
    pub fn next_after(&self, after: u64) -> Result<&Slot, CmdError> {
        let next = after.checked_add(1).ok_or(CmdError::NoNextSlot { after })?;
        self.slots
            .range(next..)
            .next()
            .map(|(_, slot)| slot)
            .ok_or(CmdError::NoNextSlot { after })
    }

    /// Forgets every slot; returns the uids whose enclaves were starting or running.
    pub fn clear(&mut self) -> Vec<u64> {
        let live = self
            .slots
            .values()
            .filter(|slot| slot.state.is_live())
            .map(|slot| slot.uid)
            .collect();
        self.slots.clear();
        self.vcpu_owners.clear();
        self.live_cids.clear();
        live
    }

    /// The uid the next `SLOT_ALLOC` hands out.
    pub fn next_uid(&self) -> u64 {
        self.next_uid
    }

    /// Where the search for an automatic CID starts.
    pub fn next_auto_cid(&self) -> u64 {
        self.next_cid
    }

    /// Adds a saved slot through the checks its commands made: the slot limit, each
    /// region (alignment, parent RAM, overlap, limit), each vCPU (range, owner, limit),
    /// and for a started enclave the start checks and a CID no live enclave has.
    pub(crate) fn restore_slot(
        &mut self,
        record: &crate::state::SlotRecord,
    ) -> Result<(), CmdError> {
        self.next_uid = record.uid;
        let uid = self.alloc()?;
        for region in &record.regions {
            self.add_mem(uid, region.paddr, region.size)?;
        }
        for &vcpu in &record.vcpus {
            self.add_vcpu(uid, vcpu)?;
        }
        let (cid, flags) = match record.state {
            SlotState::Init => return Ok(()),
            SlotState::Starting { cid, flags }
            | SlotState::Running { cid, flags }
            | SlotState::Stopped { cid, flags, .. } => (cid, flags),
        };
        if cid == 0 {
            return Err(CmdError::CidReserved { cid });
        }
        self.check_startable(uid, cid, flags)?;
        if let SlotState::Stopped { .. } = record.state {
            // A stopped enclave's CID is free: a live enclave may hold it now.
            self.slot_mut(uid)?.state = record.state;
            return Ok(());
        }
        self.check_cid_free(cid)?;
        self.mark_starting(uid, cid, flags)?;
        if let SlotState::Running { .. } = record.state {
            self.mark_running(uid)?;
        }
        Ok(())
    }

    /// Sets the uid and CID counters of a restored table; false if they contradict it (a
    /// uid not above every slot's, a CID outside the automatic range).
    pub(crate) fn set_counters(&mut self, next_uid: u64, next_cid: u64) -> bool {
        let above = self
            .slots
            .keys()
            .next_back()
            .is_none_or(|&last| next_uid > last);
        let cid_ok = (FIRST_AUTO_CID..=LAST_ENCLAVE_CID).contains(&next_cid);
        if !above || next_uid == 0 || !cid_ok {
            return false;
        }
        self.next_uid = next_uid;
        self.next_cid = next_cid;
        true
    }

    /// The slot with `uid`.
    pub fn slot(&self, uid: u64) -> Result<&Slot, CmdError> {
        self.slots
            .get(&uid)
            .ok_or(CmdError::NoSuchSlot { slot_uid: uid })
    }

    fn slot_mut(&mut self, uid: u64) -> Result<&mut Slot, CmdError> {
        self.slots
            .get_mut(&uid)
            .ok_or(CmdError::NoSuchSlot { slot_uid: uid })
    }

    fn slot_in_init(&self, uid: u64) -> Result<&Slot, CmdError> {
        let slot = self.slot(uid)?;
        if slot.state == SlotState::Init {
            Ok(slot)
        } else {
            Err(wrong_state(slot))
        }
    }

    fn check_vcpu_room(&self, slot: &Slot, more: u64) -> Result<(), CmdError> {
        let total = (slot.vcpus.len() as u64).saturating_add(more);
        if total > u64::from(self.max_vcpus_per_slot) {
            return Err(CmdError::TooManyVcpus {
                limit: self.max_vcpus_per_slot,
            });
        }
        Ok(())
    }

    fn give_vcpus(&mut self, uid: u64, vcpus: &[u32]) -> Result<(), CmdError> {
        self.slot_mut(uid)?.vcpus.extend_from_slice(vcpus);
        self.vcpu_owners
            .extend(vcpus.iter().map(|&vcpu| (vcpu, uid)));
        Ok(())
    }

    /// The owner of a donated region that overlaps `start..end`.
    fn region_overlapping(&self, start: u64, end: u64) -> Option<u64> {
        self.slots
            .values()
            .find(|slot| slot.overlaps(start, end))
            .map(|slot| slot.uid)
    }

    fn pick_cid(&self) -> Result<u64, CmdError> {
        // Live CIDs are at most `max_slots`, so a free one is found within that many + 1
        // steps; the bound guards against a table that is somehow full.
        let mut cid = self.next_cid;
        for _ in 0..=self.live_cids.len() {
            if !self.live_cids.contains_key(&cid) {
                return Ok(cid);
            }
            cid = auto_cid_after(cid);
        }
        Err(CmdError::CidsExhausted)
    }

    fn remove(&mut self, uid: u64) {
        let Some(slot) = self.slots.remove(&uid) else {
            return;
        };
        for vcpu in &slot.vcpus {
            self.vcpu_owners.remove(vcpu);
        }
        if let Some(cid) = slot.state.cid() {
            if self.live_cids.get(&cid) == Some(&uid) {
                self.live_cids.remove(&cid);
            }
        }
    }
}

fn wrong_state(slot: &Slot) -> CmdError {
    CmdError::WrongState {
        slot_uid: slot.uid,
        state: slot.state.describe(),
    }
}

/// The automatic CID tried after `cid`: the next one, wrapping from the last enclave CID
/// back to [`FIRST_AUTO_CID`].
fn auto_cid_after(cid: u64) -> u64 {
    if cid >= LAST_ENCLAVE_CID {
        FIRST_AUTO_CID
    } else {
        cid + 1
    }
}
