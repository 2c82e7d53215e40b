// SPDX-License-Identifier: Apache-2.0
//! The BAR 3 register map (`ne_pci_dev.h`).
//!
//! | offset | name | width | access |
//! |---|---|---|---|
//! | 0x000 | `NE_ENABLE` | 1 | R/W |
//! | 0x002 | `NE_VERSION` | 2 | R/W |
//! | 0x004 | `NE_COMMAND` | 4 | W (doorbell) |
//! | 0x00C | `NE_EVTCNT` | 4 | R |
//! | 0x010 | `NE_SEND_DATA` | 240 | R/W |
//! | 0x100 | `NE_RECV_DATA` | 240 | R |
//!
//! Bytes 0x001 and 0x008–0x00B are reserved.

use core::ops::Range;

/// `NE_ENABLE`: 1 byte, R/W. The driver is (1) or is not (0) using the device.
pub const ENABLE: u64 = 0x000;
/// `NE_ENABLE_OFF`: written to disable the device; read back once it is disabled.
pub const ENABLE_OFF: u8 = 0x00;
/// `NE_ENABLE_ON`: written to enable the device; must read back at once.
pub const ENABLE_ON: u8 = 0x01;

/// `NE_VERSION`: 2 bytes, R/W. The driver writes the version it speaks and expects it echoed.
pub const VERSION: u64 = 0x002;
/// `NE_VERSION_MAX`: the only interface version there is.
pub const VERSION_MAX: u16 = 0x0001;

/// `NE_COMMAND`: 4 bytes, write-only doorbell. The value written is a [`crate::Command`].
pub const COMMAND: u64 = 0x004;

/// `NE_EVTCNT`: 4 bytes, read-only. Reply counter in bits 15:0, event counter in bits 31:16.
pub const EVTCNT: u64 = 0x00C;
/// `NE_EVTCNT_REPLY_SHIFT`.
pub const EVTCNT_REPLY_SHIFT: u32 = 0;
/// `NE_EVTCNT_REPLY_MASK`.
pub const EVTCNT_REPLY_MASK: u32 = 0x0000_ffff;
/// `NE_EVTCNT_EVENT_SHIFT`.
pub const EVTCNT_EVENT_SHIFT: u32 = 16;
/// `NE_EVTCNT_EVENT_MASK`.
pub const EVTCNT_EVENT_MASK: u32 = 0xffff_0000;

/// `NE_SEND_DATA`: the 240-byte request window, R/W.
pub const SEND_DATA: u64 = 0x010;
/// `NE_SEND_DATA_SIZE`.
pub const SEND_DATA_SIZE: usize = 240;
/// `NE_RECV_DATA`: the 240-byte reply window, read-only.
pub const RECV_DATA: u64 = 0x100;
/// `NE_RECV_DATA_SIZE`.
pub const RECV_DATA_SIZE: usize = 240;
/// One past the last register byte (`NE_RECV_DATA` + `NE_RECV_DATA_SIZE`).
pub const REGISTERS_END: u64 = 0x1F0;

/// How x86's `memcpy_toio`/`memcpy_fromio` split a copy of `len` bytes to or from a
/// 4-aligned MMIO address (`arch/x86/lib/iomem.c`): 4-byte accesses, then one 2-byte and
/// one 1-byte access for the tail. Yields each access's byte range within the buffer.
pub fn io_chunks(len: usize) -> impl Iterator<Item = core::ops::Range<usize>> {
    let words = len / 4 * 4;
    let word_ranges = (0..words).step_by(4).map(|at| at..at + 4);
    let half = (len & 2 != 0).then(|| words..words + 2);
    let byte = (len & 1 != 0).then(|| len - 1..len);
    word_ranges.chain(half).chain(byte)
}

/// `NE_EVTCNT_REPLY(cnt)`: the reply counter of an `NE_EVTCNT` value.
pub const fn evtcnt_reply(evtcnt: u32) -> u16 {
    // The mask keeps 16 bits, so the narrowing is exact.
    #[allow(clippy::cast_possible_truncation)]
    let replies = ((evtcnt & EVTCNT_REPLY_MASK) >> EVTCNT_REPLY_SHIFT) as u16;
    replies
}

/// `NE_EVTCNT_EVENT(cnt)`: the event counter of an `NE_EVTCNT` value.
pub const fn evtcnt_event(evtcnt: u32) -> u16 {
    // The mask keeps 16 bits, so the narrowing is exact.
    #[allow(clippy::cast_possible_truncation)]
    let events = ((evtcnt & EVTCNT_EVENT_MASK) >> EVTCNT_EVENT_SHIFT) as u16;
    events
}

/// The `NE_EVTCNT` value holding `replies` and `events`.
pub const fn evtcnt(replies: u16, events: u16) -> u32 {
    ((replies as u32) << EVTCNT_REPLY_SHIFT) | ((events as u32) << EVTCNT_EVENT_SHIFT)
}

