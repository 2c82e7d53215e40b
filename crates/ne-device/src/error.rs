// SPDX-License-Identifier: Apache-2.0
//! Why a command was rejected (the reply's negative `rc`), and the host-side errors.

use thiserror::Error;

/// The Linux errno values the device answers with: one table, in `ne-abi`.
pub use ne_abi::errno;

/// Why the device rejected a command. The reply carries `-errno()` in `rc`, and a rejected
/// command changes no state.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CmdError {
    /// `SLOT_ADD_BULK_VCPUS` asked for zero vCPUs.
    #[error("Asked for zero vCPUs")]
    BulkZeroVcpus,
    /// The requested CID is one of the reserved ones (1, 2, 3, `u32::MAX`) or above 32 bits.
    #[error("CID {cid} is reserved or out of range")]
    CidReserved {
        /// The CID asked for.
        cid: u64,
    },
    /// Every assignable CID belongs to a live enclave.
    #[error("No CID is free")]
    CidsExhausted,
    /// The CID belongs to another live enclave.
    #[error("CID {cid} is used by the enclave of slot {owner}")]
    CidInUse {
        /// The CID asked for.
        cid: u64,
        /// The slot whose enclave uses it.
        owner: u64,
    },
    /// A command arrived while `NE_ENABLE` is 0.
    #[error("The device is disabled")]
    Disabled,
    /// The hypervisor backend refused to start the enclave.
    #[error("The hypervisor refused to start the enclave: {reason}")]
    HypervisorRefused {
        /// The errno to answer with (positive).
        errno: i32,
        /// Why, for the log.
        reason: String,
    },
    /// `ENCLAVE_START` flags other than 0 (production) or 1 (debug).
    #[error("Start flags {flags:#x} are not 0 or 1")]
    InvalidFlags {
        /// The flags given.
        flags: u64,
    },
    /// `ENCLAVE_START` with less memory than the 64 MiB minimum.
    #[error("The slot has {mem_size} bytes of memory, less than the 64 MiB minimum")]
    MemoryBelowMinimum {
        /// The slot's memory.
        mem_size: u64,
    },
    /// `NEXT_SLOT` found no slot after the given one.
    #[error("No slot follows slot {after}")]
    NoNextSlot {
        /// The slot uid given.
        after: u64,
    },
    /// `ENCLAVE_START` on a slot without memory.
    #[error("Slot {slot_uid} has no memory regions")]
    NoMemory {
        /// The slot.
        slot_uid: u64,
    },
    /// `ENCLAVE_STOP` on a slot whose enclave was never started.
    #[error("The enclave of slot {slot_uid} was never started")]
    NotStarted {
        /// The slot.
        slot_uid: u64,
    },
    /// No live enclave has the CID.
    #[error("No running enclave has CID {cid}")]
    NoSuchEnclave {
        /// The CID asked for.
        cid: u64,
    },
    /// No slot has the uid.
    #[error("No slot has uid {slot_uid}")]
    NoSuchSlot {
        /// The uid given.
        slot_uid: u64,
    },
    /// `ENCLAVE_START` on a slot without vCPUs.
    #[error("Slot {slot_uid} has no vCPUs")]
    NoVcpus {
        /// The slot.
        slot_uid: u64,
    },
    /// Fewer free parent CPUs than `SLOT_ADD_BULK_VCPUS` asked for.
    #[error("Asked for {wanted} vCPUs, {free} are free")]
    NotEnoughFreeVcpus {
        /// How many were asked for.
        wanted: u64,
        /// How many are free.
        free: u64,
    },
    /// The region lies outside the parent's RAM, or wraps around the address space.
    #[error("Region {paddr:#x}+{size:#x} is not inside the parent's RAM")]
    RegionOutsideRam {
        /// The region's start.
        paddr: u64,
        /// The region's size.
        size: u64,
    },
    /// The region overlaps one already donated.
    #[error("Region {paddr:#x}+{size:#x} overlaps memory of slot {owner}")]
    RegionOverlap {
        /// The region's start.
        paddr: u64,
        /// The region's size.
        size: u64,
        /// The slot that holds the overlapped memory.
        owner: u64,
    },
    /// The region is empty, or its start or size is not a multiple of 2 MiB.
    #[error("Region {paddr:#x}+{size:#x} is empty or not 2 MiB aligned")]
    RegionUnaligned {
        /// The region's start.
        paddr: u64,
        /// The region's size.
        size: u64,
    },
    /// The slot already holds [`crate::DeviceConfig::max_mem_regions`] regions.
    #[error("The slot already has the most memory regions allowed ({limit})")]
    TooManyRegions {
        /// The limit.
        limit: u64,
    },
    /// [`crate::DeviceConfig::max_slots`] slots exist already.
    #[error("The most slots allowed ({limit}) exist already")]
    TooManySlots {
        /// The limit.
        limit: usize,
    },
    /// The slot would exceed [`crate::DeviceConfig::max_vcpus_per_slot`].
    #[error("The slot would have more vCPUs than allowed ({limit})")]
    TooManyVcpus {
        /// The limit.
        limit: u32,
    },
    /// The command number is not 1 to 11.
    #[error("Unknown command {0}")]
    UnknownCommand(u32),
    /// The vCPU is CPU 0, the parent's boot CPU, which is never donated.
    #[error("vCPU 0 is the parent's boot CPU and cannot be donated")]
    VcpuBootCpu,
    /// The vCPU belongs to a slot already.
    #[error("vCPU {vcpu} belongs to slot {owner}")]
    VcpuInUse {
        /// The vCPU asked for.
        vcpu: u32,
        /// The slot that holds it.
        owner: u64,
    },
    /// The vCPU id is not below the parent's CPU count.
    #[error("vCPU {vcpu} does not exist: the parent has {cpus} CPUs")]
    VcpuOutOfRange {
        /// The vCPU asked for.
        vcpu: u32,
        /// The parent's CPU count.
        cpus: u32,
    },
    /// The slot's state does not allow the command.
    #[error("Slot {slot_uid} is {state}")]
    WrongState {
        /// The slot.
        slot_uid: u64,
        /// Its state, in words.
        state: &'static str,
    },
}

