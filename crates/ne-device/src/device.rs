// SPDX-License-Identifier: Apache-2.0
//! [`NePciDevice`]: the whole PCI function, with no I/O of its own.

use std::ops::Range;

use ne_abi::{regs, CmdReply, Command, MsixVector};
use zerocopy::IntoBytes;

use crate::config::{validate_ram, ConfigError, DeviceConfig};
use crate::config_space::ConfigSpace;
use crate::dispatch::{self, Outcome};
use crate::error::{CmdError, Error};
use crate::events::{NeEvents, NoEvents};
use crate::faults::{FaultAction, FaultPlan};
use crate::hypervisor::{Hypervisor, HypervisorEvent, SimulatedHypervisor};
use crate::interrupt::Interrupt;
use crate::msix::MsixTable;
use crate::slots::SlotTable;

/// The register file of BAR 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registers {
    pub(crate) enabled: bool,
    pub(crate) version: u16,
    pub(crate) send: [u8; regs::SEND_DATA_SIZE],
    pub(crate) recv: [u8; regs::RECV_DATA_SIZE],
    pub(crate) replies: u16,
    pub(crate) events: u16,
}

impl Default for Registers {
    fn default() -> Self {
        Registers {
            enabled: false,
            version: 0,
            send: [0; regs::SEND_DATA_SIZE],
            recv: [0; regs::RECV_DATA_SIZE],
            replies: 0,
            events: 0,
        }
    }
}

/// What becomes of a reply once the command is done (fault injection decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Publish,
    Hold,
    Drop,
}

/// The command in flight, if any. While it is not `Idle`, doorbells are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    Idle,
    /// `ENCLAVE_START` waits for the hypervisor.
    Starting {
        slot_uid: u64,
        cid: u64,
        fate: Fate,
    },
    /// A reply held by fault injection.
    Held(CmdReply),
}

/// The Nitro Enclaves PCI device: configuration space, BAR 3 (registers, MSI-X table and
/// PBA), the command engine and the slot table.
///
/// It does no I/O and starts no threads: the host hands it config-space and BAR accesses,
/// and it raises vectors through the [`Interrupt`] sink `I`. What starting an enclave means
/// is up to the [`Hypervisor`] `H`.
///
/// # Example: the Linux probe handshake
///
/// ```
/// use ne_abi::regs;
/// use ne_device::{DeviceConfig, NePciDevice, NoInterrupts};
///
/// let mut device = NePciDevice::new(DeviceConfig::default(), NoInterrupts).unwrap();
/// let mut byte = [0xAA];
/// device.write_bar(regs::ENABLE, &[regs::ENABLE_OFF]).unwrap();
/// device.read_bar(regs::ENABLE, &mut byte);
/// assert_eq!(byte, [regs::ENABLE_OFF]);
///
/// device.write_bar(regs::VERSION, &regs::VERSION_MAX.to_le_bytes()).unwrap();
/// let mut version = [0; 2];
/// device.read_bar(regs::VERSION, &mut version);
/// assert_eq!(u16::from_le_bytes(version), regs::VERSION_MAX);
///
/// device.write_bar(regs::ENABLE, &[regs::ENABLE_ON]).unwrap();
/// device.read_bar(regs::ENABLE, &mut byte);
/// assert_eq!(byte, [regs::ENABLE_ON]);
/// ```
#[derive(Debug)]
pub struct NePciDevice<I: Interrupt, H: Hypervisor = SimulatedHypervisor, E: NeEvents = NoEvents> {
    pub(crate) config: DeviceConfig,
    pub(crate) config_space: ConfigSpace,
    pub(crate) msix: MsixTable,
    pub(crate) regs: Registers,
    pub(crate) slots: SlotTable,
    pub(crate) pending: Pending,
    pub(crate) faults: FaultPlan,
    pub(crate) irq: I,
    pub(crate) hypervisor: H,
    pub(crate) events: E,
}

impl<I: Interrupt> NePciDevice<I, SimulatedHypervisor, NoEvents> {
    /// A device with `config`, raising vectors through `irq`, whose enclaves are simulated.
    pub fn new(config: DeviceConfig, irq: I) -> Result<Self, ConfigError> {
        Self::with_hypervisor(config, irq, SimulatedHypervisor::new())
    }
}

impl<I: Interrupt, H: Hypervisor> NePciDevice<I, H, NoEvents> {
    /// A device with `config`, raising vectors through `irq`, whose enclaves `hypervisor` runs.
    pub fn with_hypervisor(
        config: DeviceConfig,
        irq: I,
        hypervisor: H,
    ) -> Result<Self, ConfigError> {
        Self::with_events(config, irq, hypervisor, NoEvents)
    }
}

