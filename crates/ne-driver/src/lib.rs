// SPDX-License-Identifier: Apache-2.0
//! The driver side of the Nitro Enclaves PCI device, behaving like the Linux
//! `nitro_enclaves` driver.
//!
//! - [`NeDriver::probe`] runs `ne_pci_probe`'s register sequence; dropping or
//!   [`NeDriver::remove`] runs the disable sequence.
//! - Commands go one at a time (`ne_do_request`): payload, doorbell, a wait for vector 0
//!   (120 s by default, [`DriverConfig`]), the 72-byte reply, a negative `rc` as an error
//!   carrying the errno. `NE_EVTCNT`'s reply counter tells the reply apart from a stray or
//!   late vector 0, which Linux cannot do.
//! - Vector 1 wakes an event worker that sends `SLOT_INFO` for each running enclave and
//!   flags those whose state changed ([`Enclave::wait_event`], the equivalent of POLLHUP).
//! - [`Enclave`] is the enclave fd: add vCPUs, get the image offset, add hugepage memory,
//!   start, and release on drop, with Linux's validation order and `NE_ERR_*` codes. Checks
//!   Linux makes before it talks to the device never reach the device.
//!
//! It talks to any device through the [`Bar`] trait and a [`Vectors`] latch; the `inproc`
//! feature wires it to an `ne_device::NePciDevice` in the same process.
//!
//! Where Linux has quirks, this driver mirrors them except where noted: a failed
//! `SLOT_INFO` during event handling leaves the enclave's state alone (Linux copies a stale
//! one), and the creating process is not checked (one process owns everything here).
//!
//! The `kernel` feature adds [`sys`], the Linux kernel's own driver through
//! `/dev/nitro_enclaves`: the crate's only `unsafe` code.
#![deny(unsafe_code)]

mod api;
mod bar;
mod cpu_pool;
mod driver;
mod enclave;
mod error;
#[cfg(feature = "inproc")]
pub mod inproc;
mod memory;
mod shared;
#[cfg(feature = "kernel")]
pub mod sys;
mod transport;

pub use api::{error_from_errno, DeviceFile, EnclaveDevice, EnclaveFd, EnclaveFile};
pub use bar::{Bar, VectorCounts, Vectors};
pub use cpu_pool::{parse_cpu_list, Cpu, CpuNumbering, CpuPool, Topology};
pub use driver::NeDriver;
pub use enclave::{Enclave, EnclaveInfo};
pub use error::{errno, Error, ProbeError, Result};
pub use memory::{walk_region, Page, PhysRun, UserMemory};
pub use transport::{DriverConfig, DISABLE_POLL_INTERVAL};
