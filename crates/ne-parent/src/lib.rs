// SPDX-License-Identifier: Apache-2.0
//! An emulated Nitro Enclaves parent instance, in one process: guest RAM (an anonymous
//! mapping), a CPU topology, a hugepage pool, the NE device model and the `ne-driver`
//! bound to it, wired as the PCI core would wire them.
//!
//! [`Parent::launch`] runs an enclave from an EIF the way nitro-cli does through
//! `/dev/nitro_enclaves`. On `ENCLAVE_START` the parent's hypervisor reads the EIF from
//! the donated memory (8 MiB into the concatenated regions), validates it and measures its
//! PCRs; a bad image is refused with `ENOEXEC` and a log line that says what is wrong.
//! Nothing is booted: the enclave runs in simulation until it is terminated, or until
//! [`Parent::crash`] / [`Parent::exit`] stop it, which the driver sees on vector 1.
#![forbid(unsafe_code)]

mod address_space;
mod error;
mod hugepages;
mod hypervisor;
mod launch;
mod parent;
mod ram;

pub use address_space::{AddressSpace, MMAP_BASE, SMALL_PAGE_BYTES, USER_END};
pub use error::{Error, Result};
pub use hugepages::{HugepagePool, HUGEPAGE_BYTES};
pub use hypervisor::{load_image, EifHypervisor, LoadedImage, ENOEXEC};
pub use launch::{min_memory_mib, CpuRequest, LaunchError, LaunchRequest, LaunchStep, Launched};
pub use parent::{default_pool, Parent, ParentConfig, ParentDevice, ParentDriver, ParentEnclave};
pub use ram::ParentRam;
