// SPDX-License-Identifier: Apache-2.0
//! The hypervisor's host side of the Nitro Enclaves device: what stands behind
//! `ne_device::Hypervisor` when a host (the emulated parent, `nectl serve`) runs the device.
//!
//! - [`ParentMemory`]: the parent's RAM as guest-physical ranges backed by files (a memfd,
//!   or a vfio-user client's DMA maps), read with `pread`.
//! - [`NitroHypervisor`]: on `ENCLAVE_START`, reads the EIF at 8 MiB of the donated
//!   regions, validates and measures it, refuses a bad image with `ENOEXEC`, then hands it
//!   to a [`Backend`].
//! - Backends: the simulated one (`ne_device::SimulatedHypervisor`), [`Delayed`] (starts
//!   that take time on an injected [`Clock`]); the VM backend lives in `ne-vm`.
//! - [`Notifier`] and [`spawn_pump`]: how a backend's news (a finished start, an exit)
//!   reaches the device without anyone polling.
//!
//! It knows nothing of sockets or command lines; it owns no device.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod backend;
mod console;
mod delay;
mod image;
mod memory;
mod nitro;
mod pump;

pub use backend::{Backend, StartRequest};
pub use console::{Console, ConsoleReader, CONSOLE_HISTORY_BYTES};
pub use delay::{Clock, Delayed, ManualClock, SystemClock};
pub use image::{load_image, EnclaveImage, EnclaveMemory, ImageError};
pub use memory::{read_lock, Backing, MemoryError, ParentMemory, SharedMemory};
pub use nitro::{error_chain, NitroHypervisor};
pub use pump::{spawn_pump, Notifier};
