// SPDX-License-Identifier: Apache-2.0
//! Command numbers (`enum ne_pci_dev_cmd_type`) and request payloads (`ne_pci_dev.h`).
//!
//! The driver writes a request into `NE_SEND_DATA` (only the struct's own bytes: the rest of
//! the window keeps whatever earlier commands left there), then the command number into
//! `NE_COMMAND`.

use core::fmt;
use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `INVALID_CMD`: never a valid command.
pub const INVALID_CMD: u32 = 0;
/// `MAX_CMD`: one past the last command; values from here on are invalid.
pub const MAX_CMD: u32 = 12;

/// A valid NE device command (`enum ne_pci_dev_cmd_type`, values 1 to 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Command {
    /// `ENCLAVE_START`: start the enclave of a slot. Request [`EnclaveStartReq`].
    EnclaveStart = 1,
    /// `ENCLAVE_GET_SLOT`: find the slot of a running enclave by CID. Request [`EnclaveGetSlotReq`].
    EnclaveGetSlot = 2,
    /// `ENCLAVE_STOP`: stop the enclave of a slot. Request [`EnclaveStopReq`].
    EnclaveStop = 3,
    /// `SLOT_ALLOC`: allocate a slot for a new enclave. Request [`SlotAllocReq`].
    SlotAlloc = 4,
    /// `SLOT_FREE`: free a slot. Request [`SlotFreeReq`].
    SlotFree = 5,
    /// `SLOT_ADD_MEM`: donate a parent memory region to a slot. Request [`SlotAddMemReq`].
    SlotAddMem = 6,
    /// `SLOT_ADD_VCPU`: donate a parent vCPU to a slot. Request [`SlotAddVcpuReq`].
    SlotAddVcpu = 7,
    /// `SLOT_COUNT`: count the allocated slots. Request [`SlotCountReq`].
    SlotCount = 8,
    /// `NEXT_SLOT`: the slot after a given one, for iteration. Request [`NextSlotReq`].
    NextSlot = 9,
    /// `SLOT_INFO`: describe a slot. Request [`SlotInfoReq`].
    SlotInfo = 10,
    /// `SLOT_ADD_BULK_VCPUS`: donate a number of vCPUs the device picks. Request [`SlotAddBulkVcpusReq`].
    SlotAddBulkVcpus = 11,
}

impl Command {
    /// Every command, in numeric order.
    pub const ALL: [Command; 11] = [
        Command::EnclaveStart,
        Command::EnclaveGetSlot,
        Command::EnclaveStop,
        Command::SlotAlloc,
        Command::SlotFree,
        Command::SlotAddMem,
        Command::SlotAddVcpu,
        Command::SlotCount,
        Command::NextSlot,
        Command::SlotInfo,
        Command::SlotAddBulkVcpus,
    ];

