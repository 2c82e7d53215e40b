// SPDX-License-Identifier: Apache-2.0
//! The image check of `ENCLAVE_START`: the EIF is read from 8 MiB into the enclave's
//! memory (the donated regions, concatenated in the order they were added), validated and
//! measured, as the Nitro hypervisor does before it boots anything.

use std::ops::Range;

use ne_abi::uapi::EIF_LOAD_OFFSET;
use ne_device::MemRegion;
use ne_eif::format::{HEADER_SIZE, SECTION_HEADER_SIZE};
use ne_eif::{read_header, Eif, EifError, Measurements, SectionType};
use thiserror::Error;

use crate::memory::{MemoryError, ParentMemory};

/// Why there is no valid image in an enclave's memory.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The enclave's memory is too small to hold an EIF header at 8 MiB.
    #[error("Enclave memory ({size} bytes) leaves no room for an EIF at 8 MiB")]
    NoRoom {
        /// The enclave's memory size.
        size: u64,
    },
    /// The header claims more bytes than follow it in enclave memory.
    #[error(
        "The EIF claims {claimed} bytes, but only {available} follow its start in enclave memory"
    )]
    TooLarge {
        /// The size its header and section table give.
        claimed: u64,
        /// Bytes of enclave memory from 8 MiB to the end.
        available: u64,
    },
    /// The section table is empty or its sizes overflow.
    #[error("The EIF's section table is empty or overflows")]
    SectionTable,
    /// The bytes are not a valid EIF.
    #[error("Invalid EIF")]
    Eif(#[from] EifError),
    /// Reading enclave memory failed.
    #[error("Enclave memory cannot be read")]
    Memory(#[from] MemoryError),
}

/// A validated image read from an enclave's memory: its bytes, where its sections are,
/// and its measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveImage {
    bytes: Vec<u8>,
    kernel: Range<usize>,
    cmdline: Range<usize>,
    ramdisks: Vec<Range<usize>>,
    /// PCR0, PCR1 and PCR2.
    pub measurements: Measurements,
    /// The metadata's image name, if any.
    pub name: Option<String>,
    /// Whether the kernel is an arm64 `Image`.
    pub arm64: bool,
}

impl EnclaveImage {
    /// Validates `bytes` as an EIF and measures it.
    pub fn parse(bytes: Vec<u8>) -> Result<EnclaveImage, EifError> {
        let eif = Eif::parse(&bytes)?;
        let data = |offset: u64, len: usize| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX) + SECTION_HEADER_SIZE;
            start..start + len
        };
        let mut kernel = 0..0;
        let mut cmdline = 0..0;
        let mut ramdisks = Vec::new();
        for section in eif.sections() {
            let range = data(section.offset, section.data.len());
            match section.kind {
                SectionType::Kernel => kernel = range,
                SectionType::Cmdline => cmdline = range,
                SectionType::Ramdisk => ramdisks.push(range),
                _ => {}
            }
        }
        let measurements = eif.measurements();
        let name = eif.metadata().ok().flatten().map(|m| m.image_name);
        let arm64 = eif.is_arm64();
        Ok(EnclaveImage {
            bytes,
            kernel,
            cmdline,
            ramdisks,
            measurements,
            name,
            arm64,
        })
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The kernel section.
    pub fn kernel(&self) -> &[u8] {
        self.bytes.get(self.kernel.clone()).unwrap_or_default()
    }

    /// The kernel command line, without trailing NULs.
    pub fn cmdline(&self) -> &[u8] {
        let cmdline = self.bytes.get(self.cmdline.clone()).unwrap_or_default();
        let len = cmdline.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
        cmdline.get(..len).unwrap_or_default()
    }

    /// The ramdisks, in order: booted as one initrd, concatenated.
    pub fn ramdisks(&self) -> impl Iterator<Item = &[u8]> {
        self.ramdisks
            .iter()
            .map(|range| self.bytes.get(range.clone()).unwrap_or_default())
    }
}

/// An enclave's memory: the donated regions of parent RAM, concatenated in order.
#[derive(Clone, Copy, Debug)]
pub struct EnclaveMemory<'a> {
    memory: &'a ParentMemory,
    regions: &'a [MemRegion],
}

impl<'a> EnclaveMemory<'a> {
    /// The memory made of `regions` of `memory`.
    pub fn new(memory: &'a ParentMemory, regions: &'a [MemRegion]) -> Self {
        EnclaveMemory { memory, regions }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.size))
    }

    /// Reads `buf.len()` bytes at `offset` of enclave memory.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let mut done = 0usize;
        let mut region_start = 0u64;
        for region in self.regions {
            let region_end = region_start.saturating_add(region.size);
            while done < buf.len() {
                let at = offset.saturating_add(done as u64);
                if at >= region_end {
                    break;
                }
                let within = at - region_start;
                let len = usize::try_from(region.size - within)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - done);
                let piece = buf.get_mut(done..done + len).unwrap_or_default();
                self.memory.read(region.paddr + within, piece)?;
                done += len;
            }
            region_start = region_end;
        }
        if done < buf.len() {
            return Err(MemoryError::Unmapped {
                gpa: offset.saturating_add(done as u64),
            });
        }
        Ok(())
    }
}

/// Reads, validates and measures the EIF at 8 MiB of the enclave memory made of
/// `regions` of `memory`. Reads the header first and then exactly the size it declares,
/// never more than the enclave's memory holds.
pub fn load_image(
    memory: &ParentMemory,
    regions: &[MemRegion],
) -> Result<EnclaveImage, ImageError> {
    let enclave = EnclaveMemory::new(memory, regions);
    let size = enclave.size();
    let available = size.saturating_sub(EIF_LOAD_OFFSET);
    if available < HEADER_SIZE as u64 {
        return Err(ImageError::NoRoom { size });
    }
    let mut head = vec![0u8; HEADER_SIZE];
    enclave.read(EIF_LOAD_OFFSET, &mut head)?;
    let header = read_header(&head)?;
    let claimed = header.image_len().ok_or(ImageError::SectionTable)?;
    if claimed > available {
        return Err(ImageError::TooLarge { claimed, available });
    }
    let len = usize::try_from(claimed).map_err(|_| ImageError::TooLarge { claimed, available })?;
    let mut bytes = vec![0u8; len];
    enclave.read(EIF_LOAD_OFFSET, &mut bytes)?;
    Ok(EnclaveImage::parse(bytes)?)
}
