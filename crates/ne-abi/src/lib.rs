// SPDX-License-Identifier: Apache-2.0
//! The Nitro Enclaves (NE) PCI device interface, bit-exact.
//!
//! Everything a peer needs to speak to the NE PCI device, and nothing else: the PCI identity,
//! the BAR 3 register map, the eleven command numbers, the request and reply payloads that
//! travel through the `SEND_DATA`/`RECV_DATA` windows, and the user-space interface of the
//! Linux driver (`/dev/nitro_enclaves` ioctls, their structs, flags and `NE_ERR_*` codes).
//!
//! Names mirror the kernel's: the `NE_` prefix is dropped because the module supplies it
//! (`regs::SEND_DATA` is `NE_SEND_DATA`), C structs become UpperCamelCase
//! (`struct slot_add_mem_req` is [`SlotAddMemReq`]) and fields keep their C names, padding
//! included. Sources: `ne_pci_dev.h` (device interface, unchanged since its v8 patch) and
//! `include/uapi/linux/nitro_enclaves.h` (user-space interface).
//!
//! This crate has no logic beyond decoding: it is `no_std`, has no `unsafe`, and its wire
//! structs derive their byte conversions with `zerocopy`. All multi-byte fields are
//! little-endian, as on the device.
#![no_std]
#![forbid(unsafe_code)]

pub mod cmd;
pub mod errno;
pub mod pci;
pub mod regs;
pub mod reply;
pub mod uapi;

pub use cmd::{
    Command, EnclaveGetSlotReq, EnclaveStartReq, EnclaveStopReq, NextSlotReq, SlotAddBulkVcpusReq,
    SlotAddMemReq, SlotAddVcpuReq, SlotAllocReq, SlotCountReq, SlotFreeReq, SlotInfoReq,
    UnknownCommand,
};
pub use pci::MsixVector;
pub use regs::Register;
pub use reply::CmdReply;
pub use uapi::{
    EnclaveState, NeEnclaveStartInfo, NeError, NeImageLoadInfo, NeUserMemoryRegion, UnknownNeError,
};
