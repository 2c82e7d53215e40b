// SPDX-License-Identifier: Apache-2.0
//! The command reply (`struct ne_pci_dev_cmd_reply`, `ne_pci_dev.h`).

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{I32, U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `struct ne_pci_dev_cmd_reply` (72 bytes), read by the driver from `NE_RECV_DATA`.
///
/// Every command gets a whole reply: fields a command does not define are zero.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CmdReply {
    /// 0 or positive on success; a negative errno on failure, returned to user space as is.
    pub rc: I32,
    /// Padding, zero.
    pub padding0: [u8; 4],
    /// The slot the command acted on (every command but `SLOT_COUNT`).
    pub slot_uid: U64,
    /// The CID of the started enclave (`ENCLAVE_START`, `SLOT_INFO`).
    pub enclave_cid: U64,
    /// The number of allocated slots (`SLOT_COUNT`).
    pub slot_count: U64,
    /// `SLOT_ALLOC`: the most memory regions the slot accepts; `SLOT_INFO`: how many it has.
    pub mem_regions: U64,
    /// The slot's memory in bytes (`SLOT_INFO`).
    pub mem_size: U64,
    /// The slot's vCPU count (`SLOT_INFO`).
    pub nr_vcpus: U64,
    /// The enclave's start flags (`SLOT_INFO`).
    pub flags: U64,
    /// The enclave's state (`SLOT_INFO`): see [`crate::EnclaveState`].
    pub state: U16,
    /// Padding, zero.
    pub padding1: [u8; 6],
}

const _: () = assert!(size_of::<CmdReply>() == 72);
const _: () = assert!(offset_of!(CmdReply, rc) == 0);
const _: () = assert!(offset_of!(CmdReply, padding0) == 4);
const _: () = assert!(offset_of!(CmdReply, slot_uid) == 8);
const _: () = assert!(offset_of!(CmdReply, enclave_cid) == 16);
const _: () = assert!(offset_of!(CmdReply, slot_count) == 24);
const _: () = assert!(offset_of!(CmdReply, mem_regions) == 32);
const _: () = assert!(offset_of!(CmdReply, mem_size) == 40);
const _: () = assert!(offset_of!(CmdReply, nr_vcpus) == 48);
const _: () = assert!(offset_of!(CmdReply, flags) == 56);
const _: () = assert!(offset_of!(CmdReply, state) == 64);
const _: () = assert!(offset_of!(CmdReply, padding1) == 66);

impl CmdReply {
    /// A reply that carries only the failure `rc` (a negative errno).
    pub fn failure(rc: i32) -> CmdReply {
        CmdReply {
            rc: I32::new(rc),
            ..CmdReply::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cmd_reply_golden_bytes() {
        let reply = CmdReply {
            rc: I32::new(-22),
            slot_uid: U64::new(1),
            state: U16::new(0xFFFF),
            ..CmdReply::default()
        };
        let bytes = reply.as_bytes();
        assert_eq!(&bytes[0..4], &[0xea, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[64..66], &[0xff, 0xff]);
        assert!(bytes[16..64].iter().all(|&b| b == 0));
        assert!(bytes[66..].iter().all(|&b| b == 0));
    }

    #[test]
    fn test_cmd_reply_reads_from_unaligned_bytes() {
        let mut window = [0u8; 73];
        window[1] = 0xfe;
        window[2..5].fill(0xff);
        let reply = CmdReply::read_from_bytes(&window[1..]).unwrap();
        assert_eq!(reply.rc.get(), -2);
    }
}