impl CmdError {
    /// The positive errno this rejection answers with.
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            CmdError::BulkZeroVcpus
            | CmdError::CidReserved { .. }
            | CmdError::InvalidFlags { .. }
            | CmdError::MemoryBelowMinimum { .. }
            | CmdError::NoMemory { .. }
            | CmdError::NotStarted { .. }
            | CmdError::NoVcpus { .. }
            | CmdError::RegionUnaligned { .. }
            | CmdError::UnknownCommand(_)
            | CmdError::VcpuBootCpu
            | CmdError::VcpuOutOfRange { .. } => EINVAL,
            CmdError::NoNextSlot { .. }
            | CmdError::NoSuchEnclave { .. }
            | CmdError::NoSuchSlot { .. } => ENOENT,
            CmdError::RegionOverlap { .. }
            | CmdError::VcpuInUse { .. }
            | CmdError::WrongState { .. } => EBUSY,
            CmdError::NotEnoughFreeVcpus { .. }
            | CmdError::TooManyRegions { .. }
            | CmdError::TooManySlots { .. }
            | CmdError::TooManyVcpus { .. } => ENOSPC,
            CmdError::RegionOutsideRam { .. } => EFAULT,
            CmdError::CidInUse { .. } => EADDRINUSE,
            CmdError::CidsExhausted => EADDRNOTAVAIL,
            CmdError::Disabled => ENODEV,
            // A backend's errno must make the rc negative, or the driver would see success.
            CmdError::HypervisorRefused { errno, .. } if *errno > 0 => *errno,
            CmdError::HypervisorRefused { .. } => EIO,
        }
    }

    /// The reply's `rc`: the negative errno.
    pub fn rc(&self) -> i32 {
        -self.errno()
    }
}

impl From<crate::hypervisor::StartRefused> for CmdError {
    fn from(refusal: crate::hypervisor::StartRefused) -> Self {
        CmdError::HypervisorRefused {
            errno: refusal.errno,
            reason: refusal.reason,
        }
    }
}

/// A host-side failure of the device: the only errors its methods return.
#[derive(Debug, Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// The interrupt sink failed to raise a vector.
    #[error("Failed to raise MSI-X vector {vector}")]
    TriggerVector {
        /// The vector's index.
        vector: u16,
        /// The sink's error.
        #[source]
        source: E,
    },
}
