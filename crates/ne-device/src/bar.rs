// SPDX-License-Identifier: Apache-2.0
//! BAR 3 accesses: the registers, the MSI-X table and the PBA.
//!
//! An access of any length at any offset is split into the parts that fall on each area;
//! each part acts on its area, and bytes that fall on no area (reserved bytes) read 0 and
//! ignore writes. An access that does not fit inside the BAR is ignored whole (reads
//! return zeros). Nothing here can panic or fail on the driver's input.

use std::ops::Range;

use ne_abi::regs::{self, Register};

use crate::config_space::BAR_SIZE;
use crate::error::Error;
use crate::events::NeEvents;
use crate::hypervisor::Hypervisor;
use crate::interrupt::Interrupt;
use crate::msix;
use crate::NePciDevice;

/// A part of BAR 3 with behaviour of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Area {
    Register(Register),
    MsixTable,
    MsixPba,
}

impl Area {
    const ALL: [Area; 8] = [
        Area::Register(Register::Enable),
        Area::Register(Register::Version),
        Area::Register(Register::Command),
        Area::Register(Register::EvtCnt),
        Area::Register(Register::SendData),
        Area::Register(Register::RecvData),
        Area::MsixTable,
        Area::MsixPba,
    ];

    #[inline]
    fn range(self) -> Range<u64> {
        match self {
            Area::Register(register) => register.range(),
            Area::MsixTable => msix::TABLE_OFFSET..msix::TABLE_OFFSET + msix::TABLE_BYTES as u64,
            Area::MsixPba => msix::PBA_OFFSET..msix::PBA_OFFSET + msix::PBA_BYTES as u64,
        }
    }
}

/// Where an access and an area overlap: the byte offset inside the area, and the indices
/// of the access's buffer that fall on it.
#[inline]
fn overlap(area: Range<u64>, access: &Range<u64>) -> Option<(usize, Range<usize>)> {
    let start = area.start.max(access.start);
    let end = area.end.min(access.end);
    if start >= end {
        return None;
    }
    let at = usize::try_from(start - area.start).ok()?;
    let from = usize::try_from(start - access.start).ok()?;
    let to = usize::try_from(end - access.start).ok()?;
    Some((at, from..to))
}

/// The one area an access lies wholly inside, and the access's offset in it — the common
/// case (a driver's aligned register and mailbox accesses), served without splitting.
#[inline]
fn sole_area(access: &Range<u64>) -> Option<(Area, usize)> {
    Area::ALL.into_iter().find_map(|area| {
        let range = area.range();
        let inside =
            range.start <= access.start && access.start < access.end && access.end <= range.end;
        inside
            .then(|| usize::try_from(access.start - range.start).ok())
            .flatten()
            .map(|at| (area, at))
    })
}

/// The BAR bytes an access covers, if it fits in the BAR. An empty access covers nothing,
/// so it touches no area and counts as invalid.
fn access_range(offset: u64, len: usize) -> Option<Range<u64>> {
    let end = offset.checked_add(u64::try_from(len).ok()?)?;
    (end <= BAR_SIZE).then_some(offset..end)
}

/// Copies `source[at..]` into `dest`, as far as both go.
fn copy_out(source: &[u8], at: usize, dest: &mut [u8]) {
    let tail = source.get(at..).unwrap_or_default();
    let len = tail.len().min(dest.len());
    if let (Some(dst), Some(src)) = (dest.get_mut(..len), tail.get(..len)) {
        dst.copy_from_slice(src);
    }
}

impl<I: Interrupt, H: Hypervisor, E: NeEvents> NePciDevice<I, H, E> {
    /// Reads `data.len()` bytes of BAR 3 at `offset`. Write-only and reserved bytes read 0;
    /// so does an access that does not fit in the BAR.
    pub fn read_bar(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(access) = access_range(offset, data.len()) else {
            self.events.invalid_access(offset, data.len());
            return;
        };
        if let Some((area, at)) = sole_area(&access) {
            self.read_area(area, at, data);
            return;
        }
        let mut touched = false;
        for area in Area::ALL {
            let Some((at, part)) = overlap(area.range(), &access) else {
                continue;
            };
            let Some(dest) = data.get_mut(part) else {
                continue;
            };
            touched = true;
            self.read_area(area, at, dest);
        }
        if !touched {
            self.events.invalid_access(offset, data.len());
        }
    }

