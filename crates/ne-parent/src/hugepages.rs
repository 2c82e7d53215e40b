// SPDX-License-Identifier: Apache-2.0
//! The hugepage pool: the 2 MiB frames of parent RAM reserved for hugetlbfs
//! (`/proc/sys/vm/nr_hugepages`), per NUMA node.

use std::collections::BTreeSet;

use ne_abi::uapi::MIN_MEM_REGION_SIZE;

use crate::error::{Error, Result};
use crate::ram::ParentRam;

/// Bytes of one hugepage.
pub const HUGEPAGE_BYTES: u64 = MIN_MEM_REGION_SIZE;
/// Bytes of one hugepage, as a length.
pub(crate) const HUGEPAGE_LEN: usize = 2 << 20;
const _: () = assert!(HUGEPAGE_LEN as u64 == HUGEPAGE_BYTES);

/// The free 2 MiB frames, by guest-physical address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HugepagePool {
    free: BTreeSet<u64>,
    total: u64,
}

impl HugepagePool {
    /// Reserves every frame of `ram` from `first` (a guest-physical address, 2 MiB aligned)
    /// to the end as hugepages; what lies below stays the parent's own memory.
    pub fn reserve(ram: &ParentRam, first: u64) -> HugepagePool {
        let start = first.div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES;
        let free: BTreeSet<u64> = (start..ram.size()).step_by(HUGEPAGE_LEN).collect();
        HugepagePool {
            total: free.len() as u64,
            free,
        }
    }

    /// How many hugepages there are, free or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many are free on `node` of `ram`.
    pub fn free_on(&self, ram: &ParentRam, node: u32) -> u64 {
        self.free
            .iter()
            .filter(|&&page| ram.numa_node(page) == node)
            .count() as u64
    }

    /// Takes `count` free pages on `node`, lowest addresses first, or none at all.
    pub fn take(&mut self, ram: &ParentRam, node: u32, count: u64) -> Result<Vec<u64>> {
        let pages: Vec<u64> = self
            .free
            .iter()
            .copied()
            .filter(|&page| ram.numa_node(page) == node)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect();
        if (pages.len() as u64) < count {
            return Err(Error::Hugepages {
                wanted: count,
                free: pages.len() as u64,
                node,
            });
        }
        for page in &pages {
            self.free.remove(page);
        }
        Ok(pages)
    }

    /// Returns pages to the pool.
    pub fn give_back(&mut self, pages: &[u64]) {
        self.free.extend(pages);
    }
}
