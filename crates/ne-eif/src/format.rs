// SPDX-License-Identifier: Apache-2.0
//! The EIF layout: a 548-byte big-endian header, then sections, each behind a 12-byte
//! section header.
//!
//! ```text
//! header:  magic ".eif" (4) | version u16 | flags u16 | default_mem u64 | default_cpus u64
//!          | reserved u16 | num_sections u16 | section_offsets [u64; 32]
//!          | section_sizes [u64; 32] | unused u32 | eif_crc32 u32
//! section: section_type u16 | flags u16 | section_size u64 | data
//! ```
//!
//! `section_offsets` point at section headers, `section_sizes` count data bytes. The CRC
//! (CRC-32/ISO-HDLC) covers the header up to `eif_crc32`, then every section header and
//! its data in file order.

/// The magic at the start of every EIF: `.eif`.
pub const MAGIC: [u8; 4] = *b".eif";
/// The format version this crate writes.
pub const VERSION: u16 = 4;
/// Bytes of the file header.
pub const HEADER_SIZE: usize = 548;
/// Bytes of a section header.
pub const SECTION_HEADER_SIZE: usize = 12;
/// Slots in the header's section table.
pub const MAX_SECTIONS: usize = 32;
/// Header flag: the kernel is for arm64.
pub const FLAG_ARCH_ARM64: u16 = 0x1;

/// Whether `kernel` is an arm64 `Image` (one an EIF marks with [`FLAG_ARCH_ARM64`]): the
/// magic `ARM\x64` at byte 0x38 of its header.
pub fn is_arm64_image(kernel: &[u8]) -> bool {
    kernel.get(0x38..0x3c) == Some(b"ARM\x64".as_slice())
}
/// The default memory `eif_build` records (1 GiB); informational.
pub const DEFAULT_MEM: u64 = 1 << 30;
/// The default vCPU count `eif_build` records; informational.
pub const DEFAULT_CPUS: u64 = 2;

/// Offset of `eif_crc32` in the header: everything before it is covered by the CRC.
pub(crate) const CRC_OFFSET: usize = HEADER_SIZE - 4;
const OFFSETS_AT: usize = 4 + 2 + 2 + 8 + 8 + 2 + 2;
const SIZES_AT: usize = OFFSETS_AT + 8 * MAX_SECTIONS;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum SectionType {
    /// The enclave's kernel (bzImage on x86, Image on arm64).
    Kernel = 1,
    /// The kernel command line, without a terminating NUL.
    Cmdline = 2,
    /// An initramfs; the first is the bootstrap, the rest the application.
    Ramdisk = 3,
    /// A COSE signature over the PCRs, with the signing certificate.
    Signature = 4,
    /// JSON describing how the image was built.
    Metadata = 5,
}

impl SectionType {
    /// The type a wire value names, if any (0 is "invalid").
    pub fn from_wire(value: u16) -> Option<SectionType> {
        [
            SectionType::Kernel,
            SectionType::Cmdline,
            SectionType::Ramdisk,
            SectionType::Signature,
            SectionType::Metadata,
        ]
        .into_iter()
        .find(|kind| *kind as u16 == value)
    }

    /// The section's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SectionType::Kernel => "kernel",
            SectionType::Cmdline => "cmdline",
            SectionType::Ramdisk => "ramdisk",
            SectionType::Signature => "signature",
            SectionType::Metadata => "metadata",
        }
    }
}

/// The file header, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Flags: [`FLAG_ARCH_ARM64`].
    pub flags: u16,
    /// Default memory, informational.
    pub default_mem: u64,
    /// Default vCPUs, informational.
    pub default_cpus: u64,
    /// How many section-table entries are used.
    pub num_sections: u16,
    /// Where each section header starts.
    pub section_offsets: [u64; MAX_SECTIONS],
    /// How many data bytes each section has.
    pub section_sizes: [u64; MAX_SECTIONS],
    /// The CRC the file claims.
    pub crc32: u32,
}

fn be_u16(bytes: &[u8], at: usize) -> u16 {
    let mut word = [0; 2];
    word.copy_from_slice(bytes.get(at..at + 2).unwrap_or(&[0; 2]));
    u16::from_be_bytes(word)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(bytes.get(at..at + 8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(word)
}

impl Header {
    /// Decodes the header from the first [`HEADER_SIZE`] bytes (the caller checks the
    /// length and the magic).
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Header {
        let mut section_offsets = [0; MAX_SECTIONS];
        let mut section_sizes = [0; MAX_SECTIONS];
        for (i, (offset, size)) in section_offsets
            .iter_mut()
            .zip(section_sizes.iter_mut())
            .enumerate()
        {
            *offset = be_u64(bytes, OFFSETS_AT + 8 * i);
            *size = be_u64(bytes, SIZES_AT + 8 * i);
        }
        Header {
            version: be_u16(bytes, 4),
            flags: be_u16(bytes, 6),
            default_mem: be_u64(bytes, 8),
            default_cpus: be_u64(bytes, 16),
            num_sections: be_u16(bytes, 26),
            section_offsets,
            section_sizes,
            crc32: be_u32(bytes, CRC_OFFSET),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0; HEADER_SIZE];
        put(&mut out, 0, &MAGIC);
        put(&mut out, 4, &self.version.to_be_bytes());
        put(&mut out, 6, &self.flags.to_be_bytes());
        put(&mut out, 8, &self.default_mem.to_be_bytes());
        put(&mut out, 16, &self.default_cpus.to_be_bytes());
        // 24..26: reserved, zero.
        put(&mut out, 26, &self.num_sections.to_be_bytes());
        for (i, (offset, size)) in self
            .section_offsets
            .iter()
            .zip(&self.section_sizes)
            .enumerate()
        {
            put(&mut out, OFFSETS_AT + 8 * i, &offset.to_be_bytes());
            put(&mut out, SIZES_AT + 8 * i, &size.to_be_bytes());
        }
        // CRC_OFFSET - 4..CRC_OFFSET: unused, zero.
        put(&mut out, CRC_OFFSET, &self.crc32.to_be_bytes());
        out
    }

    /// How many bytes the file spans according to its section table: the end of the last
    /// section. `None` if the table is empty or overflows.
    pub fn image_len(&self) -> Option<u64> {
        let used = usize::from(self.num_sections).min(MAX_SECTIONS);
        self.section_offsets
            .iter()
            .zip(&self.section_sizes)
            .take(used)
            .map(|(offset, size)| {
                offset
                    .checked_add(SECTION_HEADER_SIZE as u64)?
                    .checked_add(*size)
            })
            .try_fold(0u64, |end, section_end| section_end.map(|e| end.max(e)))
            .filter(|&end| end > 0)
    }
}

/// Encodes a section header.
pub(crate) fn section_header(kind: SectionType, size: u64) -> [u8; SECTION_HEADER_SIZE] {
    let mut out = [0; SECTION_HEADER_SIZE];
    put(&mut out, 0, &(kind as u16).to_be_bytes());
    put(&mut out, 4, &size.to_be_bytes());
    out
}

/// Copies `bytes` into `out` at `at`, as far as `out` goes.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Decodes a section header: type, flags, size.
pub(crate) fn decode_section_header(bytes: &[u8]) -> (u16, u16, u64) {
    (be_u16(bytes, 0), be_u16(bytes, 2), be_u64(bytes, 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_arm64_image_is_recognised_by_its_header_magic() {
        let mut image = vec![0u8; 0x40];
        assert!(!is_arm64_image(&image));
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(is_arm64_image(&image));
        assert!(!is_arm64_image(&image[..0x3a]), "a truncated header");
    }
}