impl<I: Interrupt, H: Hypervisor, E: NeEvents> NePciDevice<I, H, E> {
    /// A device with `config` at power-on, raising vectors through `irq`, whose enclaves
    /// `hypervisor` runs, reporting what it does to `events`.
    pub fn with_events(
        config: DeviceConfig,
        irq: I,
        hypervisor: H,
        events: E,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let slots = SlotTable::new(&config);
        Ok(NePciDevice {
            config,
            config_space: ConfigSpace::default(),
            msix: MsixTable::default(),
            regs: Registers::default(),
            slots,
            pending: Pending::Idle,
            faults: FaultPlan::default(),
            irq,
            hypervisor,
            events,
        })
    }

    /// Back to power-on, as a PCI function reset does: every enclave (running or starting)
    /// is stopped through the hypervisor, every slot freed, a command in flight forgotten,
    /// and config space, MSI-X and registers return to their reset values. The backend,
    /// the interrupt sink, the events sink, armed faults and the parent's RAM ranges stay.
    pub fn reset(&mut self) {
        self.disable();
        let parent_ram = self.slots.parent_ram().to_vec();
        self.config_space = ConfigSpace::default();
        self.msix = MsixTable::default();
        self.regs = Registers::default();
        self.slots = SlotTable::new(&self.config);
        self.slots.set_parent_ram(parent_ram);
    }

