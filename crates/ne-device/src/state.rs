// SPDX-License-Identifier: Apache-2.0
//! Snapshot and restore of the whole device: [`DeviceState`] is plain data (config space,
//! MSI-X table and pending bits, registers, the command in flight, the slot table), and
//! [`NePciDevice::from_state`] validates every length, count and cross-reference before it
//! rebuilds a device, then re-raises the vectors that were pending.
//!
//! The hypervisor backend is not part of the device's state: whoever restores a device
//! restores (or restarts) its enclaves too.

use std::ops::Range;

use ne_abi::{regs, CmdReply};
use thiserror::Error;
use zerocopy::FromBytes;

use crate::config::{ConfigError, DeviceConfig};
use crate::config_space::{ConfigSpace, CONFIG_SPACE_SIZE};
use crate::device::{Fate, Pending, Registers};
use crate::error::CmdError;
use crate::events::NeEvents;
use crate::faults::FaultPlan;
use crate::hypervisor::{Hypervisor, MemRegion};
use crate::interrupt::Interrupt;
use crate::msix::{MsixTable, TABLE_BYTES};
use crate::slots::{SlotState, SlotTable};
use crate::NePciDevice;

/// What becomes of the reply of a command in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyFate {
    /// Published when the command completes.
    Publish,
    /// Held until released (fault injection).
    Hold,
    /// Dropped (fault injection).
    Drop,
}

/// The command in flight when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingState {
    /// None: the mailbox is free.
    Idle,
    /// `ENCLAVE_START` of `slot_uid` waits for the hypervisor.
    Starting {
        /// The slot.
        slot_uid: u64,
        /// The CID it gets.
        cid: u64,
        /// What becomes of its reply.
        fate: ReplyFate,
    },
    /// A reply held by fault injection: its 72 bytes.
    Held(Vec<u8>),
}

/// One slot as saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRecord {
    /// The slot's uid.
    pub uid: u64,
    /// Its state.
    pub state: SlotState,
    /// Its regions, in the order they were added.
    pub regions: Vec<MemRegion>,
    /// Its vCPUs, in the order they were added.
    pub vcpus: Vec<u32>,
}

/// The whole device as plain data. `DeviceState::default()` is the power-on state of a
/// device with the default configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    /// The 256 bytes of configuration space.
    pub config_space: Vec<u8>,
    /// The MSI-X table's 32 bytes.
    pub msix_table: Vec<u8>,
    /// The pending bits of vectors 0 and 1.
    pub msix_pending: [bool; 2],
    /// `NE_ENABLE`.
    pub enabled: bool,
    /// `NE_VERSION`.
    pub version: u16,
    /// `NE_SEND_DATA`'s 240 bytes.
    pub send_data: Vec<u8>,
    /// `NE_RECV_DATA`'s 240 bytes.
    pub recv_data: Vec<u8>,
    /// `NE_EVTCNT`'s reply counter.
    pub reply_count: u16,
    /// `NE_EVTCNT`'s event counter.
    pub event_count: u16,
    /// The command in flight.
    pub pending: PendingState,
    /// The slots, in uid order.
    pub slots: Vec<SlotRecord>,
    /// The uid the next `SLOT_ALLOC` hands out.
    pub next_slot_uid: u64,
    /// Where the search for an automatic CID starts.
    pub next_auto_cid: u64,
    /// The parent's RAM ranges donated regions must lie in.
    pub parent_ram: Vec<Range<u64>>,
}

impl Default for DeviceState {
    fn default() -> Self {
        DeviceState::power_on(&DeviceConfig::default())
    }
}