/// One register of BAR 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Register {
    /// `NE_ENABLE`.
    Enable,
    /// `NE_VERSION`.
    Version,
    /// `NE_COMMAND`.
    Command,
    /// `NE_EVTCNT`.
    EvtCnt,
    /// `NE_SEND_DATA`.
    SendData,
    /// `NE_RECV_DATA`.
    RecvData,
}

impl Register {
    /// Every register, in offset order.
    pub const ALL: [Register; 6] = [
        Register::Enable,
        Register::Version,
        Register::Command,
        Register::EvtCnt,
        Register::SendData,
        Register::RecvData,
    ];

    /// The register's offset in BAR 3.
    pub const fn offset(self) -> u64 {
        match self {
            Register::Enable => ENABLE,
            Register::Version => VERSION,
            Register::Command => COMMAND,
            Register::EvtCnt => EVTCNT,
            Register::SendData => SEND_DATA,
            Register::RecvData => RECV_DATA,
        }
    }

    /// The register's width in bytes.
    pub const fn width(self) -> usize {
        match self {
            Register::Enable => 1,
            Register::Version => 2,
            Register::Command | Register::EvtCnt => 4,
            Register::SendData => SEND_DATA_SIZE,
            Register::RecvData => RECV_DATA_SIZE,
        }
    }

    /// The BAR 3 bytes the register occupies.
    pub const fn range(self) -> Range<u64> {
        self.offset()..self.offset() + self.width() as u64
    }

    /// Whether the driver may write the register (the header's R/W or W).
    pub const fn is_writable(self) -> bool {
        matches!(
            self,
            Register::Enable | Register::Version | Register::Command | Register::SendData
        )
    }

    /// Whether reading the register returns its contents (the header's R or R/W).
    pub const fn is_readable(self) -> bool {
        !matches!(self, Register::Command)
    }
}

/// Decodes an access of `len` bytes at `offset` that lies wholly inside one register.
///
/// Returns the register and the access's byte offset inside it, or `None` for an access to
/// reserved bytes, one that straddles registers, an empty one, or one past the register block.
pub fn decode(offset: u64, len: usize) -> Option<(Register, usize)> {
    let end = offset.checked_add(u64::try_from(len).ok()?)?;
    if len == 0 {
        return None;
    }
    Register::ALL.into_iter().find_map(|register| {
        let range = register.range();
        let inside = range.start <= offset && end <= range.end;
        let at = offset.checked_sub(range.start)?;
        inside
            .then(|| usize::try_from(at).ok().map(|at| (register, at)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decode_table() {
        type Row = (u64, usize, Option<(Register, usize)>);
        let table: &[Row] = &[
            (0x000, 1, Some((Register::Enable, 0))),
            (0x000, 2, None),
            (0x001, 1, None),
            (0x002, 2, Some((Register::Version, 0))),
            (0x003, 1, Some((Register::Version, 1))),
            (0x002, 4, None),
            (0x004, 4, Some((Register::Command, 0))),
            (0x006, 2, Some((Register::Command, 2))),
            (0x008, 4, None),
            (0x00C, 4, Some((Register::EvtCnt, 0))),
            (0x00C, 8, None),
            (0x010, 8, Some((Register::SendData, 0))),
            (0x0FF, 1, Some((Register::SendData, 239))),
            (0x0FC, 8, None),
            (0x100, 4, Some((Register::RecvData, 0))),
            (0x1E8, 8, Some((Register::RecvData, 232))),
            (0x1EC, 8, None),
            (0x1F0, 1, None),
            (0x010, 0, None),
            (u64::MAX, 2, None),
        ];
        for &(offset, len, expected) in table {
            assert_eq!(
                decode(offset, len),
                expected,
                "offset {offset:#x} len {len}"
            );
        }
    }

    #[test]
    fn test_registers_are_ordered_and_disjoint() {
        for pair in Register::ALL.windows(2) {
            assert!(pair[0].range().end <= pair[1].range().start, "{pair:?}");
        }
        assert_eq!(Register::RecvData.range().end, REGISTERS_END);
    }

    #[test]
    fn test_evtcnt_accessors_split_halves() {
        let value = evtcnt(0x1234, 0xabcd);
        assert_eq!(value, 0xabcd_1234);
        assert_eq!(evtcnt_reply(value), 0x1234);
        assert_eq!(evtcnt_event(value), 0xabcd);
    }

    #[test]
    fn test_io_chunks_split_words_then_half_then_byte() {
        let chunks: [core::ops::Range<usize>; 4] = [0..4, 4..8, 8..10, 10..11];
        assert!(io_chunks(11).eq(chunks));
        assert!(io_chunks(3).eq([0..2, 2..3]));
        assert!(io_chunks(4).eq(core::iter::once(0..4)));
        assert_eq!(io_chunks(0).count(), 0);
        assert_eq!(io_chunks(240).count(), 60);
    }
}
