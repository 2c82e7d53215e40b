// SPDX-License-Identifier: Apache-2.0
//! Where a launch gets the memory it donates: a process's hugepage mappings, written
//! through its own address space. [`ProcessMemory`] is a process of the emulated parent;
//! [`KernelHugepages`] is this process's own hugepages, for the kernel's driver.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use ne_driver::sys::AnonMapping;
use thiserror::Error;

use crate::address_space::AddressSpace;

/// Why memory could not be mapped or written.
#[derive(Debug, Error)]
pub enum DonorError {
    /// Not enough free hugepages.
    #[error("{wanted} MiB of hugepages wanted, {free} MiB free on NUMA node {node}")]
    Exhausted {
        /// MiB asked for.
        wanted: u64,
        /// MiB free.
        free: u64,
        /// The node.
        node: u32,
    },
    /// The kernel refused a hugepage mapping.
    #[error(
        "Cannot map {len} bytes of 2 MiB hugepages; reserve more in /proc/sys/vm/nr_hugepages"
    )]
    Map {
        /// Bytes asked for.
        len: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An address is not inside a mapping made here.
    #[error("{len} bytes at {addr:#x} are not inside a hugepage mapping")]
    Unmapped {
        /// The address.
        addr: u64,
        /// The length.
        len: usize,
    },
    /// The emulated parent failed.
    #[error("The emulated parent's memory failed")]
    Parent(#[from] crate::error::Error),
}

/// A process's memory, from which a launch donates hugepages.
pub trait MemoryDonor: std::fmt::Debug {
    /// Maps `len` bytes (a multiple of 2 MiB) of 2 MiB hugepages; returns the address.
    fn map_hugepages(&mut self, len: u64) -> Result<u64, DonorError>;

    /// Copies `bytes` to `addr`, inside mappings made by [`MemoryDonor::map_hugepages`].
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DonorError>;
}

/// A process of the emulated parent: its address space, shared with the device it opened
/// (the driver pins pages from it), taking hugepages from one NUMA node.
#[derive(Debug)]
pub struct ProcessMemory {
    space: Arc<Mutex<AddressSpace>>,
    node: u32,
}

impl ProcessMemory {
    /// The memory of a process whose address space is `space`, mapping hugepages on `node`.
    pub fn new(space: Arc<Mutex<AddressSpace>>, node: u32) -> Self {
        ProcessMemory { space, node }
    }
}

impl ProcessMemory {
    /// Maps `len` bytes of plain 4 KiB pages (not hugetlbfs); returns the address.
    pub fn map_small(&mut self, len: u64) -> u64 {
        self.space
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mmap_small(len)
    }
}

impl MemoryDonor for ProcessMemory {
    fn map_hugepages(&mut self, len: u64) -> Result<u64, DonorError> {
        let mut space = self.space.lock().unwrap_or_else(PoisonError::into_inner);
        space.mmap_hugepages(len, self.node).map_err(|e| match e {
            crate::Error::Hugepages { wanted, free, node } => DonorError::Exhausted {
                wanted: wanted * 2,
                free: free * 2,
                node,
            },
            other => DonorError::Parent(other),
        })
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DonorError> {
        let space = self.space.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(space.write(addr, bytes)?)
    }
}

/// This process's own 2 MiB hugepages (`mmap(MAP_HUGETLB)`), for the kernel's driver.
/// Dropping it unmaps them.
#[derive(Debug, Default)]
pub struct KernelHugepages {
    mappings: Vec<AnonMapping>,
}

impl KernelHugepages {
    /// Maps `len` bytes of plain 4 KiB pages, kept with the hugepages; returns the address.
    pub fn map_plain_pages(&mut self, len: u64) -> Result<u64, DonorError> {
        let map_len = usize::try_from(len).map_err(|_| DonorError::Map {
            len,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let mapping =
            AnonMapping::plain(map_len).map_err(|source| DonorError::Map { len, source })?;
        let addr = mapping.addr();
        self.mappings.push(mapping);
        Ok(addr)
    }
}

impl MemoryDonor for KernelHugepages {
    fn map_hugepages(&mut self, len: u64) -> Result<u64, DonorError> {
        let map_len = usize::try_from(len).map_err(|_| DonorError::Map {
            len,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let mapping =
            AnonMapping::hugepages(map_len).map_err(|source| DonorError::Map { len, source })?;
        let addr = mapping.addr();
        self.mappings.push(mapping);
        Ok(addr)
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DonorError> {
        let unmapped = DonorError::Unmapped {
            addr,
            len: bytes.len(),
        };
        let mapping = self
            .mappings
            .iter_mut()
            .find(|m| addr >= m.addr() && addr - m.addr() < m.len() as u64)
            .ok_or(unmapped)?;
        let at = usize::try_from(addr - mapping.addr()).unwrap_or(usize::MAX);
        let slice = mapping.as_mut_slice();
        let dest = slice
            .get_mut(at..)
            .and_then(|tail| tail.get_mut(..bytes.len()))
            .ok_or(DonorError::Unmapped {
                addr,
                len: bytes.len(),
            })?;
        dest.copy_from_slice(bytes);
        Ok(())
    }
}
