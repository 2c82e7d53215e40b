// SPDX-License-Identifier: Apache-2.0
//! What starting and stopping an enclave means: the [`Hypervisor`] trait, and a simulated
//! backend that starts enclaves at once (or when told) and can make them exit or crash.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::error::errno;

/// One memory region donated to a slot: guest-physical memory of the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemRegion {
    /// The region's start in the parent's guest-physical address space.
    pub paddr: u64,
    /// The region's size in bytes.
    pub size: u64,
}

impl MemRegion {
    /// One past the region's last byte (the caller has checked that it does not wrap).
    pub fn end(&self) -> u64 {
        self.paddr.saturating_add(self.size)
    }
}

/// Everything the hypervisor needs to start an enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclaveSpec<'a> {
    /// The slot the enclave lives in.
    pub slot_uid: u64,
    /// The enclave's vsock CID (already chosen and unique).
    pub cid: u64,
    /// The start flags: 0 production, [`ne_abi::uapi::ENCLAVE_DEBUG_MODE`] debug.
    pub flags: u64,
    /// The donated memory, in the order it was added: the enclave's memory is their
    /// concatenation (the EIF sits at 8 MiB of it).
    pub regions: &'a [MemRegion],
    /// The donated parent CPUs, in the order they were added.
    pub vcpus: &'a [u32],
}

impl EnclaveSpec<'_> {
    /// The enclave's memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |sum, region| sum.saturating_add(region.size))
    }

    /// Whether the enclave starts in debug mode.
    pub fn is_debug(&self) -> bool {
        self.flags & ne_abi::uapi::ENCLAVE_DEBUG_MODE != 0
    }
}

/// How far a start got by the time [`Hypervisor::start`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartProgress {
    /// The enclave runs: the device replies at once.
    Started,
    /// The enclave is booting: the device holds its reply until the backend reports
    /// [`HypervisorEvent::StartCompleted`].
    InProgress,
}

/// Why the hypervisor would not (or could not) start an enclave.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct StartRefused {
    /// The errno the device answers `ENCLAVE_START` with (positive).
    pub errno: i32,
    /// What went wrong, for the log and the host's user.
    pub reason: String,
}

/// Why a started enclave stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The driver sent `ENCLAVE_STOP`.
    Requested,
    /// The enclave shut down by itself.
    Exited,
    /// The enclave crashed.
    Crashed,
}

/// Something the hypervisor reports after the fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HypervisorEvent {
    /// A start that returned [`StartProgress::InProgress`] finished.
    StartCompleted {
        /// The slot whose enclave was starting.
        slot_uid: u64,
        /// Whether it runs now.
        result: Result<(), StartRefused>,
    },
    /// A running enclave stopped by itself.
    Stopped {
        /// The slot whose enclave stopped.
        slot_uid: u64,
        /// Exited or crashed.
        reason: StopReason,
    },
}

/// What starting and stopping an enclave means to the host.
///
/// The device calls `start` for a slot that passed every check of `ENCLAVE_START`, and
/// `stop` for `ENCLAVE_STOP` and for every started slot when the driver disables the
/// device. Later news (a finished start, an exit, a crash) is queued by the backend and
/// collected by [`crate::NePciDevice::process_hypervisor_events`].
pub trait Hypervisor {
    /// Starts the enclave `enclave` describes.
    fn start(&mut self, enclave: &EnclaveSpec<'_>) -> Result<StartProgress, StartRefused>;

    /// Stops the enclave of `slot_uid` (running or still starting) and forgets it.
    fn stop(&mut self, slot_uid: u64);

    /// The next queued event, if any.
    fn poll_event(&mut self) -> Option<HypervisorEvent>;
}

/// An enclave the simulated backend runs: what it was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedEnclave {
    /// The enclave's CID.
    pub cid: u64,
    /// The start flags.
    pub flags: u64,
    /// The donated memory, in order.
    pub regions: Vec<MemRegion>,
    /// The donated CPUs, in order.
    pub vcpus: Vec<u32>,
    /// Whether the start is still in progress (deferred mode).
    pub starting: bool,
}

/// A backend that runs nothing: enclaves start at once (or, deferred, when told to), and
/// exit or crash when told to. For tests and the embedded default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulatedHypervisor {
    deferred: bool,
    refusal: Option<StartRefused>,
    enclaves: BTreeMap<u64, SimulatedEnclave>,
    events: VecDeque<HypervisorEvent>,
}

