// SPDX-License-Identifier: Apache-2.0
//! The MSI-X table and pending-bit array of the device's two vectors (PCI Local Bus 3.0,
//! §6.8.2), kept in BAR 3 beside the registers.

use ne_abi::MsixVector;

/// Offset of the MSI-X table in BAR 3, clear of registers 0x000–0x1EF.
pub const TABLE_OFFSET: u64 = 0x1000;
/// Offset of the pending-bit array in BAR 3.
pub const PBA_OFFSET: u64 = 0x1800;
/// Bytes of one table entry: message address (8), data (4), vector control (4).
pub const ENTRY_BYTES: usize = 16;
/// Bytes of the table: two entries.
pub const TABLE_BYTES: usize = 2 * ENTRY_BYTES;
/// Bytes of the PBA: one QWORD holds both bits.
pub const PBA_BYTES: usize = 8;
/// Vector control bit 0: the vector is masked.
const VECTOR_CONTROL_MASKED: u8 = 0x01;
/// Byte of an entry that holds the vector-control mask bit.
const VECTOR_CONTROL_AT: usize = 12;

/// The table and pending bits. Entries start masked, as the PCI specification requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixTable {
    table: [u8; TABLE_BYTES],
    pending: [bool; 2],
}

impl Default for MsixTable {
    fn default() -> Self {
        let mut table = [0; TABLE_BYTES];
        for vector in MsixVector::ALL {
            if let Some(control) = table.get_mut(entry_start(vector) + VECTOR_CONTROL_AT) {
                *control = VECTOR_CONTROL_MASKED;
            }
        }
        MsixTable {
            table,
            pending: [false; 2],
        }
    }
}

fn entry_start(vector: MsixVector) -> usize {
    usize::from(vector.index()) * ENTRY_BYTES
}

impl MsixTable {
    /// A table holding `table`, nothing pending. Every byte of the table is writable by
    /// the driver, so any bytes are a valid table.
    pub fn from_bytes(table: [u8; TABLE_BYTES]) -> Self {
        MsixTable {
            table,
            pending: [false; 2],
        }
    }

    /// The table's bytes, as the driver reads them.
    pub fn table_bytes(&self) -> &[u8; TABLE_BYTES] {
        &self.table
    }

    /// The PBA's bytes: bit `n` of the first byte is vector `n`'s pending bit.
    pub fn pba_bytes(&self) -> [u8; PBA_BYTES] {
        let mut bytes = [0; PBA_BYTES];
        bytes[0] = u8::from(self.pending[0]) | (u8::from(self.pending[1]) << 1);
        bytes
    }

    /// Writes `data` at byte `at` of the table; bytes past the table are ignored.
    pub fn write_table(&mut self, at: usize, data: &[u8]) {
        let tail = self.table.get_mut(at..).unwrap_or_default();
        let len = data.len().min(tail.len());
        if let (Some(dst), Some(src)) = (tail.get_mut(..len), data.get(..len)) {
            dst.copy_from_slice(src);
        }
    }

    /// Whether the driver masked `vector` in its table entry.
    pub fn is_masked(&self, vector: MsixVector) -> bool {
        let control = self
            .table
            .get(entry_start(vector) + VECTOR_CONTROL_AT)
            .copied()
            .unwrap_or(VECTOR_CONTROL_MASKED);
        control & VECTOR_CONTROL_MASKED != 0
    }

    /// Whether `vector` waits for delivery.
    pub fn is_pending(&self, vector: MsixVector) -> bool {
        match vector {
            MsixVector::Reply => self.pending[0],
            MsixVector::Event => self.pending[1],
        }
    }

    /// Marks `vector` as waiting (or no longer waiting) for delivery.
    pub fn set_pending(&mut self, vector: MsixVector, pending: bool) {
        match vector {
            MsixVector::Reply => self.pending[0] = pending,
            MsixVector::Event => self.pending[1] = pending,
        }
    }
}
