// SPDX-License-Identifier: Apache-2.0
//! The parent's RAM as the hypervisor may read it: guest-physical ranges, each backed by a
//! file (the emulated parent's memfd, or the fd of a vfio-user client's DMA map) at an
//! offset. One view for both, so the image check and the VM backend never assume that a
//! guest-physical address is a file offset (q35 splits RAM at 2 GiB and 4 GiB; arm64
//! `virt` starts it at 1 GiB).
//!
//! Reads go through `pread`, not a mapping: a client's fd can be truncated under a
//! mapping, which would kill the reader with `SIGBUS`; `pread` returns an error instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use thiserror::Error;

/// Memory regions are aligned to, and multiples of, 2 MiB: nothing smaller can be donated.
const REGION_ALIGN_BYTES: u64 = ne_abi::uapi::MIN_MEM_REGION_SIZE;

/// Where a range of parent RAM lives.
#[derive(Clone, Debug)]
pub struct Backing {
    /// The file holding it (`None`: the range exists but cannot be read, e.g. a DMA map
    /// without an fd).
    pub file: Option<Arc<File>>,
    /// The offset in `file` of the range's first byte.
    pub offset: u64,
}

#[derive(Clone, Debug)]
struct Range_ {
    len: u64,
    backing: Backing,
}

/// Why parent memory could not be read.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// No range covers the address.
    #[error("Guest-physical address {gpa:#x} is not parent RAM")]
    Unmapped {
        /// The address.
        gpa: u64,
    },
    /// The range has no file to read.
    #[error("Parent RAM at {gpa:#x} has no file behind it")]
    NoBacking {
        /// The address.
        gpa: u64,
    },
    /// Reading the file failed.
    #[error("Reading {len} bytes of parent RAM at {gpa:#x} failed")]
    Read {
        /// The address.
        gpa: u64,
        /// How many bytes.
        len: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error("Writing {len} bytes of parent RAM at {gpa:#x} failed")]
    Write {
        /// The address.
        gpa: u64,
        /// How many bytes.
        len: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The parent's RAM: non-overlapping guest-physical ranges and their backing.
#[derive(Clone, Debug, Default)]
pub struct ParentMemory {
    ranges: BTreeMap<u64, Range_>,
}

/// Parent memory shared between whoever maps it (the vfio-user server) and whoever reads
/// it (the hypervisor).
pub type SharedMemory = Arc<RwLock<ParentMemory>>;

/// Reads a [`SharedMemory`], keeping its data if a writer panicked.
pub fn read_lock(memory: &SharedMemory) -> RwLockReadGuard<'_, ParentMemory> {
    memory.read().unwrap_or_else(PoisonError::into_inner)
}

impl ParentMemory {
    /// No RAM at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// RAM of `len` bytes at guest-physical 0, all of it `file` from offset 0.
    pub fn whole_file(file: Arc<File>, len: u64) -> Self {
        let mut memory = Self::new();
        memory.map(0, len, Some(file), 0);
        memory
    }

    /// Adds `len` bytes at `gpa` backed by `file` at `offset`, replacing any range it
    /// overlaps (a vfio-user client maps a range again when its layout changes); false if
    /// the range is empty or wraps.
    pub fn map(&mut self, gpa: u64, len: u64, file: Option<Arc<File>>, offset: u64) -> bool {
        let Some(end) = gpa.checked_add(len).filter(|_| len > 0) else {
            return false;
        };
        if offset.checked_add(len).is_none() {
            return false;
        }
        self.remove(gpa, end);
        self.ranges.insert(
            gpa,
            Range_ {
                len,
                backing: Backing { file, offset },
            },
        );
        true
    }

    /// Forgets every range that overlaps `len` bytes at `gpa`; false if that wraps.
    pub fn unmap(&mut self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.remove(gpa, end);
        true
    }

