// SPDX-License-Identifier: Apache-2.0
//! The guest's RAM as the client's DMA maps describe it, turned into the parent RAM ranges
//! the device validates `SLOT_ADD_MEM` against.

use std::collections::BTreeMap;
use std::ops::Range;

use ne_device::config::REGION_ALIGN_BYTES;

/// The DMA-mapped ranges of guest-physical memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmaMaps {
    maps: BTreeMap<u64, u64>,
}

impl DmaMaps {
    /// Records a map of `size` bytes at `address`, replacing any maps it overlaps (QEMU
    /// maps a range again when its memory layout changes); false if it is empty or wraps.
    pub fn map(&mut self, address: u64, size: u64) -> bool {
        let Some(end) = address.checked_add(size).filter(|_| size > 0) else {
            return false;
        };
        self.remove_overlapping(address, end);
        self.maps.insert(address, size);
        true
    }

    /// Forgets every map inside `size` bytes at `address`; false if the range wraps.
    pub fn unmap(&mut self, address: u64, size: u64) -> bool {
        let Some(end) = address.checked_add(size) else {
            return false;
        };
        self.remove_overlapping(address, end);
        true
    }

    fn remove_overlapping(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .maps
            .range(..end)
            .filter(|&(&at, &len)| at + len > start)
            .map(|(&at, _)| at)
            .collect();
        for at in overlapping {
            self.maps.remove(&at);
        }
    }

    /// Forgets every map.
    pub fn clear(&mut self) {
        self.maps.clear();
    }

    /// The parent RAM ranges: adjacent maps merged, then each shrunk to whole 2 MiB units
    /// (enclave memory is 2 MiB aligned, so nothing smaller could be donated anyway).
    pub fn parent_ram(&self) -> Vec<Range<u64>> {
        let mut merged: Vec<Range<u64>> = Vec::new();
        for (&start, &size) in &self.maps {
            let end = start + size;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn test_adjacent_maps_merge_and_shrink_to_2mib() {
        let mut maps = DmaMaps::default();
        assert!(maps.map(0, 640 << 10));
        assert!(maps.map(768 << 10, 2048 * MIB - (768 << 10)));
        assert!(maps.map(4096 * MIB, 1024 * MIB));
        assert_eq!(
            maps.parent_ram(),
            vec![2 * MIB..2048 * MIB, 4096 * MIB..5120 * MIB]
        );
    }

    #[test]
    fn test_overlapping_map_replaces_and_wrapping_maps_are_refused() {
        let mut maps = DmaMaps::default();
        assert!(maps.map(0, 4 * MIB));
        assert!(maps.map(2 * MIB, 4 * MIB));
        assert_eq!(maps.parent_ram(), vec![2 * MIB..6 * MIB]);
        assert!(!maps.map(u64::MAX, 2));
        assert!(!maps.map(8 * MIB, 0));
        assert!(maps.unmap(0, 8 * MIB));
        assert!(maps.parent_ram().is_empty());
    }
}