impl DeviceState {
    /// The state of a device with `config` right after power-on.
    pub fn power_on(config: &DeviceConfig) -> Self {
        let config_space = ConfigSpace::default();
        let mut bytes = vec![0; CONFIG_SPACE_SIZE];
        config_space.read(0, &mut bytes);
        let registers = Registers::default();
        let slots = SlotTable::new(config);
        DeviceState {
            config_space: bytes,
            msix_table: MsixTable::default().table_bytes().to_vec(),
            msix_pending: [false; 2],
            enabled: registers.enabled,
            version: registers.version,
            send_data: registers.send.to_vec(),
            recv_data: registers.recv.to_vec(),
            reply_count: registers.replies,
            event_count: registers.events,
            pending: PendingState::Idle,
            slots: Vec::new(),
            next_slot_uid: slots.next_uid(),
            next_auto_cid: slots.next_auto_cid(),
            parent_ram: config.parent_ram.clone(),
        }
    }
}

/// Why a [`DeviceState`] cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StateError {
    /// The configuration itself is invalid.
    #[error("Invalid device configuration")]
    Config(#[from] ConfigError),
    /// A buffer has the wrong length.
    #[error("{what} has {len} bytes, not {expected}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A read-only bit of config space differs from the device's.
    #[error("Config space byte {offset:#x} has read-only bits that differ from the device's")]
    ReadOnlyConfig {
        /// The byte's offset.
        offset: usize,
    },
    /// A slot cannot be restored: the same check a command would fail.
    #[error("Slot {uid} cannot be restored")]
    Slot {
        /// The slot's uid.
        uid: u64,
        /// The check it fails.
        #[source]
        source: CmdError,
    },
    /// Slot uids are not all above 0 and increasing.
    #[error("Slot {uid} is out of order, repeated or 0")]
    SlotOrder {
        /// The slot's uid.
        uid: u64,
    },
    /// The slot counters contradict the slots.
    #[error("Next slot uid {next} or next CID {cid} contradicts the saved slots")]
    Counters {
        /// The next slot uid.
        next: u64,
        /// The next automatic CID.
        cid: u64,
    },
    /// The command in flight names a slot that is not starting with that CID.
    #[error("The start in flight (slot {slot_uid}) matches no starting slot")]
    Pending {
        /// The slot named.
        slot_uid: u64,
    },
}

fn exact<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], StateError> {
    <[u8; N]>::try_from(bytes).map_err(|_| StateError::Length {
        what,
        len: bytes.len(),
        expected: N,
    })
}

impl<I: Interrupt, H: Hypervisor, E: NeEvents> NePciDevice<I, H, E> {
    /// The device's state, as plain data.
    pub fn state(&self) -> DeviceState {
        let mut config_space = vec![0; CONFIG_SPACE_SIZE];
        self.config_space.read(0, &mut config_space);
        DeviceState {
            config_space,
            msix_table: self.msix.table_bytes().to_vec(),
            msix_pending: [
                self.msix.is_pending(ne_abi::MsixVector::Reply),
                self.msix.is_pending(ne_abi::MsixVector::Event),
            ],
            enabled: self.regs.enabled,
            version: self.regs.version,
            send_data: self.regs.send.to_vec(),
            recv_data: self.regs.recv.to_vec(),
            reply_count: self.regs.replies,
            event_count: self.regs.events,
            pending: match self.pending {
                Pending::Idle => PendingState::Idle,
                Pending::Starting {
                    slot_uid,
                    cid,
                    fate,
                } => PendingState::Starting {
                    slot_uid,
                    cid,
                    fate: fate.into(),
                },
                Pending::Held(reply) => {
                    PendingState::Held(zerocopy::IntoBytes::as_bytes(&reply).to_vec())
                }
            },
            slots: self
                .slots
                .iter()
                .map(|slot| SlotRecord {
                    uid: slot.uid(),
                    state: slot.state(),
                    regions: slot.regions().to_vec(),
                    vcpus: slot.vcpus().to_vec(),
                })
                .collect(),
            next_slot_uid: self.slots.next_uid(),
            next_auto_cid: self.slots.next_auto_cid(),
            parent_ram: self.slots.parent_ram().to_vec(),
        }
    }

