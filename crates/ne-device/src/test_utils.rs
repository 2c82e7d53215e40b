// SPDX-License-Identifier: Apache-2.0
//! Helpers shared by unit tests, integration tests, property tests and fuzz targets: the
//! driver's side of the mailbox as Linux performs it, and an interpreter of raw BAR ops.
//!
//! Test code: it panics when the device does not answer as a test requires.
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used
)]

use ne_abi::cmd::Request;
use ne_abi::{regs, CmdReply, Command};
use zerocopy::FromBytes;

use crate::events::NeEvents;
use crate::hypervisor::Hypervisor;
use crate::interrupt::Interrupt;
use crate::NePciDevice;

/// The device the driver helpers act on, with any interrupt sink and hypervisor.
pub type Device<I, H, E> = NePciDevice<I, H, E>;

/// Writes `bytes` at `offset` the way x86 `memcpy_toio` does ([`regs::io_chunks`]).
pub fn memcpy_toio<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    offset: u64,
    bytes: &[u8],
) {
    for chunk in regs::io_chunks(bytes.len()) {
        device
            .write_bar(offset + chunk.start as u64, &bytes[chunk])
            .expect("interrupt sink");
    }
}

/// Reads `len` bytes at `offset` the way x86 `memcpy_fromio` does ([`regs::io_chunks`]).
pub fn memcpy_fromio<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    offset: u64,
    len: usize,
) -> Vec<u8> {
    let mut out = vec![0; len];
    for chunk in regs::io_chunks(len) {
        device.read_bar(offset + chunk.start as u64, &mut out[chunk]);
    }
    out
}

/// Enables MSI-X and unmasks both vectors, as the PCI core does before a probe
/// ([`crate::pci_core::enable`]).
pub fn setup_msix<I: Interrupt, H: Hypervisor, E: NeEvents>(device: &mut Device<I, H, E>) {
    crate::pci_core::enable(device).expect("interrupt sink");
}

/// The Linux probe: MSI-X set up, then `ENABLE` 0 and poll, `VERSION` 1, `ENABLE` 1.
/// Panics if the device does not answer as the driver requires.
pub fn probe<I: Interrupt, H: Hypervisor, E: NeEvents>(device: &mut Device<I, H, E>) {
    setup_msix(device);
    device
        .write_bar(regs::ENABLE, &[regs::ENABLE_OFF])
        .expect("interrupt sink");
    assert_eq!(read_u8(device, regs::ENABLE), regs::ENABLE_OFF, "disable");
    device
        .write_bar(regs::VERSION, &regs::VERSION_MAX.to_le_bytes())
        .expect("interrupt sink");
    assert_eq!(
        read_u16(device, regs::VERSION),
        regs::VERSION_MAX,
        "version"
    );
    device
        .write_bar(regs::ENABLE, &[regs::ENABLE_ON])
        .expect("interrupt sink");
    assert_eq!(read_u8(device, regs::ENABLE), regs::ENABLE_ON, "enable");
}

/// Writes the request, rings the doorbell and reads the 72-byte reply, as `ne_do_request`
/// does (without waiting: a reply that is pending reads as the previous one).
pub fn request<R: Request, I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    req: &R,
) -> CmdReply {
    memcpy_toio(device, regs::SEND_DATA, req.as_bytes());
    ring(device, R::COMMAND.number());
    read_reply(device)
}

/// Writes `command` to `NE_COMMAND` with one 4-byte write.
pub fn ring<I: Interrupt, H: Hypervisor, E: NeEvents>(device: &mut Device<I, H, E>, command: u32) {
    device
        .write_bar(regs::COMMAND, &command.to_le_bytes())
        .expect("interrupt sink");
}

/// Reads the 72-byte reply from `NE_RECV_DATA`.
pub fn read_reply<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
) -> CmdReply {
    let bytes = memcpy_fromio(device, regs::RECV_DATA, size_of::<CmdReply>());
    CmdReply::read_from_bytes(&bytes).expect("72 bytes")
}

/// Reads one byte of BAR 3.
pub fn read_u8<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    offset: u64,
) -> u8 {
    let mut byte = [0];
    device.read_bar(offset, &mut byte);
    byte[0]
}

/// Reads a little-endian u16 of BAR 3.
pub fn read_u16<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    offset: u64,
) -> u16 {
    let mut bytes = [0; 2];
    device.read_bar(offset, &mut bytes);
    u16::from_le_bytes(bytes)
}

/// Reads a little-endian u32 of BAR 3.
pub fn read_u32<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut Device<I, H, E>,
    offset: u64,
) -> u32 {
    let mut bytes = [0; 4];
    device.read_bar(offset, &mut bytes);
    u32::from_le_bytes(bytes)
}