impl SimulatedHypervisor {
    /// A backend whose enclaves start at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend whose starts stay in progress until [`SimulatedHypervisor::complete_start`].
    pub fn deferred() -> Self {
        SimulatedHypervisor {
            deferred: true,
            ..Self::default()
        }
    }

    /// Makes the next start fail with `errno` and `reason`.
    pub fn refuse_next_start(&mut self, errno: i32, reason: &str) {
        self.refusal = Some(StartRefused {
            errno,
            reason: reason.to_owned(),
        });
    }

    /// Finishes the deferred start of `slot_uid` with `result`; false if it was not starting.
    pub fn complete_start(&mut self, slot_uid: u64, result: Result<(), StartRefused>) -> bool {
        let Some(enclave) = self.enclaves.get_mut(&slot_uid) else {
            return false;
        };
        if !enclave.starting {
            return false;
        }
        if result.is_ok() {
            enclave.starting = false;
        } else {
            self.enclaves.remove(&slot_uid);
        }
        self.events
            .push_back(HypervisorEvent::StartCompleted { slot_uid, result });
        true
    }

    /// Makes the running enclave of `slot_uid` exit by itself; false if none runs there.
    pub fn exit(&mut self, slot_uid: u64) -> bool {
        self.end(slot_uid, StopReason::Exited)
    }

    /// Makes the running enclave of `slot_uid` crash; false if none runs there.
    pub fn crash(&mut self, slot_uid: u64) -> bool {
        self.end(slot_uid, StopReason::Crashed)
    }

    /// The enclaves started and not stopped, by slot uid.
    pub fn enclaves(&self) -> &BTreeMap<u64, SimulatedEnclave> {
        &self.enclaves
    }

    fn end(&mut self, slot_uid: u64, reason: StopReason) -> bool {
        let running = self
            .enclaves
            .get(&slot_uid)
            .is_some_and(|enclave| !enclave.starting);
        if running {
            self.enclaves.remove(&slot_uid);
            self.events
                .push_back(HypervisorEvent::Stopped { slot_uid, reason });
        }
        running
    }
}

impl Hypervisor for SimulatedHypervisor {
    fn start(&mut self, enclave: &EnclaveSpec<'_>) -> Result<StartProgress, StartRefused> {
        if let Some(refusal) = self.refusal.take() {
            return Err(refusal);
        }
        if self.enclaves.contains_key(&enclave.slot_uid) {
            return Err(StartRefused {
                errno: errno::EBUSY,
                reason: format!("slot {} already runs an enclave", enclave.slot_uid),
            });
        }
        self.enclaves.insert(
            enclave.slot_uid,
            SimulatedEnclave {
                cid: enclave.cid,
                flags: enclave.flags,
                regions: enclave.regions.to_vec(),
                vcpus: enclave.vcpus.to_vec(),
                starting: self.deferred,
            },
        );
        Ok(if self.deferred {
            StartProgress::InProgress
        } else {
            StartProgress::Started
        })
    }

    fn stop(&mut self, slot_uid: u64) {
        self.enclaves.remove(&slot_uid);
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_spec_s_memory_is_the_sum_of_its_regions_and_debug_is_flag_1() {
        let regions = [
            MemRegion {
                paddr: 0x4000_0000,
                size: 6 << 20,
            },
            MemRegion {
                paddr: 0,
                size: 2 << 20,
            },
        ];
        assert_eq!(regions[0].end(), 0x4000_0000 + (6 << 20));
        let wrapping = MemRegion {
            paddr: u64::MAX - 1,
            size: 4,
        };
        assert_eq!(wrapping.end(), u64::MAX);
        let mut spec = EnclaveSpec {
            slot_uid: 1,
            cid: 16,
            flags: 0,
            regions: &regions,
            vcpus: &[1],
        };
        assert_eq!(spec.mem_size(), 8 << 20);
        assert!(!spec.is_debug());
        spec.flags = ne_abi::uapi::ENCLAVE_DEBUG_MODE;
        assert!(spec.is_debug());
        spec.flags = 2;
        assert!(!spec.is_debug(), "only bit 0 is debug mode");
    }
}
