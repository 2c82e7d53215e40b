// SPDX-License-Identifier: Apache-2.0
//! Reading and validating an EIF held in memory.

use thiserror::Error;

use crate::format::{
    decode_section_header, Header, SectionType, CRC_OFFSET, HEADER_SIZE, MAGIC, MAX_SECTIONS,
    SECTION_HEADER_SIZE,
};
use crate::measure::{measure, Measurements, Pcr};
use crate::metadata::Metadata;

/// What is wrong with an image.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EifError {
    /// The CRC in the header does not match the contents.
    #[error("CRC mismatch: the header says {stored:#010x}, the contents give {computed:#010x}")]
    Crc {
        /// The header's CRC.
        stored: u32,
        /// The CRC of the contents.
        computed: u32,
    },
    /// A section type appears more often than allowed.
    #[error("The image has more than one {0} section")]
    DuplicateSection(&'static str),
    /// The section table and the sections disagree, or sections do not follow each other.
    #[error("Section {index}: {reason}")]
    Layout {
        /// The section's index in the table.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The first four bytes are not `.eif`.
    #[error("Not an EIF: the magic is {0:02x?}, not \".eif\"")]
    Magic([u8; 4]),
    /// The signature section is not the CBOR nitro-cli writes, or its certificate is not
    /// a PEM X.509 certificate.
    #[error("The signature section is not valid: {0}")]
    Signature(String),
    /// The metadata section is not the JSON object nitro-cli expects.
    #[error("The metadata section is not valid: {0}")]
    Metadata(String),
    /// A required section is missing.
    #[error("The image has no {0} section")]
    MissingSection(&'static str),
    /// The section count is 0 or above 32.
    #[error("The header declares {0} sections (1 to 32 are possible)")]
    SectionCount(u16),
    /// The file is shorter than its header or its sections.
    #[error("The image is truncated: {needed} bytes needed, {available} present")]
    Truncated {
        /// Bytes the header and table call for.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// Bytes follow the last section.
    #[error("{0} bytes follow the last section")]
    TrailingBytes(u64),
    /// A section of an unknown type.
    #[error("Section {index} has unknown type {kind}")]
    UnknownSection {
        /// The section's index.
        index: usize,
        /// Its type value.
        kind: u16,
    },
    /// The version is not one this crate reads.
    #[error("EIF version {0} is not supported (1 to 4 are)")]
    Version(u16),
}

/// One section of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section<'a> {
    /// What it holds.
    pub kind: SectionType,
    /// Its section-header flags.
    pub flags: u16,
    /// Where its section header starts in the file.
    pub offset: u64,
    /// Its data.
    pub data: &'a [u8],
}

/// A validated image, borrowing the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eif<'a> {
    header: Header,
    sections: Vec<Section<'a>>,
    computed_crc: u32,
    /// PCR8, measured once at parse from the signature section's certificate.
    pcr8: Option<Pcr>,
}

impl<'a> Eif<'a> {
    /// Reads and validates `bytes` as a whole EIF file: magic, version, section count, a
    /// section table that matches back-to-back sections ending at the file's end, known
    /// section types, exactly one kernel and command line, at least one ramdisk, at most
    /// one signature and metadata, the CRC, and (when present) the metadata JSON.
    pub fn parse(bytes: &'a [u8]) -> Result<Eif<'a>, EifError> {
        let header = read_header(bytes)?;
        let used = usize::from(header.num_sections);
        if used == 0 || used > MAX_SECTIONS {
            return Err(EifError::SectionCount(header.num_sections));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(bytes.get(..CRC_OFFSET).unwrap_or_default());
        let mut sections = Vec::with_capacity(used);
        let mut expected_offset = HEADER_SIZE as u64;
        for index in 0..used {
            let section = read_section(bytes, &header, index, expected_offset)?;
            let header_at = usize::try_from(section.offset).unwrap_or(usize::MAX);
            crc.update(
                bytes
                    .get(header_at..header_at + SECTION_HEADER_SIZE)
                    .unwrap_or_default(),
            );
            crc.update(section.data);
            expected_offset =
                section.offset + SECTION_HEADER_SIZE as u64 + section.data.len() as u64;
            sections.push(section);
        }
        let total = bytes.len() as u64;
        if expected_offset < total {
            return Err(EifError::TrailingBytes(total - expected_offset));
        }
        let computed_crc = crc.finalize();
        if computed_crc != header.crc32 {
            return Err(EifError::Crc {
                stored: header.crc32,
                computed: computed_crc,
            });
        }
        let mut eif = Eif {
            header,
            sections,
            computed_crc,
            pcr8: None,
        };
        eif.check_section_counts()?;
        eif.metadata()?;
        eif.pcr8 = eif
            .first(SectionType::Signature)
            .map(|section| crate::signature::pcr8(section).map_err(EifError::Signature))
            .transpose()?;
        Ok(eif)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The sections, in file order.
    pub fn sections(&self) -> &[Section<'a>] {
        &self.sections
    }

    /// The CRC of the contents (equal to the header's: [`Eif::parse`] checked it).
    pub fn crc32(&self) -> u32 {
        self.computed_crc
    }

    /// The kernel.
    pub fn kernel(&self) -> &'a [u8] {
        self.first(SectionType::Kernel).unwrap_or_default()
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> &'a [u8] {
        self.first(SectionType::Cmdline).unwrap_or_default()
    }

    /// The ramdisks, in file order.
    pub fn ramdisks(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.of(SectionType::Ramdisk)
    }

    /// Whether the image carries a signature section.
    pub fn is_signed(&self) -> bool {
        self.first(SectionType::Signature).is_some()
    }

    /// Whether the kernel is for arm64.
    pub fn is_arm64(&self) -> bool {
        self.header.flags & crate::format::FLAG_ARCH_ARM64 != 0
    }

    /// The metadata, if the image has a metadata section.
    pub fn metadata(&self) -> Result<Option<Metadata>, EifError> {
        self.first(SectionType::Metadata)
            .map(|json| serde_json::from_slice(json).map_err(|e| EifError::Metadata(e.to_string())))
            .transpose()
    }

    /// PCR0, PCR1 and PCR2 of the image, and PCR8 if it is signed.
    pub fn measurements(&self) -> Measurements {
        let mut measurements = measure(self.kernel(), self.cmdline(), self.ramdisks());
        measurements.pcr8 = self.pcr8;
        measurements
    }

    /// Whether the image's signature verifies: its certificate's key signed `pcr0`, the
    /// image's PCR0 (from [`Eif::measurements`]). `None` if it is not signed, `Err` if the
    /// signature cannot be checked at all.
    pub fn signature_check(&self, pcr0: &Pcr) -> Option<Result<bool, String>> {
        let section = self.first(SectionType::Signature)?;
        Some(crate::signature::verify(section, pcr0))
    }

    /// The image signed with the P-384 key `key_pem` (PEM) of the certificate
    /// `certificate_pem`, as nitro-cli's `sign-eif` signs: the same sections and header,
    /// any old signature replaced by one over PCR0 (which a signature does not change).
    pub fn signed(&self, certificate_pem: &[u8], key_pem: &[u8]) -> Result<Vec<u8>, EifError> {
        let pcr0 = self.measurements().pcr0;
        let section =
            crate::signature::sign(&pcr0, certificate_pem, key_pem).map_err(EifError::Signature)?;
        let mut sections: Vec<(SectionType, &[u8])> = self
            .sections
            .iter()
            .filter(|section| section.kind != SectionType::Signature)
            .map(|section| (section.kind, section.data))
            .collect();
        sections.push((SectionType::Signature, &section));
        Ok(crate::build::assemble(self.header.clone(), &sections))
    }

    /// PCR8: the measure of the signing certificate, if the image is signed.
    pub fn pcr8(&self) -> Option<Pcr> {
        self.pcr8
    }

    fn of(&self, kind: SectionType) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.sections
            .iter()
            .filter(move |section| section.kind == kind)
            .map(|section| section.data)
    }

    fn first(&self, kind: SectionType) -> Option<&'a [u8]> {
        self.of(kind).next()
    }

    fn check_section_counts(&self) -> Result<(), EifError> {
        let count = |kind| self.of(kind).count();
        for (kind, min, max) in [
            (SectionType::Kernel, 1, 1),
            (SectionType::Cmdline, 1, 1),
            (SectionType::Ramdisk, 1, MAX_SECTIONS),
            (SectionType::Signature, 0, 1),
            (SectionType::Metadata, 0, 1),
        ] {
            let n = count(kind);
            if n < min {
                return Err(EifError::MissingSection(kind.name()));
            }
            if n > max {
                return Err(EifError::DuplicateSection(kind.name()));
            }
        }
        Ok(())
    }
}

/// Reads the header, checking length, magic and version.
pub fn read_header(bytes: &[u8]) -> Result<Header, EifError> {
    let Some(head) = bytes.get(..HEADER_SIZE) else {
        return Err(EifError::Truncated {
            needed: HEADER_SIZE as u64,
            available: bytes.len() as u64,
        });
    };
    let mut header_bytes = [0; HEADER_SIZE];
    header_bytes.copy_from_slice(head);
    let mut magic = [0; 4];
    magic.copy_from_slice(&header_bytes[..4]);
    if magic != MAGIC {
        return Err(EifError::Magic(magic));
    }
    let header = Header::decode(&header_bytes);
    if header.version == 0 || header.version > crate::format::VERSION {
        return Err(EifError::Version(header.version));
    }
    Ok(header)
}

fn read_section<'a>(
    bytes: &'a [u8],
    header: &Header,
    index: usize,
    expected: u64,
) -> Result<Section<'a>, EifError> {
    let layout = |reason: String| EifError::Layout { index, reason };
    let (Some(&offset), Some(&size)) = (
        header.section_offsets.get(index),
        header.section_sizes.get(index),
    ) else {
        return Err(layout(format!(
            "index {index} is beyond {MAX_SECTIONS} sections"
        )));
    };
    if offset != expected {
        return Err(layout(format!(
            "starts at {offset}, the previous section ends at {expected}"
        )));
    }
    let data_at = offset + SECTION_HEADER_SIZE as u64;
    let end = data_at
        .checked_add(size)
        .ok_or_else(|| layout("size overflows".to_owned()))?;
    if end > bytes.len() as u64 {
        return Err(EifError::Truncated {
            needed: end,
            available: bytes.len() as u64,
        });
    }
    let index_of = |at: u64| usize::try_from(at).map_err(|_| layout("offset overflows".to_owned()));
    let (offset_us, data_us, end_us) = (index_of(offset)?, index_of(data_at)?, index_of(end)?);
    let (kind, flags, declared) =
        decode_section_header(bytes.get(offset_us..data_us).unwrap_or_default());
    if declared != size {
        return Err(layout(format!(
            "its header says {declared} bytes, the table {size}"
        )));
    }
    let kind = SectionType::from_wire(kind).ok_or(EifError::UnknownSection { index, kind })?;
    Ok(Section {
        kind,
        flags,
        offset,
        data: bytes.get(data_us..end_us).unwrap_or_default(),
    })
}