/// One raw operation on the device, as a fuzzer or property test generates it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum BarOp {
    /// Read `len` bytes of BAR 3 at `offset`.
    Read {
        /// BAR offset.
        offset: u16,
        /// Bytes to read.
        len: u8,
    },
    /// Write `data` to BAR 3 at `offset`.
    Write {
        /// BAR offset.
        offset: u16,
        /// Bytes to write.
        data: Vec<u8>,
    },
    /// Read `len` bytes of config space at `offset`.
    ReadConfig {
        /// Config-space offset.
        offset: u16,
        /// Bytes to read.
        len: u8,
    },
    /// Write `data` to config space at `offset`.
    WriteConfig {
        /// Config-space offset.
        offset: u16,
        /// Bytes to write.
        data: Vec<u8>,
    },
    /// Write `payload` to `NE_SEND_DATA` and ring `command` (any number, valid or not).
    Command {
        /// The doorbell value.
        command: u32,
        /// The request bytes (at most 240 are written).
        payload: Vec<u8>,
    },
}

impl BarOp {
    /// A well-formed command op for `command` with request bytes `payload`.
    pub fn command(command: Command, payload: &[u8]) -> BarOp {
        BarOp::Command {
            command: command.number(),
            payload: payload.to_vec(),
        }
    }

    /// Applies the op to `device`.
    pub fn apply<I: Interrupt, H: Hypervisor, E: NeEvents>(
        &self,
        device: &mut Device<I, H, E>,
    ) -> Result<(), crate::Error<I::Error>> {
        match self {
            BarOp::Read { offset, len } => {
                let mut data = vec![0; usize::from(*len)];
                device.read_bar(u64::from(*offset), &mut data);
                Ok(())
            }
            BarOp::Write { offset, data } => device.write_bar(u64::from(*offset), data),
            BarOp::ReadConfig { offset, len } => {
                let mut data = vec![0; usize::from(*len)];
                device.read_config(u64::from(*offset), &mut data);
                Ok(())
            }
            BarOp::WriteConfig { offset, data } => device.write_config(u64::from(*offset), data),
            BarOp::Command { command, payload } => {
                let len = payload.len().min(regs::SEND_DATA_SIZE);
                device.write_bar(regs::SEND_DATA, &payload[..len])?;
                device.write_bar(regs::COMMAND, &command.to_le_bytes())
            }
        }
    }
}

/// Runs `ops` against a fresh, enabled device with default limits, with or without
/// MSI-X gating, checking after every op what must always hold: no more vector-0 messages
/// than replies and no more vector-1 messages than events, a deliverable vector never left
/// pending, and `NE_EVTCNT` agreeing with the counts. With gating off, every reply and
/// event raises its vector at once. The fuzz targets and the corpus replay use it; it
/// returns what the device did.
pub fn run_ops(ops: &[BarOp], msix_gating: bool) -> crate::DeviceStats {
    use crate::{DeviceConfig, DeviceLog, MsixVector, RecordingInterrupts};
    use std::sync::Arc;
    let irq = RecordingInterrupts::new();
    let log = Arc::new(DeviceLog::new());
    let config = DeviceConfig {
        msix_gating,
        ..DeviceConfig::default()
    };
    let mut device = NePciDevice::with_events(
        config,
        irq.clone(),
        crate::SimulatedHypervisor::new(),
        Arc::clone(&log),
    )
    .expect("default config is valid");
    device
        .write_bar(regs::ENABLE, &[regs::ENABLE_ON])
        .expect("interrupt sink");
    for op in ops {
        op.apply(&mut device).expect("interrupt sink");
        let stats = log.stats();
        let (replies, events) = (
            irq.count(MsixVector::Reply) as u64,
            irq.count(MsixVector::Event) as u64,
        );
        if msix_gating {
            assert!(
                replies <= stats.replies,
                "{replies} vector-0 messages, {} replies",
                stats.replies
            );
            assert!(
                events <= stats.events,
                "{events} vector-1 messages, {} events",
                stats.events
            );
            let state = device.state();
            let open = device.config_space.msix_open();
            for vector in MsixVector::ALL {
                let pending = state.msix_pending[usize::from(vector.index())];
                assert!(
                    !(pending && open && !device.msix.is_masked(vector)),
                    "{vector:?} deliverable but pending"
                );
            }
        } else {
            assert_eq!(replies, stats.replies);
            assert_eq!(events, stats.events);
        }
        let evtcnt = read_u32(&mut device, regs::EVTCNT);
        assert_eq!(
            u64::from(regs::evtcnt_reply(evtcnt)),
            stats.replies % 0x1_0000
        );
    }
    log.stats()
}