    /// The configuration the device was built with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Reads `data.len()` bytes of configuration space at `offset`; past 256 bytes reads 0.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config_space.read(offset, data);
    }

    /// Writes configuration space at `offset`. Only writable bits change; enabling or
    /// unmasking MSI-X delivers the vectors that were pending.
    pub fn write_config(&mut self, offset: u64, data: &[u8]) -> Result<(), Error<I::Error>> {
        self.config_space.write(offset, data);
        self.deliver_pending()
    }

    /// The slot table, to inspect.
    pub fn slots(&self) -> &SlotTable {
        &self.slots
    }

    /// Whether a command is in flight (a start in progress, or a held reply).
    pub fn is_busy(&self) -> bool {
        self.pending != Pending::Idle
    }

    /// Whether the driver has enabled the device (`NE_ENABLE` reads 1).
    pub fn is_enabled(&self) -> bool {
        self.regs.enabled
    }

    /// The armed faults, to arm or clear more.
    pub fn faults_mut(&mut self) -> &mut FaultPlan {
        &mut self.faults
    }

    /// The hypervisor backend.
    pub fn hypervisor(&self) -> &H {
        &self.hypervisor
    }

    /// The hypervisor backend, to steer (a simulated crash, a deferred start).
    pub fn hypervisor_mut(&mut self) -> &mut H {
        &mut self.hypervisor
    }

    /// The interrupt sink.
    pub fn interrupt(&self) -> &I {
        &self.irq
    }

    /// The events sink.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// Replaces the parent's RAM ranges that donated regions must lie in (for a host whose
    /// guest memory map changes). Regions already donated are kept.
    pub fn set_parent_ram(&mut self, ranges: Vec<Range<u64>>) -> Result<(), ConfigError> {
        validate_ram(&ranges)?;
        self.slots.set_parent_ram(ranges);
        Ok(())
    }

    /// Raises `vector` now, whatever the device's state: a spurious interrupt, for fault
    /// injection. Masking still applies.
    pub fn raise_spurious(&mut self, vector: MsixVector) -> Result<(), Error<I::Error>> {
        self.signal(vector)
    }

    /// Publishes a reply held by [`FaultAction::Delay`]; false if none was held.
    pub fn release_held_reply(&mut self) -> Result<bool, Error<I::Error>> {
        let Pending::Held(reply) = self.pending else {
            return Ok(false);
        };
        self.pending = Pending::Idle;
        self.publish(reply)?;
        Ok(true)
    }

    /// Collects the hypervisor's queued events: finishes a pending `ENCLAVE_START` (reply
    /// and vector 0), and marks enclaves that stopped by themselves STOPPED (vector 1 each).
    /// Events about slots that are gone or not running are ignored.
    pub fn process_hypervisor_events(&mut self) -> Result<(), Error<I::Error>> {
        while let Some(event) = self.hypervisor.poll_event() {
            match event {
                HypervisorEvent::StartCompleted { slot_uid, result } => {
                    self.finish_start(slot_uid, result.map_err(CmdError::from))?;
                }
                HypervisorEvent::Stopped { slot_uid, reason } => {
                    if self.slots.mark_stopped(slot_uid, reason) {
                        self.regs.events = self.regs.events.wrapping_add(1);
                        self.events.event_raised(slot_uid);
                        self.signal(MsixVector::Event)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `NE_ENABLE` written with 0: every enclave, running or still starting, is stopped
    /// through the hypervisor, every slot freed, and a command in flight is forgotten (it
    /// gets no reply).
    pub(crate) fn disable(&mut self) {
        self.pending = Pending::Idle;
        for uid in self.slots.clear() {
            self.hypervisor.stop(uid);
        }
        self.regs.enabled = false;
    }

    /// A doorbell: the command `value` with the request in `NE_SEND_DATA`.
    pub(crate) fn ring(&mut self, value: u32) -> Result<(), Error<I::Error>> {
        self.events.doorbell(value);
        if self.pending != Pending::Idle {
            self.events.doorbell_ignored(value);
            return Ok(());
        }
        let command = Command::try_from(value);
        let fate = match command.ok().and_then(|command| self.faults.take(command)) {
            Some(FaultAction::Fail { rc }) => {
                self.events.command_completed(value, Some(rc));
                return self.publish(CmdReply::failure(rc));
            }
            Some(FaultAction::Delay) => Fate::Hold,
            Some(FaultAction::Drop) => Fate::Drop,
            None => Fate::Publish,
        };
        let outcome = match command {
            _ if !self.regs.enabled => Err(CmdError::Disabled),
            Err(unknown) => Err(CmdError::UnknownCommand(unknown.0)),
            Ok(command) => dispatch::execute(
                command,
                &self.regs.send,
                &mut self.slots,
                &mut self.hypervisor,
            ),
        };
        match outcome {
            Ok(Outcome::Reply(reply)) => self.deliver(value, reply, fate),
            Ok(Outcome::Starting { slot_uid, cid }) => {
                self.pending = Pending::Starting {
                    slot_uid,
                    cid,
                    fate,
                };
                Ok(())
            }
            Err(error) => {
                self.events.command_rejected(value, &error);
                self.deliver(value, CmdReply::failure(error.rc()), fate)
            }
        }
    }

    fn finish_start(
        &mut self,
        uid: u64,
        result: Result<(), CmdError>,
    ) -> Result<(), Error<I::Error>> {
        let Pending::Starting {
            slot_uid,
            cid,
            fate,
        } = self.pending
        else {
            return Ok(());
        };
        if slot_uid != uid {
            return Ok(());
        }
        self.pending = Pending::Idle;
        let reply = match result {
            Ok(()) => {
                // The slot cannot have gone: nothing else runs while the start is pending.
                let _ = self.slots.mark_running(uid);
                dispatch::start_reply(uid, cid)
            }
            Err(error) => {
                self.slots.abort_start(uid);
                self.events
                    .command_rejected(Command::EnclaveStart.number(), &error);
                CmdReply::failure(error.rc())
            }
        };
        self.deliver(Command::EnclaveStart.number(), reply, fate)
    }

    fn deliver(
        &mut self,
        command: u32,
        reply: CmdReply,
        fate: Fate,
    ) -> Result<(), Error<I::Error>> {
        self.events
            .command_completed(command, (fate != Fate::Drop).then(|| reply.rc.get()));
        match fate {
            Fate::Publish => self.publish(reply),
            Fate::Hold => {
                self.pending = Pending::Held(reply);
                Ok(())
            }
            Fate::Drop => {
                self.events.reply_dropped();
                Ok(())
            }
        }
    }

    /// Writes the whole reply into `NE_RECV_DATA` (zeros after its 72 bytes), counts it in
    /// `NE_EVTCNT`, then requests vector 0.
    fn publish(&mut self, reply: CmdReply) -> Result<(), Error<I::Error>> {
        self.regs.recv.fill(0);
        let bytes = reply.as_bytes();
        if let Some(window) = self.regs.recv.get_mut(..bytes.len()) {
            window.copy_from_slice(bytes);
        }
        self.regs.replies = self.regs.replies.wrapping_add(1);
        self.events.reply_published();
        self.signal(MsixVector::Reply)
    }

    /// Requests `vector`: raised now if MSI-X lets it through, else left pending in the PBA.
    pub(crate) fn signal(&mut self, vector: MsixVector) -> Result<(), Error<I::Error>> {
        if !self.config.msix_gating || self.msix_open(vector) {
            return self.trigger(vector);
        }
        self.msix.set_pending(vector, true);
        Ok(())
    }

    /// Raises every pending vector that MSI-X now lets through.
    pub(crate) fn deliver_pending(&mut self) -> Result<(), Error<I::Error>> {
        for vector in MsixVector::ALL {
            if self.msix.is_pending(vector) && self.msix_open(vector) {
                self.msix.set_pending(vector, false);
                self.trigger(vector)?;
            }
        }
        Ok(())
    }

    fn msix_open(&self, vector: MsixVector) -> bool {
        self.config_space.msix_open() && !self.msix.is_masked(vector)
    }

    fn trigger(&self, vector: MsixVector) -> Result<(), Error<I::Error>> {
        self.irq
            .trigger(vector)
            .map_err(|source| Error::TriggerVector {
                vector: vector.index(),
                source,
            })
    }
}
