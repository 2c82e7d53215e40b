// SPDX-License-Identifier: Apache-2.0
//! The parent's guest RAM: one anonymous mapping (pages are only backed once touched),
//! addressed by guest-physical address, split evenly across NUMA nodes.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};

/// The parent's RAM, from guest-physical address 0.
#[derive(Debug)]
pub struct ParentRam {
    memory: GuestMemoryMmap<()>,
    size: u64,
    numa_nodes: u32,
}

impl ParentRam {
    /// `size` bytes of RAM (a multiple of 2 MiB) over `numa_nodes` nodes.
    pub fn new(size: u64, numa_nodes: u32) -> Result<ParentRam> {
        let len = usize::try_from(size)
            .map_err(|_| Error::Config(format!("{size} bytes of RAM cannot be mapped")))?;
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)])
            .map_err(|e| Error::Config(format!("cannot map {size} bytes of parent RAM: {e}")))?;
        Ok(ParentRam {
            memory,
            size,
            numa_nodes: numa_nodes.max(1),
        })
    }

    /// The RAM's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The NUMA node of guest-physical address `paddr`.
    pub fn numa_node(&self, paddr: u64) -> u32 {
        let per_node = (self.size / u64::from(self.numa_nodes)).max(1);
        u32::try_from(paddr / per_node)
            .unwrap_or(u32::MAX)
            .min(self.numa_nodes - 1)
    }

    /// Reads `buf.len()` bytes at `paddr`.
    pub fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        self.memory
            .read_slice(buf, GuestAddress(paddr))
            .map_err(|e| Error::Memory(format!("read of {} bytes at {paddr:#x}: {e}", buf.len())))
    }

    /// Writes `buf` at `paddr`.
    pub fn write(&self, paddr: u64, buf: &[u8]) -> Result<()> {
        self.memory
            .write_slice(buf, GuestAddress(paddr))
            .map_err(|e| Error::Memory(format!("write of {} bytes at {paddr:#x}: {e}", buf.len())))
    }
}
