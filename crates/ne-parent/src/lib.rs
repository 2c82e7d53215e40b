// SPDX-License-Identifier: Apache-2.0
//! A parent instance: where enclaves are launched from, and [`launch`], which does what
//! nitro-cli does through `/dev/nitro_enclaves`, written once over the enclave API.
//!
//! Two parents implement [`ParentInstance`]:
//! - [`Parent`], an emulated parent in one process: guest RAM (a memfd), a CPU topology,
//!   a hugepage pool, the NE device model and the `ne-driver` bound to it, wired as the PCI
//!   core would wire them. Its hypervisor ([`ne_hypervisor::NitroHypervisor`]) reads the
//!   EIF from the donated memory on `ENCLAVE_START`, validates and measures it, and hands
//!   it to the backend chosen when the parent was built (simulated, or a VM).
//! - [`KernelParent`], the machine this runs on, through the Linux driver.
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

mod address_space;
pub mod conformance;
mod donor;
mod error;
mod heartbeat;
mod hugepages;
mod instance;
mod kernel;
mod launch;
mod parent;
mod ram;

pub use address_space::{AddressSpace, MMAP_BASE, SMALL_PAGE_BYTES, USER_END};
pub use donor::{DonorError, KernelHugepages, MemoryDonor, ProcessMemory};
pub use error::{Error, Result};
pub use heartbeat::{heartbeat_timeout, HeartbeatError, HeartbeatListener};
pub use hugepages::{HugepagePool, HUGEPAGE_BYTES};
pub use instance::{ParentInstance, ParentStatus, Unsupported};
pub use kernel::KernelParent;
pub use launch::{
    launch, min_memory_mib, CpuRequest, LaunchError, LaunchRequest, LaunchStep, Launched,
};
pub use parent::{
    default_pool, BackendChoice, Parent, ParentBackend, ParentBar, ParentConfig, ParentDevice,
    ParentDeviceFile, ParentDriver, ParentEnclave, ParentHypervisor,
};
pub use ram::ParentRam;
