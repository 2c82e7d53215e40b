// SPDX-License-Identifier: Apache-2.0
//! A process's address space in the emulated parent: hugepage mappings (`mmap` with
//! `MAP_HUGETLB`) backed by frames of parent RAM, and plain 4 KiB mappings. It is what the
//! driver walks when `NE_SET_USER_MEMORY_REGION` pins user memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use ne_driver::{errno, Page, UserMemory};

use crate::error::{Error, Result};
use crate::hugepages::{HugepagePool, HUGEPAGE_BYTES};
use crate::ram::ParentRam;

/// The first address mappings are placed at.
pub const MMAP_BASE: u64 = 0x7f00_0000_0000;
/// One past the highest user address (x86-64's `TASK_SIZE_MAX`).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Bytes of a plain page.
pub const SMALL_PAGE_BYTES: u64 = 4096;

/// What backs a mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Backing {
    /// 2 MiB frames of parent RAM, in mapping order.
    Huge { frames: Vec<u64>, node: u32 },
    /// Plain pages; their contents are never touched here.
    Small,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    len: u64,
    backing: Backing,
}

/// One process's user memory. Dropping it unmaps everything.
#[derive(Debug)]
pub struct AddressSpace {
    ram: Arc<ParentRam>,
    pool: Arc<Mutex<HugepagePool>>,
    mappings: BTreeMap<u64, Mapping>,
    next: u64,
}

impl AddressSpace {
    pub(crate) fn new(ram: Arc<ParentRam>, pool: Arc<Mutex<HugepagePool>>) -> Self {
        AddressSpace {
            ram,
            pool,
            mappings: BTreeMap::new(),
            next: MMAP_BASE,
        }
    }

    /// Maps `len` bytes (a multiple of 2 MiB) of hugepages from NUMA node `node`; returns
    /// the mapping's address.
    pub fn mmap_hugepages(&mut self, len: u64, node: u32) -> Result<u64> {
        if len == 0 || !len.is_multiple_of(HUGEPAGE_BYTES) {
            return Err(Error::HugepageLength { len });
        }
        let frames = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(&self.ram, node, len / HUGEPAGE_BYTES)?;
        Ok(self.place(len, Backing::Huge { frames, node }))
    }

    /// Maps `len` bytes of plain 4 KiB pages (not hugetlbfs).
    pub fn mmap_small(&mut self, len: u64) -> u64 {
        let len = len.div_ceil(SMALL_PAGE_BYTES).max(1) * SMALL_PAGE_BYTES;
        self.place(len, Backing::Small)
    }

    /// Unmaps the mapping at `addr`, returning its hugepages to the pool.
    pub fn munmap(&mut self, addr: u64) -> Result<()> {
        let mapping = self.mappings.remove(&addr).ok_or(Error::Unmapped(addr))?;
        self.release(&mapping);
        Ok(())
    }

    /// Copies `bytes` into hugepage memory at `addr` (which may span mappings).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.for_each_frame(addr, bytes.len(), |paddr, range| {
            self.ram.write(paddr, bytes.get(range).unwrap_or_default())
        })
    }

    /// Reads hugepage memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.for_each_frame(addr, buf.len(), |paddr, range| {
            self.ram.read(paddr, buf.get_mut(range).unwrap_or_default())
        })
    }

    /// Splits `len` bytes at user address `addr` at frame boundaries and calls `access`
    /// with each piece's guest-physical address and its range of the caller's buffer.
    fn for_each_frame(
        &self,
        addr: u64,
        len: usize,
        mut access: impl FnMut(u64, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let at = addr + done as u64;
            let (paddr, room) = self.translate(at).ok_or(Error::Unmapped(at))?;
            let piece = usize::try_from(room).unwrap_or(usize::MAX).min(len - done);
            access(paddr, done..done + piece)?;
            done += piece;
        }
        Ok(())
    }

    fn place(&mut self, len: u64, backing: Backing) -> u64 {
        let addr = self.next;
        // Leave a 2 MiB hole after each mapping, so neighbours are never adjacent by chance.
        self.next = (addr + len).div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES + HUGEPAGE_BYTES;
        self.mappings.insert(addr, Mapping { len, backing });
        addr
    }

    fn mapping_at(&self, addr: u64) -> Option<(u64, &Mapping)> {
        let (&start, mapping) = self.mappings.range(..=addr).next_back()?;
        (addr < start + mapping.len).then_some((start, mapping))
    }

    /// The guest-physical address of hugepage memory at `addr`, and how many bytes follow
    /// it in the same frame.
    fn translate(&self, addr: u64) -> Option<(u64, u64)> {
        let (start, mapping) = self.mapping_at(addr)?;
        let Backing::Huge { frames, .. } = &mapping.backing else {
            return None;
        };
        let offset = addr - start;
        let frame = frames.get(usize::try_from(offset / HUGEPAGE_BYTES).ok()?)?;
        let within = offset % HUGEPAGE_BYTES;
        Some((frame + within, HUGEPAGE_BYTES - within))
    }

    /// Returns a mapping's hugepages to the pool, cleared: the next enclave never sees
    /// what the last one left there.
    fn release(&self, mapping: &Mapping) {
        if let Backing::Huge { frames, .. } = &mapping.backing {
            for &frame in frames {
                if let Err(e) = self.ram.discard(frame, HUGEPAGE_BYTES) {
                    tracing::warn!("{e}");
                }
            }
            self.pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .give_back(frames);
        }
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        for mapping in self.mappings.values() {
            self.release(mapping);
        }
    }
}

impl UserMemory for AddressSpace {
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        addr.checked_add(size).is_some_and(|end| end <= USER_END)
    }

    fn page(&self, addr: u64) -> Result<Page, i32> {
        let (start, mapping) = self.mapping_at(addr).ok_or(errno::EFAULT)?;
        match &mapping.backing {
            Backing::Huge { node, .. } => {
                let (phys, _) = self.translate(addr).ok_or(errno::EFAULT)?;
                Ok(Page {
                    phys,
                    size: HUGEPAGE_BYTES,
                    hugetlb: true,
                    numa_node: *node,
                })
            }
            Backing::Small => Ok(Page {
                phys: (addr - start) & !(SMALL_PAGE_BYTES - 1),
                size: SMALL_PAGE_BYTES,
                hugetlb: false,
                numa_node: 0,
            }),
        }
    }
}
