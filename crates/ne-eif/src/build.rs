// SPDX-License-Identifier: Apache-2.0
//! Writing an EIF from a kernel, a command line and ramdisks, laid out as `eif_build`
//! lays it out: kernel, cmdline, metadata, ramdisks.

use crate::format::{
    section_header, Header, SectionType, DEFAULT_CPUS, DEFAULT_MEM, HEADER_SIZE, MAX_SECTIONS,
    VERSION,
};
use crate::measure::{measure, Measurements};
use crate::metadata::Metadata;

/// An image to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EifBuilder {
    /// The kernel.
    pub kernel: Vec<u8>,
    /// The kernel command line (written without a NUL).
    pub cmdline: String,
    /// The ramdisks; the first is the bootstrap.
    pub ramdisks: Vec<Vec<u8>>,
    /// The metadata section.
    pub metadata: Metadata,
    /// Header flags ([`crate::format::FLAG_ARCH_ARM64`] for an arm64 kernel).
    pub flags: u16,
}

/// Why an image cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No ramdisk: an enclave needs at least one.
    #[error("An EIF needs at least one ramdisk")]
    NoRamdisk,
    /// More ramdisks than the section table holds.
    #[error("An EIF holds at most {} ramdisks", MAX_SECTIONS - 3)]
    TooManyRamdisks,
    /// The command line contains a NUL byte.
    #[error("The command line contains a NUL byte")]
    NulInCmdline,
    /// The signature section is not one nitro-cli reads.
    #[error("The signature section is not valid: {0}")]
    Signature(String),
}

impl EifBuilder {
    /// Writes the image, returning its bytes and measurements.
    pub fn build(&self) -> Result<(Vec<u8>, Measurements), BuildError> {
        self.write(None)
    }

    /// Writes the image with `signature` as its signature section (last, where nitro-cli
    /// puts it), returning its bytes and measurements, PCR8 included.
    pub fn build_signed(&self, signature: &[u8]) -> Result<(Vec<u8>, Measurements), BuildError> {
        self.write(Some(signature))
    }

    fn write(&self, signature: Option<&[u8]>) -> Result<(Vec<u8>, Measurements), BuildError> {
        if self.ramdisks.is_empty() {
            return Err(BuildError::NoRamdisk);
        }
        if self.ramdisks.len() > MAX_SECTIONS - 3 {
            return Err(BuildError::TooManyRamdisks);
        }
        if self.cmdline.contains('\0') {
            return Err(BuildError::NulInCmdline);
        }
        // serde_json cannot fail on these plain string and Value fields.
        let metadata = serde_json::to_vec(&self.metadata).unwrap_or_default();
        let mut sections: Vec<(SectionType, &[u8])> = vec![
            (SectionType::Kernel, &self.kernel),
            (SectionType::Cmdline, self.cmdline.as_bytes()),
            (SectionType::Metadata, &metadata),
        ];
        sections.extend(
            self.ramdisks
                .iter()
                .map(|r| (SectionType::Ramdisk, r.as_slice())),
        );
        if let Some(signature) = signature {
            sections.push((SectionType::Signature, signature));
        }

        let image = assemble(
            Header {
                version: VERSION,
                flags: self.flags,
                default_mem: DEFAULT_MEM,
                default_cpus: DEFAULT_CPUS,
                num_sections: 0,
                section_offsets: [0; MAX_SECTIONS],
                section_sizes: [0; MAX_SECTIONS],
                crc32: 0,
            },
            &sections,
        );
        let mut measurements = measure(
            &self.kernel,
            self.cmdline.as_bytes(),
            self.ramdisks.iter().map(Vec::as_slice),
        );
        if let Some(signature) = signature {
            measurements.pcr8 =
                Some(crate::signature::pcr8(signature).map_err(BuildError::Signature)?);
        }
        Ok((image, measurements))
    }
}

/// The file of `sections`, in order, under a header like `template` (its version, flags
/// and defaults; the table and CRC are computed).
pub(crate) fn assemble(template: Header, sections: &[(SectionType, &[u8])]) -> Vec<u8> {
    let mut header = Header {
        num_sections: u16::try_from(sections.len()).unwrap_or(u16::MAX),
        section_offsets: [0; MAX_SECTIONS],
        section_sizes: [0; MAX_SECTIONS],
        crc32: 0,
        ..template
    };
    let mut body = Vec::new();
    let slots = header
        .section_offsets
        .iter_mut()
        .zip(header.section_sizes.iter_mut());
    for ((offset, size), (kind, data)) in slots.zip(sections.iter()) {
        *offset = (HEADER_SIZE + body.len()) as u64;
        *size = data.len() as u64;
        body.extend_from_slice(&section_header(*kind, data.len() as u64));
        body.extend_from_slice(data);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header.encode()[..HEADER_SIZE - 4]);
    crc.update(&body);
    header.crc32 = crc.finalize();
    let mut image = header.encode().to_vec();
    image.extend_from_slice(&body);
    image
}