    /// Forgets every range.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    fn remove(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .ranges
            .range(..end)
            .filter(|&(&at, range)| at + range.len > start)
            .map(|(&at, _)| at)
            .collect();
        for at in overlapping {
            self.ranges.remove(&at);
        }
    }

    /// The RAM ranges a donated region may lie in: adjacent ranges merged, each shrunk to
    /// whole 2 MiB units.
    pub fn donatable_ranges(&self) -> Vec<Range<u64>> {
        let mut merged: Vec<Range<u64>> = Vec::new();
        for (&start, range) in &self.ranges {
            let end = start + range.len;
            match merged.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => merged.push(start..end),
            }
        }
        merged
            .into_iter()
            .map(|r| {
                r.start.div_ceil(REGION_ALIGN_BYTES) * REGION_ALIGN_BYTES
                    ..r.end / REGION_ALIGN_BYTES * REGION_ALIGN_BYTES
            })
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// The backing of the range holding `gpa`, its offset moved to `gpa`, and how many
    /// bytes of the range follow `gpa`.
    pub fn backing(&self, gpa: u64) -> Option<(Backing, u64)> {
        let (&start, range) = self.ranges.range(..=gpa).next_back()?;
        let within = gpa - start;
        (within < range.len).then(|| {
            (
                Backing {
                    file: range.backing.file.clone(),
                    offset: range.backing.offset + within,
                },
                range.len - within,
            )
        })
    }

    /// Reads `buf.len()` bytes at `gpa`, across ranges if they are adjacent.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.pieces(gpa, buf.len(), |file, offset, at, piece| {
            let bytes = buf.get_mut(piece).unwrap_or_default();
            file.read_exact_at(bytes, offset)
                .map_err(|source| MemoryError::Read {
                    gpa: at,
                    len: bytes.len(),
                    source,
                })
        })
    }

    /// Writes `buf` at `gpa`, across ranges if they are adjacent.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), MemoryError> {
        self.pieces(gpa, buf.len(), |file, offset, at, piece| {
            let bytes = buf.get(piece).unwrap_or_default();
            file.write_all_at(bytes, offset)
                .map_err(|source| MemoryError::Write {
                    gpa: at,
                    len: bytes.len(),
                    source,
                })
        })
    }

    /// Splits `len` bytes at `gpa` at range boundaries and calls `access` with each
    /// piece's file, file offset, address and range of the caller's buffer.
    fn pieces(
        &self,
        gpa: u64,
        len: usize,
        mut access: impl FnMut(&File, u64, u64, Range<usize>) -> Result<(), MemoryError>,
    ) -> Result<(), MemoryError> {
        let mut done = 0usize;
        while done < len {
            let at = gpa
                .checked_add(done as u64)
                .ok_or(MemoryError::Unmapped { gpa })?;
            let (backing, room) = self.backing(at).ok_or(MemoryError::Unmapped { gpa: at })?;
            let file = backing.file.ok_or(MemoryError::NoBacking { gpa: at })?;
            let piece = usize::try_from(room).unwrap_or(usize::MAX).min(len - done);
            access(&file, backing.offset, at, done..done + piece)?;
            done += piece;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn file(len: u64) -> Arc<File> {
        let file = tempfile_in_memory();
        file.set_len(len).unwrap();
        Arc::new(file)
    }

    fn tempfile_in_memory() -> File {
        let fd = rustix::fs::memfd_create("test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        File::from(fd)
    }

    #[test]
    fn test_donatable_ranges_merge_adjacent_maps_and_shrink_to_2mib() {
        let mut memory = ParentMemory::new();
        assert!(memory.map(0, 640 << 10, None, 0));
        assert!(memory.map(768 << 10, 2048 * MIB - (768 << 10), None, 0));
        assert!(memory.map(4096 * MIB, 1024 * MIB, None, 0));
        assert_eq!(
            memory.donatable_ranges(),
            vec![2 * MIB..2048 * MIB, 4096 * MIB..5120 * MIB]
        );
    }

    #[test]
    fn test_map_replaces_overlaps_and_refuses_empty_or_wrapping_ranges() {
        let mut memory = ParentMemory::new();
        assert!(memory.map(0, 4 * MIB, None, 0));
        assert!(memory.map(2 * MIB, 4 * MIB, None, 0));
        assert_eq!(memory.donatable_ranges(), vec![2 * MIB..6 * MIB]);
        assert!(!memory.map(u64::MAX, 2, None, 0));
        assert!(!memory.map(8 * MIB, 0, None, 0));
        assert!(memory.unmap(0, 8 * MIB));
        assert!(memory.donatable_ranges().is_empty());
    }

    #[test]
    fn test_read_translates_through_each_range_offset_not_the_address() {
        // q35 style: RAM below 2 GiB at file offset 0, RAM above 4 GiB continues the file.
        let ram = file(8 * MIB);
        ram.write_all_at(b"high", 4 * MIB).unwrap();
        let mut memory = ParentMemory::new();
        memory.map(0, 4 * MIB, Some(Arc::clone(&ram)), 0);
        memory.map(1 << 32, 4 * MIB, Some(ram), 4 * MIB);
        let mut buf = [0; 4];
        memory.read(1 << 32, &mut buf).unwrap();
        assert_eq!(&buf, b"high");
    }

    #[test]
    fn test_read_spans_adjacent_ranges_of_different_files() {
        let (a, b) = (file(2 * MIB), file(2 * MIB));
        a.write_all_at(b"ab", 2 * MIB - 2).unwrap();
        b.write_all_at(b"cd", 0).unwrap();
        let mut memory = ParentMemory::new();
        memory.map(0, 2 * MIB, Some(a), 0);
        memory.map(2 * MIB, 2 * MIB, Some(b), 0);
        let mut buf = [0; 4];
        memory.read(2 * MIB - 2, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
    }

    #[test]
    fn test_read_of_a_truncated_file_fails_instead_of_crashing() {
        let ram = file(4 * MIB);
        let memory = ParentMemory::whole_file(Arc::clone(&ram), 4 * MIB);
        ram.set_len(MIB).unwrap();
        let mut buf = [0; 16];
        let error = memory.read(2 * MIB, &mut buf).unwrap_err();
        assert!(matches!(error, MemoryError::Read { .. }), "{error}");
    }

    #[test]
    fn test_read_outside_ram_or_without_a_file_is_an_error() {
        let mut memory = ParentMemory::new();
        memory.map(0, 2 * MIB, None, 0);
        let mut buf = [0; 1];
        assert!(matches!(
            memory.read(0, &mut buf),
            Err(MemoryError::NoBacking { gpa: 0 })
        ));
        assert!(matches!(
            memory.read(4 * MIB, &mut buf),
            Err(MemoryError::Unmapped { .. })
        ));
    }
}
