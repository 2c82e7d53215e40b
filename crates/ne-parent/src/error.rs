// SPDX-License-Identifier: Apache-2.0
//! The parent's errors.

use std::io;

use thiserror::Error;

/// What went wrong in a parent instance.
#[derive(Debug, Error)]
pub enum Error {
    /// The emulated parent's configuration describes no parent.
    #[error("Invalid parent configuration: RAM ({ram_mib} MiB) must be even and larger than the parent's reserve ({reserved_mib} MiB)")]
    Config {
        /// RAM asked for.
        ram_mib: u64,
        /// RAM the parent keeps.
        reserved_mib: u64,
    },
    /// The enclave backend could not start.
    #[error("Cannot start the enclave backend")]
    Backend {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device configuration is invalid.
    #[error("Invalid device configuration")]
    Device(#[from] ne_device::ConfigError),
    /// Discarding freed memory failed.
    #[error("Cannot give freed parent memory at {paddr:#x} back")]
    Discard {
        /// Where.
        paddr: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The driver refused an operation (the errno an ioctl would give is inside).
    #[error("The driver refused")]
    Driver(#[from] ne_driver::Error),
    /// Not enough free hugepages.
    #[error("{wanted} hugepages of 2 MiB wanted on NUMA node {node}, {free} free")]
    Hugepages {
        /// How many were asked for.
        wanted: u64,
        /// How many are free on the node.
        free: u64,
        /// The node.
        node: u32,
    },
    /// A mapping is not a whole number of hugepages.
    #[error("A hugepage mapping of {len} bytes is not a multiple of 2 MiB")]
    HugepageLength {
        /// The length asked for.
        len: u64,
    },
    /// A guest-memory access failed.
    #[error("Parent memory access failed")]
    Memory(#[from] ne_hypervisor::MemoryError),
    /// The VM backend could not start (no usable QEMU, most likely).
    #[error("Cannot start the VM backend")]
    Vm(#[from] ne_vm::StartError),
    /// The parent's RAM could not be created.
    #[error("Cannot create {size} bytes of parent RAM")]
    Ram {
        /// The size asked for.
        size: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("Cannot start the {name} thread")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A user address is not mapped.
    #[error("Address {0:#x} is not mapped")]
    Unmapped(u64),
}

/// The parent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
