// SPDX-License-Identifier: Apache-2.0
//! The VM backend of the Nitro Enclaves hypervisor: enclaves that really run.
//!
//! On `ENCLAVE_START`, once `ne_hypervisor::NitroHypervisor` has found, validated and
//! measured the image in the donated memory, [`VmBackend`] boots it with QEMU as a separate
//! process: a `q35` machine (`microvm` hangs in early boot on loaded hosts), as many vCPUs
//! as were donated, and as RAM the donated memory itself — `memory-backend-file` on the
//! parent RAM's file at each region's offset, one NUMA node per contiguous run, in order —
//! so an enclave costs no memory beyond what the parent gave up. Kernel, command line and
//! the concatenated ramdisks go to QEMU's direct kernel boot. The enclave's vsock device
//! (`ne-vsock`) has the enclave's CID.
//!
//! The VM is supervised: `ENCLAVE_STOP`, `SLOT_FREE` and a device disable end it (SIGTERM,
//! then SIGKILL after a grace period); a power-off is reported as an exit, a kernel panic,
//! a signal or a failing QEMU as a crash. No QEMU outlives its parent process: each is
//! forked from one long-lived thread with QEMU's `exit-with-parent`.
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
mod qemu;
mod qmp;
mod vm;

pub use backend::{
    donated_runs, NsmChoice, NsmConfig, StartError, VmBackend, VmChoice, VmConfig, STOP_GRACE,
};
pub use qemu::{cache_dir, Accel, Arch, Qemu, QemuError};
pub use vm::{arguments, stop_reason, EnclaveRam, MemoryRun, Spawner, Vm, VmEnded, VmSpec};
