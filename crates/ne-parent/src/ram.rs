// SPDX-License-Identifier: Apache-2.0
//! The parent's guest RAM: one memfd (only touched pages use host memory, and a VM backend
//! can map donated pages in place), addressed by guest-physical address from 0, split
//! evenly across NUMA nodes.

use std::fs::File;
use std::sync::{Arc, RwLock};

use ne_hypervisor::{read_lock, ParentMemory, SharedMemory};
use rustix::fs::{fallocate, memfd_create, FallocateFlags, MemfdFlags};

use crate::error::{Error, Result};

/// The parent's RAM, from guest-physical address 0.
#[derive(Debug)]
pub struct ParentRam {
    file: Arc<File>,
    memory: SharedMemory,
    size: u64,
    numa_nodes: u32,
}

impl ParentRam {
    /// `size` bytes of RAM (a multiple of 2 MiB) over `numa_nodes` nodes.
    pub fn new(size: u64, numa_nodes: u32) -> Result<ParentRam> {
        let fd = memfd_create("ne-parent-ram", MemfdFlags::CLOEXEC).map_err(|e| Error::Ram {
            size,
            source: e.into(),
        })?;
        let file = File::from(fd);
        file.set_len(size)
            .map_err(|source| Error::Ram { size, source })?;
        let file = Arc::new(file);
        let memory = Arc::new(RwLock::new(ParentMemory::whole_file(
            Arc::clone(&file),
            size,
        )));
        Ok(ParentRam {
            file,
            memory,
            size,
            numa_nodes: numa_nodes.max(1),
        })
    }

    /// The RAM's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RAM as the hypervisor reads it.
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    /// The RAM's guest-physical ranges, as the device checks donated regions against.
    pub fn memory_ranges(&self) -> Vec<std::ops::Range<u64>> {
        read_lock(&self.memory).donatable_ranges()
    }

    /// The memfd holding it (guest-physical address = file offset).
    pub fn file(&self) -> &Arc<File> {
        &self.file
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
        Ok(read_lock(&self.memory).read(paddr, buf)?)
    }

    /// Writes `buf` at `paddr`.
    pub fn write(&self, paddr: u64, buf: &[u8]) -> Result<()> {
        Ok(read_lock(&self.memory).write(paddr, buf)?)
    }

    /// Gives `len` bytes at `paddr` back to the host: they read as zeros afterwards, as a
    /// freed hugepage is cleared before its next owner sees it.
    pub fn discard(&self, paddr: u64, len: u64) -> Result<()> {
        fallocate(
            &*self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            paddr,
            len,
        )
        .map_err(|e| Error::Discard {
            paddr,
            source: e.into(),
        })
    }
}