    /// The number written to `NE_COMMAND`.
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// The kernel's name of the command, e.g. `SLOT_ADD_MEM`.
    pub const fn name(self) -> &'static str {
        match self {
            Command::EnclaveStart => "ENCLAVE_START",
            Command::EnclaveGetSlot => "ENCLAVE_GET_SLOT",
            Command::EnclaveStop => "ENCLAVE_STOP",
            Command::SlotAlloc => "SLOT_ALLOC",
            Command::SlotFree => "SLOT_FREE",
            Command::SlotAddMem => "SLOT_ADD_MEM",
            Command::SlotAddVcpu => "SLOT_ADD_VCPU",
            Command::SlotCount => "SLOT_COUNT",
            Command::NextSlot => "NEXT_SLOT",
            Command::SlotInfo => "SLOT_INFO",
            Command::SlotAddBulkVcpus => "SLOT_ADD_BULK_VCPUS",
        }
    }

    /// How many bytes of `NE_SEND_DATA` the command's request occupies.
    pub const fn request_size(self) -> usize {
        match self {
            Command::EnclaveStart => size_of::<EnclaveStartReq>(),
            Command::EnclaveGetSlot => size_of::<EnclaveGetSlotReq>(),
            Command::EnclaveStop => size_of::<EnclaveStopReq>(),
            Command::SlotAlloc => size_of::<SlotAllocReq>(),
            Command::SlotFree => size_of::<SlotFreeReq>(),
            Command::SlotAddMem => size_of::<SlotAddMemReq>(),
            Command::SlotAddVcpu => size_of::<SlotAddVcpuReq>(),
            Command::SlotCount => size_of::<SlotCountReq>(),
            Command::NextSlot => size_of::<NextSlotReq>(),
            Command::SlotInfo => size_of::<SlotInfoReq>(),
            Command::SlotAddBulkVcpus => size_of::<SlotAddBulkVcpusReq>(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A command number outside 1..=11, as written to `NE_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCommand(pub u32);

impl fmt::Display for UnknownCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unknown NE command {} (valid: 1 to 11)", self.0)
    }
}

impl core::error::Error for UnknownCommand {}

impl TryFrom<u32> for Command {
    type Error = UnknownCommand;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Command::ALL
            .into_iter()
            .find(|command| command.number() == value)
            .ok_or(UnknownCommand(value))
    }
}

impl From<Command> for u32 {
    fn from(command: Command) -> u32 {
        command.number()
    }
}

/// A request payload: its bytes and the command it belongs to.
pub trait Request: IntoBytes + FromBytes + Immutable + KnownLayout + Sized {
    /// The command whose request this is.
    const COMMAND: Command;
}

/// `struct enclave_start_req` (24 bytes), for `ENCLAVE_START`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EnclaveStartReq {
    /// The slot whose enclave to start.
    pub slot_uid: U64,
    /// The enclave's vsock CID; 0 lets the device pick one.
    pub enclave_cid: U64,
    /// Start flags: 0 production, [`crate::uapi::ENCLAVE_DEBUG_MODE`] debug.
    pub flags: U64,
}

impl Request for EnclaveStartReq {
    const COMMAND: Command = Command::EnclaveStart;
}

const _: () = assert!(size_of::<EnclaveStartReq>() == 24);
const _: () = assert!(offset_of!(EnclaveStartReq, slot_uid) == 0);
const _: () = assert!(offset_of!(EnclaveStartReq, enclave_cid) == 8);
const _: () = assert!(offset_of!(EnclaveStartReq, flags) == 16);

/// `struct enclave_get_slot_req` (8 bytes), for `ENCLAVE_GET_SLOT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EnclaveGetSlotReq {
    /// The CID of the enclave whose slot to find.
    pub enclave_cid: U64,
}

impl Request for EnclaveGetSlotReq {
    const COMMAND: Command = Command::EnclaveGetSlot;
}

const _: () = assert!(size_of::<EnclaveGetSlotReq>() == 8);
const _: () = assert!(offset_of!(EnclaveGetSlotReq, enclave_cid) == 0);

/// `struct enclave_stop_req` (8 bytes), for `ENCLAVE_STOP`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EnclaveStopReq {
    /// The slot whose enclave to stop.
    pub slot_uid: U64,
}

impl Request for EnclaveStopReq {
    const COMMAND: Command = Command::EnclaveStop;
}

const _: () = assert!(size_of::<EnclaveStopReq>() == 8);
const _: () = assert!(offset_of!(EnclaveStopReq, slot_uid) == 0);

/// `struct slot_alloc_req` (1 byte), for `SLOT_ALLOC`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotAllocReq {
    /// Unused; the driver writes 0.
    pub unused: u8,
}

impl Request for SlotAllocReq {
    const COMMAND: Command = Command::SlotAlloc;
}

const _: () = assert!(size_of::<SlotAllocReq>() == 1);
const _: () = assert!(offset_of!(SlotAllocReq, unused) == 0);

/// `struct slot_free_req` (8 bytes), for `SLOT_FREE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotFreeReq {
    /// The slot to free.
    pub slot_uid: U64,
}

impl Request for SlotFreeReq {
    const COMMAND: Command = Command::SlotFree;
}

const _: () = assert!(size_of::<SlotFreeReq>() == 8);
const _: () = assert!(offset_of!(SlotFreeReq, slot_uid) == 0);

/// `struct slot_add_mem_req` (24 bytes), for `SLOT_ADD_MEM`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotAddMemReq {
    /// The slot to donate the memory to.
    pub slot_uid: U64,
    /// The region's guest-physical start address in the parent VM.
    pub paddr: U64,
    /// The region's size in bytes.
    pub size: U64,
}

impl Request for SlotAddMemReq {
    const COMMAND: Command = Command::SlotAddMem;
}

const _: () = assert!(size_of::<SlotAddMemReq>() == 24);
const _: () = assert!(offset_of!(SlotAddMemReq, slot_uid) == 0);
const _: () = assert!(offset_of!(SlotAddMemReq, paddr) == 8);
const _: () = assert!(offset_of!(SlotAddMemReq, size) == 16);