    /// A device with `config` in `state`, after checking every length, every read-only bit
    /// of config space and every slot against the rules its commands enforce. Vectors that
    /// were pending and are now deliverable are raised.
    pub fn from_state(
        config: DeviceConfig,
        state: &DeviceState,
        irq: I,
        hypervisor: H,
        events: E,
    ) -> Result<Self, StateError> {
        config.validate()?;
        let config_space = ConfigSpace::restore(&exact::<CONFIG_SPACE_SIZE>(
            "config space",
            &state.config_space,
        )?)
        .map_err(|offset| StateError::ReadOnlyConfig { offset })?;
        let mut msix =
            MsixTable::from_bytes(exact::<TABLE_BYTES>("MSI-X table", &state.msix_table)?);
        for (vector, pending) in ne_abi::MsixVector::ALL.into_iter().zip(state.msix_pending) {
            msix.set_pending(vector, pending);
        }
        let regs = Registers {
            enabled: state.enabled,
            version: if state.version == regs::VERSION_MAX {
                state.version
            } else {
                0
            },
            send: exact("SEND_DATA", &state.send_data)?,
            recv: exact("RECV_DATA", &state.recv_data)?,
            replies: state.reply_count,
            events: state.event_count,
        };
        let slots = restore_slots(&config, state)?;
        let pending = restore_pending(&state.pending, &slots)?;
        let mut device = NePciDevice {
            config,
            config_space,
            msix,
            regs,
            slots,
            pending,
            faults: FaultPlan::default(),
            irq,
            hypervisor,
            events,
        };
        // A sink that cannot raise a vector now will raise it at the next chance.
        let _ = device.deliver_pending();
        Ok(device)
    }
}

fn restore_slots(config: &DeviceConfig, state: &DeviceState) -> Result<SlotTable, StateError> {
    let mut table = SlotTable::new(config);
    crate::config::validate_ram(&state.parent_ram)?;
    table.set_parent_ram(state.parent_ram.clone());
    let mut last = 0;
    for record in &state.slots {
        if record.uid <= last {
            return Err(StateError::SlotOrder { uid: record.uid });
        }
        last = record.uid;
        table
            .restore_slot(record)
            .map_err(|source| StateError::Slot {
                uid: record.uid,
                source,
            })?;
    }
    table
        .set_counters(state.next_slot_uid, state.next_auto_cid)
        .then_some(table)
        .ok_or(StateError::Counters {
            next: state.next_slot_uid,
            cid: state.next_auto_cid,
        })
}

fn restore_pending(pending: &PendingState, slots: &SlotTable) -> Result<Pending, StateError> {
    Ok(match pending {
        PendingState::Idle => Pending::Idle,
        PendingState::Starting {
            slot_uid,
            cid,
            fate,
        } => {
            let starting = slots
                .get(*slot_uid)
                .is_some_and(|slot| slot.state() == starting_state(slot.state(), *cid));
            if !starting {
                return Err(StateError::Pending {
                    slot_uid: *slot_uid,
                });
            }
            Pending::Starting {
                slot_uid: *slot_uid,
                cid: *cid,
                fate: (*fate).into(),
            }
        }
        PendingState::Held(bytes) => {
            let bytes = exact::<72>("held reply", bytes)?;
            Pending::Held(CmdReply::read_from_bytes(&bytes).unwrap_or_default())
        }
    })
}

/// `Starting` with `cid`, keeping the flags of `state` (a mismatch if it is not starting).
fn starting_state(state: SlotState, cid: u64) -> SlotState {
    SlotState::Starting {
        cid,
        flags: state.flags(),
    }
}

impl From<Fate> for ReplyFate {
    fn from(fate: Fate) -> Self {
        match fate {
            Fate::Publish => ReplyFate::Publish,
            Fate::Hold => ReplyFate::Hold,
            Fate::Drop => ReplyFate::Drop,
        }
    }
}

impl From<ReplyFate> for Fate {
    fn from(fate: ReplyFate) -> Self {
        match fate {
            ReplyFate::Publish => Fate::Publish,
            ReplyFate::Hold => Fate::Hold,
            ReplyFate::Drop => Fate::Drop,
        }
    }
}
