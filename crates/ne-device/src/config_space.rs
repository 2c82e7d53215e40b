// SPDX-License-Identifier: Apache-2.0
//! The PCI configuration space: a type-0 header with BAR 3 and an MSI-X capability.
//!
//! Kept as 256 bytes plus a write mask (a set bit is writable by the driver), so every
//! width at every offset behaves the same way: reads return the bytes, writes change only
//! the writable bits, and bytes past 256 read 0 and ignore writes.

use ne_abi::pci;

use crate::msix;

/// Size of the configuration space the device implements (conventional PCI).
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of BAR 3: the registers (0x000–0x1EF), the MSI-X table (0x1000) and PBA (0x1800).
pub const BAR_SIZE: u64 = 0x2000;
/// Class code: base class 0x08 (system peripheral), subclass 0x80 (other), interface 0.
pub const CLASS_CODE: u32 = 0x08_80_00;
/// Offset of the MSI-X capability.
pub const MSIX_CAP_OFFSET: usize = 0x40;

/// Offset of the PCI Command register (not to be confused with `NE_COMMAND` in BAR 3).
pub const PCI_COMMAND: usize = 0x04;
/// Offset of the Status register.
pub const STATUS: usize = 0x06;
/// Offset of BAR 3.
pub const BAR3: usize = 0x10 + 4 * pci::BAR_INDEX as usize;
/// Offset of the MSI-X Message Control register.
pub const MSIX_CONTROL: usize = MSIX_CAP_OFFSET + 2;

/// Command bits the driver may set: memory space (bit 1), bus master (2), parity error
/// response (6), SERR# enable (8), INTx disable (10). The device has no I/O BAR, so I/O
/// space (bit 0) stays 0.
const COMMAND_WRITABLE: u16 = 0b0000_0101_0100_0110;
/// Status bit 4: the function has a capability list.
const STATUS_CAP_LIST: u16 = 0x0010;
/// Capability id of MSI-X.
const CAP_ID_MSIX: u8 = 0x11;
/// MSI-X control bit 15: MSI-X enable.
pub const MSIX_ENABLE: u16 = 0x8000;
/// MSI-X control bit 14: function mask.
pub const MSIX_FUNCTION_MASK: u16 = 0x4000;

/// The configuration space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
}

impl Default for ConfigSpace {
    fn default() -> Self {
        let mut space = ConfigSpace {
            bytes: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
        };
        space.set_u16(0x00, pci::VENDOR_ID);
        space.set_u16(0x02, pci::DEVICE_ID);
        space.set_u16(STATUS, STATUS_CAP_LIST);
        space.set_u32(0x08, CLASS_CODE << 8); // revision 0
        space.set_u16(0x2C, pci::VENDOR_ID); // subsystem vendor
        space.set_u16(0x2E, pci::DEVICE_ID); // subsystem
        space.set_u8(0x34, u8::try_from(MSIX_CAP_OFFSET).unwrap_or_default());
        // BAR 3: 32-bit, non-prefetchable memory; the low 13 bits are its size (8 KiB).
        space.set_writable_u32(BAR3, !(u32::try_from(BAR_SIZE).unwrap_or(0) - 1));
        space.set_writable_u16(PCI_COMMAND, COMMAND_WRITABLE);
        space.set_writable_u8(0x0C, 0xFF); // cache line size
        space.set_writable_u8(0x0D, 0xFF); // latency timer
        space.set_writable_u8(0x3C, 0xFF); // interrupt line; pin 0: no INTx
        space.set_u8(MSIX_CAP_OFFSET, CAP_ID_MSIX);
        space.set_u16(MSIX_CONTROL, pci::MSIX_VECTORS - 1);
        space.set_writable_u16(MSIX_CONTROL, MSIX_ENABLE | MSIX_FUNCTION_MASK);
        let bir = u32::from(pci::BAR_INDEX);
        let table = u32::try_from(msix::TABLE_OFFSET).unwrap_or_default();
        let pba = u32::try_from(msix::PBA_OFFSET).unwrap_or_default();
        space.set_u32(MSIX_CAP_OFFSET + 4, table | bir);
        space.set_u32(MSIX_CAP_OFFSET + 8, pba | bir);
        space
    }
}

impl ConfigSpace {
    /// The space holding `bytes`, if they differ from the power-on space only in writable
    /// bits; otherwise the offset of the first byte that does not.
    pub fn restore(bytes: &[u8; CONFIG_SPACE_SIZE]) -> Result<Self, usize> {
        let mut space = ConfigSpace::default();
        for (offset, (&value, (byte, &mask))) in bytes
            .iter()
            .zip(space.bytes.iter_mut().zip(space.writable.iter()))
            .enumerate()
        {
            if (value ^ *byte) & !mask != 0 {
                return Err(offset);
            }
            *byte = value;
        }
        Ok(space)
    }

    /// Reads `data.len()` bytes at `offset`; bytes past the space read 0.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = at(offset, i)
                .and_then(|at| self.bytes.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Writes `data` at `offset`, changing only writable bits.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let Some(at) = at(offset, i) else { continue };
            if let (Some(byte), Some(&mask)) = (self.bytes.get_mut(at), self.writable.get(at)) {
                // Flip exactly the writable bits that differ.
                *byte ^= (*byte ^ value) & mask;
            }
        }
    }

    /// The 16-bit register at `offset`.
    pub fn u16_at(&self, offset: usize) -> u16 {
        let mut bytes = [0; 2];
        self.read(offset as u64, &mut bytes);
        u16::from_le_bytes(bytes)
    }

    /// Whether the driver enabled MSI-X and did not mask the whole function.
    pub fn msix_open(&self) -> bool {
        let control = self.u16_at(MSIX_CONTROL);
        control & MSIX_ENABLE != 0 && control & MSIX_FUNCTION_MASK == 0
    }

    fn set_u8(&mut self, offset: usize, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    fn set_u16(&mut self, offset: usize, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    fn set_u32(&mut self, offset: usize, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    fn set_bytes(&mut self, offset: usize, value: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(offset..offset + value.len()) {
            dst.copy_from_slice(value);
        }
    }

    fn set_writable_u8(&mut self, offset: usize, mask: u8) {
        self.set_writable(offset, &[mask]);
    }

    fn set_writable_u16(&mut self, offset: usize, mask: u16) {
        self.set_writable(offset, &mask.to_le_bytes());
    }

    fn set_writable_u32(&mut self, offset: usize, mask: u32) {
        self.set_writable(offset, &mask.to_le_bytes());
    }

    fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        if let Some(dst) = self.writable.get_mut(offset..offset + mask.len()) {
            dst.copy_from_slice(mask);
        }
    }
}

/// The config-space index of byte `i` of an access at `offset` (the space's `get` then
/// refuses one past its end).
fn at(offset: u64, i: usize) -> Option<usize> {
    usize::try_from(offset).ok()?.checked_add(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bar3_sizing_probe_reads_size_mask() {
        let mut space = ConfigSpace::default();
        space.write(BAR3 as u64, &[0xFF; 4]);
        let mut value = [0; 4];
        space.read(BAR3 as u64, &mut value);
        assert_eq!(u32::from_le_bytes(value), 0xFFFF_E000);
    }
}