/// `struct slot_add_vcpu_req` (16 bytes), for `SLOT_ADD_VCPU`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotAddVcpuReq {
    /// The slot to donate the vCPU to.
    pub slot_uid: U64,
    /// The parent's logical CPU number.
    pub vcpu_id: U32,
    /// Padding; the driver writes zeros.
    pub padding: [u8; 4],
}

impl Request for SlotAddVcpuReq {
    const COMMAND: Command = Command::SlotAddVcpu;
}

const _: () = assert!(size_of::<SlotAddVcpuReq>() == 16);
const _: () = assert!(offset_of!(SlotAddVcpuReq, slot_uid) == 0);
const _: () = assert!(offset_of!(SlotAddVcpuReq, vcpu_id) == 8);
const _: () = assert!(offset_of!(SlotAddVcpuReq, padding) == 12);

/// `struct slot_count_req` (1 byte), for `SLOT_COUNT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotCountReq {
    /// Unused; the driver writes 0.
    pub unused: u8,
}

impl Request for SlotCountReq {
    const COMMAND: Command = Command::SlotCount;
}

const _: () = assert!(size_of::<SlotCountReq>() == 1);
const _: () = assert!(offset_of!(SlotCountReq, unused) == 0);

/// `struct next_slot_req` (8 bytes), for `NEXT_SLOT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NextSlotReq {
    /// The slot to continue after; 0 starts the iteration.
    pub slot_uid: U64,
}

impl Request for NextSlotReq {
    const COMMAND: Command = Command::NextSlot;
}

const _: () = assert!(size_of::<NextSlotReq>() == 8);
const _: () = assert!(offset_of!(NextSlotReq, slot_uid) == 0);

/// `struct slot_info_req` (8 bytes), for `SLOT_INFO`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotInfoReq {
    /// The slot to describe.
    pub slot_uid: U64,
}

impl Request for SlotInfoReq {
    const COMMAND: Command = Command::SlotInfo;
}

const _: () = assert!(size_of::<SlotInfoReq>() == 8);
const _: () = assert!(offset_of!(SlotInfoReq, slot_uid) == 0);

/// `struct slot_add_bulk_vcpus_req` (16 bytes), for `SLOT_ADD_BULK_VCPUS`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SlotAddBulkVcpusReq {
    /// The slot to donate the vCPUs to.
    pub slot_uid: U64,
    /// How many vCPUs to donate.
    pub nr_vcpus: U64,
}

impl Request for SlotAddBulkVcpusReq {
    const COMMAND: Command = Command::SlotAddBulkVcpus;
}

const _: () = assert!(size_of::<SlotAddBulkVcpusReq>() == 16);
const _: () = assert!(offset_of!(SlotAddBulkVcpusReq, slot_uid) == 0);
const _: () = assert!(offset_of!(SlotAddBulkVcpusReq, nr_vcpus) == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_command_try_from_accepts_exactly_one_to_eleven() {
        for command in Command::ALL {
            assert_eq!(Command::try_from(command.number()), Ok(command));
        }
        assert_eq!(Command::try_from(INVALID_CMD), Err(UnknownCommand(0)));
        assert_eq!(Command::try_from(MAX_CMD), Err(UnknownCommand(12)));
        assert_eq!(Command::try_from(u32::MAX), Err(UnknownCommand(u32::MAX)));
    }

    #[test]
    fn test_command_numbers_match_header() {
        let numbers: [u32; 11] = Command::ALL.map(Command::number);
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn test_slot_add_mem_req_golden_bytes() {
        let req = SlotAddMemReq {
            slot_uid: U64::new(0x0102_0304_0506_0708),
            paddr: U64::new(0x20_0000),
            size: U64::new(0x40_0000),
        };
        let expected: [u8; 24] = [
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // slot_uid
            0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, // paddr
            0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, // size
        ];
        assert_eq!(req.as_bytes(), &expected);
    }

    #[test]
    fn test_slot_add_vcpu_req_golden_bytes() {
        let req = SlotAddVcpuReq {
            slot_uid: U64::new(7),
            vcpu_id: U32::new(0x0102_0304),
            padding: [0; 4],
        };
        let expected: [u8; 16] = [7, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0];
        assert_eq!(req.as_bytes(), &expected);
    }

    #[test]
    fn test_request_size_matches_struct() {
        assert_eq!(Command::SlotAlloc.request_size(), 1);
        assert_eq!(Command::EnclaveStart.request_size(), 24);
        assert_eq!(Command::SlotAddVcpu.request_size(), 16);
    }
}