    /// Reads `dest.len()` bytes of `area` from `at`.
    #[inline]
    fn read_area(&self, area: Area, at: usize, dest: &mut [u8]) {
        match area {
            Area::Register(Register::Enable) => {
                copy_out(&[u8::from(self.regs.enabled)], at, dest);
            }
            Area::Register(Register::Version) => {
                copy_out(&self.regs.version.to_le_bytes(), at, dest);
            }
            Area::Register(Register::Command) => {}
            Area::Register(Register::EvtCnt) => {
                let value = regs::evtcnt(self.regs.replies, self.regs.events);
                copy_out(&value.to_le_bytes(), at, dest);
            }
            Area::Register(Register::SendData) => copy_out(&self.regs.send, at, dest),
            Area::Register(Register::RecvData) => copy_out(&self.regs.recv, at, dest),
            Area::MsixTable => copy_out(self.msix.table_bytes(), at, dest),
            Area::MsixPba => copy_out(&self.msix.pba_bytes(), at, dest),
        }
    }

    /// Writes `data` to BAR 3 at `offset`. Read-only and reserved bytes ignore writes; an
    /// access that does not fit in the BAR is ignored. A write that covers `NE_COMMAND`
    /// rings the doorbell after every other byte of the access has landed.
    ///
    /// Fails only when the host's interrupt sink does.
    pub fn write_bar(&mut self, offset: u64, data: &[u8]) -> Result<(), Error<I::Error>> {
        let Some(access) = access_range(offset, data.len()) else {
            self.events.invalid_access(offset, data.len());
            return Ok(());
        };
        if let Some((Area::Register(Register::SendData), at)) = sole_area(&access) {
            // The payload, as `memcpy_toio` writes it: nothing else to do.
            merge(&mut self.regs.send, at, data);
            return Ok(());
        }
        let mut doorbell = None;
        let mut acted = false;
        let mut table_written = false;
        for area in Area::ALL {
            let Some((at, part)) = overlap(area.range(), &access) else {
                continue;
            };
            let Some(bytes) = data.get(part) else {
                continue;
            };
            match area {
                Area::Register(Register::Enable) => acted |= self.write_enable(bytes),
                Area::Register(Register::Version) => {
                    let mut value = self.regs.version.to_le_bytes();
                    merge(&mut value, at, bytes);
                    let selected = u16::from_le_bytes(value);
                    // Only the version the device speaks is echoed; any other reads 0.
                    self.regs.version = if selected == regs::VERSION_MAX {
                        selected
                    } else {
                        0
                    };
                    acted = true;
                }
                Area::Register(Register::Command) => {
                    let mut value = [0; 4];
                    merge(&mut value, at, bytes);
                    doorbell = Some(u32::from_le_bytes(value));
                    acted = true;
                }
                Area::Register(Register::SendData) => {
                    merge(&mut self.regs.send, at, bytes);
                    acted = true;
                }
                Area::MsixTable => {
                    self.msix.write_table(at, bytes);
                    table_written = true;
                    acted = true;
                }
                Area::Register(Register::EvtCnt | Register::RecvData) | Area::MsixPba => {}
            }
        }
        if !acted {
            self.events.invalid_access(offset, data.len());
        }
        if table_written {
            self.deliver_pending()?;
        }
        match doorbell {
            Some(value) => self.ring(value),
            None => Ok(()),
        }
    }

    /// `NE_ENABLE` written: 0 disables (tearing every slot down), 1 enables; other values
    /// are ignored. Returns whether the write meant anything.
    fn write_enable(&mut self, bytes: &[u8]) -> bool {
        match bytes.first().copied() {
            Some(regs::ENABLE_OFF) => {
                self.disable();
                true
            }
            Some(regs::ENABLE_ON) => {
                self.regs.enabled = true;
                true
            }
            _ => false,
        }
    }
}

/// Copies `bytes` into `dest` at `at`, as far as `dest` goes.
fn merge(dest: &mut [u8], at: usize, bytes: &[u8]) {
    let tail = dest.get_mut(at..).unwrap_or_default();
    let len = tail.len().min(bytes.len());
    if let (Some(dst), Some(src)) = (tail.get_mut(..len), bytes.get(..len)) {
        dst.copy_from_slice(src);
    }
}
