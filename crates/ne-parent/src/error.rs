// SPDX-License-Identifier: Apache-2.0
//! The emulated parent's errors.

use thiserror::Error;

/// What went wrong in the emulated parent.
#[derive(Debug, Error)]
pub enum Error {
    /// The parent's configuration cannot be built.
    #[error("Invalid parent configuration: {0}")]
    Config(String),
    /// The driver refused an operation (the errno an ioctl would give is inside).
    #[error(transparent)]
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
    /// A guest-memory access failed.
    #[error("Parent memory access failed: {0}")]
    Memory(String),
    /// A user address is not mapped.
    #[error("Address {0:#x} is not mapped")]
    Unmapped(u64),
}

/// The parent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
