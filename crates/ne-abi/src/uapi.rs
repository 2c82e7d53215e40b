// SPDX-License-Identifier: Apache-2.0
//! The user-space interface of the Linux driver (`include/uapi/linux/nitro_enclaves.h`) and
//! the driver constants user space relies on (`ne_misc_dev.c`, `ne_misc_dev.h`).

use core::fmt;
use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ioctl type byte of every NE ioctl (shared with KVM's).
pub const IOCTL_TYPE: u8 = 0xAE;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux's `_IOC(dir, type, nr, size)` encoding (x86 and arm64).
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    // Every argument struct here is smaller than 2^14 bytes, the field's width.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    (dir << 30) | (size << 16) | ((IOCTL_TYPE as u32) << 8) | nr as u32
}

/// `NE_CREATE_VM` = `_IOR(0xAE, 0x20, __u64)`: create an enclave; returns its fd and writes
/// the slot uid.
pub const NE_CREATE_VM: u32 = ioc(IOC_READ, 0x20, size_of::<u64>());
/// `NE_ADD_VCPU` = `_IOWR(0xAE, 0x21, __u32)`: add a vCPU (0 picks one); writes back the id.
pub const NE_ADD_VCPU: u32 = ioc(IOC_READ | IOC_WRITE, 0x21, size_of::<u32>());
/// `NE_GET_IMAGE_LOAD_INFO` = `_IOWR(0xAE, 0x22, struct ne_image_load_info)`.
pub const NE_GET_IMAGE_LOAD_INFO: u32 =
    ioc(IOC_READ | IOC_WRITE, 0x22, size_of::<NeImageLoadInfo>());
/// `NE_SET_USER_MEMORY_REGION` = `_IOW(0xAE, 0x23, struct ne_user_memory_region)`.
pub const NE_SET_USER_MEMORY_REGION: u32 = ioc(IOC_WRITE, 0x23, size_of::<NeUserMemoryRegion>());
/// `NE_START_ENCLAVE` = `_IOWR(0xAE, 0x24, struct ne_enclave_start_info)`.
pub const NE_START_ENCLAVE: u32 = ioc(IOC_READ | IOC_WRITE, 0x24, size_of::<NeEnclaveStartInfo>());

/// `NE_EIF_IMAGE`: the image to load is an Enclave Image Format file.
pub const EIF_IMAGE: u64 = 0x01;
/// `NE_IMAGE_LOAD_MAX_FLAG_VAL`: image-load flags must be below this.
pub const IMAGE_LOAD_MAX_FLAG_VAL: u64 = 0x02;
/// `NE_DEFAULT_MEMORY_REGION`: the only memory-region flag value.
pub const DEFAULT_MEMORY_REGION: u64 = 0x00;
/// `NE_MEMORY_REGION_MAX_FLAG_VAL`: memory-region flags must be below this.
pub const MEMORY_REGION_MAX_FLAG_VAL: u64 = 0x01;
/// `NE_ENCLAVE_PRODUCTION_MODE`: start flags for a production enclave.
pub const ENCLAVE_PRODUCTION_MODE: u64 = 0x00;
/// `NE_ENCLAVE_DEBUG_MODE`: start the enclave in debug mode (console available).
pub const ENCLAVE_DEBUG_MODE: u64 = 0x01;
/// `NE_ENCLAVE_START_MAX_FLAG_VAL`: start flags must be below this.
pub const ENCLAVE_START_MAX_FLAG_VAL: u64 = 0x02;

/// `NE_CPUS_SIZE`: the longest `ne_cpus` CPU-list string the driver accepts.
pub const CPUS_SIZE: usize = 512;
/// `NE_EIF_LOAD_OFFSET`: where the EIF goes in enclave memory (8 MiB).
pub const EIF_LOAD_OFFSET: u64 = 8 * 1024 * 1024;
/// `NE_MIN_ENCLAVE_MEM_SIZE`: the least memory an enclave starts with (64 MiB).
pub const MIN_ENCLAVE_MEM_SIZE: u64 = 64 * 1024 * 1024;
/// `NE_MIN_MEM_REGION_SIZE`: memory regions are multiples of this, aligned to it (2 MiB).
pub const MIN_MEM_REGION_SIZE: u64 = 2 * 1024 * 1024;
/// `NE_PARENT_VM_CID`: the parent VM's vsock CID.
pub const PARENT_VM_CID: u64 = 3;
/// The last CID an enclave can have: `u32::MAX` (`VMADDR_CID_ANY`) is reserved.
pub const LAST_ENCLAVE_CID: u64 = u32::MAX as u64 - 1;

/// CIDs no enclave may have (`ne_start_enclave_ioctl`'s check): 1 and 2 (reserved), 3 (the
/// parent), `u32::MAX`, and anything wider than 32 bits. 0 is not reserved: it asks for any.
pub const fn is_reserved_cid(cid: u64) -> bool {
    (cid >= 1 && cid <= PARENT_VM_CID) || cid > LAST_ENCLAVE_CID
}
/// `NE_DEFAULT_TIMEOUT_MSECS`: how long the driver waits for a reply (120 s).
pub const DEFAULT_TIMEOUT_MSECS: u64 = 120_000;

/// `struct ne_image_load_info` (16 bytes), the argument of `NE_GET_IMAGE_LOAD_INFO`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NeImageLoadInfo {
    /// In: the image type, [`EIF_IMAGE`].
    pub flags: u64,
    /// Out: where the image goes in enclave memory.
    pub memory_offset: u64,
}

/// `struct ne_user_memory_region` (24 bytes), the argument of `NE_SET_USER_MEMORY_REGION`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NeUserMemoryRegion {
    /// Must be [`DEFAULT_MEMORY_REGION`].
    pub flags: u64,
    /// The region's size in bytes, a multiple of 2 MiB.
    pub memory_size: u64,
    /// The region's start in the caller's address space, 2 MiB aligned, hugepage-backed.
    pub userspace_addr: u64,
}

/// `struct ne_enclave_start_info` (16 bytes), the argument of `NE_START_ENCLAVE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NeEnclaveStartInfo {
    /// In: [`ENCLAVE_PRODUCTION_MODE`] or [`ENCLAVE_DEBUG_MODE`].
    pub flags: u64,
    /// In: the CID wanted, 0 for any. Out: the CID the enclave got.
    pub enclave_cid: u64,
}

const _: () = assert!(size_of::<NeImageLoadInfo>() == 16);
const _: () = assert!(offset_of!(NeImageLoadInfo, memory_offset) == 8);
const _: () = assert!(size_of::<NeUserMemoryRegion>() == 24);
const _: () = assert!(offset_of!(NeUserMemoryRegion, memory_size) == 8);
const _: () = assert!(offset_of!(NeUserMemoryRegion, userspace_addr) == 16);
const _: () = assert!(size_of::<NeEnclaveStartInfo>() == 16);
const _: () = assert!(offset_of!(NeEnclaveStartInfo, enclave_cid) == 8);

/// The state of an enclave (`enum ne_state`), as `SLOT_INFO` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum EnclaveState {
    /// `NE_STATE_INIT`: created, being set up, not started.
    Init = 0,
    /// `NE_STATE_RUNNING`: started.
    Running = 2,
    /// `NE_STATE_STOPPED`: stopped, by request or by itself.
    Stopped = 0xFFFF,
}

impl EnclaveState {
    /// The value on the wire.
    pub const fn value(self) -> u16 {
        self as u16
    }

    /// The state a wire value names, if any.
    pub const fn from_value(value: u16) -> Option<EnclaveState> {
        match value {
            0 => Some(EnclaveState::Init),
            2 => Some(EnclaveState::Running),
            0xFFFF => Some(EnclaveState::Stopped),
            _ => None,
        }
    }
}

/// The first `NE_ERR_*` code.
pub const NE_ERR_BASE: u32 = 256;

/// The driver's own error codes (`NE_ERR_*`, 256–275): the errno an ioctl fails with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)] // each variant's meaning is its message()
pub enum NeError {
    VcpuAlreadyUsed = 256,
    VcpuNotInCpuPool = 257,
    VcpuInvalidCpuCore = 258,
    InvalidMemRegionSize = 259,
    InvalidMemRegionAddr = 260,
    UnalignedMemRegionAddr = 261,
    MemRegionAlreadyUsed = 262,
    MemNotHugePage = 263,
    MemDifferentNumaNode = 264,
    MemMaxRegions = 265,
    NoMemRegionsAdded = 266,
    NoVcpusAdded = 267,
    EnclaveMemMinSize = 268,
    FullCoresNotUsed = 269,
    NotInInitState = 270,
    InvalidVcpu = 271,
    NoCpusAvailInPool = 272,
    InvalidPageSize = 273,
    InvalidFlagValue = 274,
    InvalidEnclaveCid = 275,
}

impl NeError {
    /// Every code, in numeric order.
    pub const ALL: [NeError; 20] = [
        NeError::VcpuAlreadyUsed,
        NeError::VcpuNotInCpuPool,
        NeError::VcpuInvalidCpuCore,
        NeError::InvalidMemRegionSize,
        NeError::InvalidMemRegionAddr,
        NeError::UnalignedMemRegionAddr,
        NeError::MemRegionAlreadyUsed,
        NeError::MemNotHugePage,
        NeError::MemDifferentNumaNode,
        NeError::MemMaxRegions,
        NeError::NoMemRegionsAdded,
        NeError::NoVcpusAdded,
        NeError::EnclaveMemMinSize,
        NeError::FullCoresNotUsed,
        NeError::NotInInitState,
        NeError::InvalidVcpu,
        NeError::NoCpusAvailInPool,
        NeError::InvalidPageSize,
        NeError::InvalidFlagValue,
        NeError::InvalidEnclaveCid,
    ];

    /// The errno value user space sees.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The kernel's name, e.g. `NE_ERR_MEM_MAX_REGIONS`.
    pub const fn name(self) -> &'static str {
        match self {
            NeError::VcpuAlreadyUsed => "NE_ERR_VCPU_ALREADY_USED",
            NeError::VcpuNotInCpuPool => "NE_ERR_VCPU_NOT_IN_CPU_POOL",
            NeError::VcpuInvalidCpuCore => "NE_ERR_VCPU_INVALID_CPU_CORE",
            NeError::InvalidMemRegionSize => "NE_ERR_INVALID_MEM_REGION_SIZE",
            NeError::InvalidMemRegionAddr => "NE_ERR_INVALID_MEM_REGION_ADDR",
            NeError::UnalignedMemRegionAddr => "NE_ERR_UNALIGNED_MEM_REGION_ADDR",
            NeError::MemRegionAlreadyUsed => "NE_ERR_MEM_REGION_ALREADY_USED",
            NeError::MemNotHugePage => "NE_ERR_MEM_NOT_HUGE_PAGE",
            NeError::MemDifferentNumaNode => "NE_ERR_MEM_DIFFERENT_NUMA_NODE",
            NeError::MemMaxRegions => "NE_ERR_MEM_MAX_REGIONS",
            NeError::NoMemRegionsAdded => "NE_ERR_NO_MEM_REGIONS_ADDED",
            NeError::NoVcpusAdded => "NE_ERR_NO_VCPUS_ADDED",
            NeError::EnclaveMemMinSize => "NE_ERR_ENCLAVE_MEM_MIN_SIZE",
            NeError::FullCoresNotUsed => "NE_ERR_FULL_CORES_NOT_USED",
            NeError::NotInInitState => "NE_ERR_NOT_IN_INIT_STATE",
            NeError::InvalidVcpu => "NE_ERR_INVALID_VCPU",
            NeError::NoCpusAvailInPool => "NE_ERR_NO_CPUS_AVAIL_IN_POOL",
            NeError::InvalidPageSize => "NE_ERR_INVALID_PAGE_SIZE",
            NeError::InvalidFlagValue => "NE_ERR_INVALID_FLAG_VALUE",
            NeError::InvalidEnclaveCid => "NE_ERR_INVALID_ENCLAVE_CID",
        }
    }

    /// What went wrong, and what to do about it, for a person.
    pub const fn message(self) -> &'static str {
        match self {
            NeError::VcpuAlreadyUsed => "The vCPU is already used by this enclave",
            NeError::VcpuNotInCpuPool => {
                "The vCPU is not in the NE CPU pool; add it to ne_cpus or choose another"
            }
            NeError::VcpuInvalidCpuCore => "The vCPU belongs to a core outside the parent's cores",
            NeError::InvalidMemRegionSize => "The memory region size is not a multiple of 2 MiB",
            NeError::InvalidMemRegionAddr => "The memory region address is not valid user memory",
            NeError::UnalignedMemRegionAddr => "The memory region address is not 2 MiB aligned",
            NeError::MemRegionAlreadyUsed => {
                "The memory region overlaps one already added to the enclave"
            }
            NeError::MemNotHugePage => "The memory region is not backed by hugetlbfs pages",
            NeError::MemDifferentNumaNode => {
                "The memory region is on another NUMA node than the CPU pool"
            }
            NeError::MemMaxRegions => {
                "The enclave has as many memory regions as the device allows; use larger hugepages"
            }
            NeError::NoMemRegionsAdded => "The enclave has no memory regions; add memory first",
            NeError::NoVcpusAdded => "The enclave has no vCPUs; add at least one first",
            NeError::EnclaveMemMinSize => "The enclave has less than the minimum 64 MiB of memory",
            NeError::FullCoresNotUsed => {
                "The enclave uses part of a CPU core; add every sibling thread of its cores"
            }
            NeError::NotInInitState => "The enclave was already started; it cannot be changed",
            NeError::InvalidVcpu => "The vCPU id is beyond the parent's CPUs",
            NeError::NoCpusAvailInPool => {
                "No CPU is free in the NE CPU pool; set ne_cpus or free an enclave"
            }
            NeError::InvalidPageSize => "The memory page size is not a multiple of 2 MiB",
            NeError::InvalidFlagValue => "The flags value is not one the interface defines",
            NeError::InvalidEnclaveCid => {
                "The enclave CID is reserved (1, 2, 3 or 4294967295) or above 32 bits"
            }
        }
    }
}

impl fmt::Display for NeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.code(), self.message())
    }
}

impl core::error::Error for NeError {}

/// An errno that is not one of the `NE_ERR_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownNeError(pub u32);

impl fmt::Display for UnknownNeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not an NE_ERR_* code (256 to 275)", self.0)
    }
}

impl core::error::Error for UnknownNeError {}

impl TryFrom<u32> for NeError {
    type Error = UnknownNeError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        NeError::ALL
            .into_iter()
            .find(|error| error.code() == value)
            .ok_or(UnknownNeError(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ioctl_numbers_match_kernel_encoding() {
        assert_eq!(NE_CREATE_VM, 0x8008_AE20);
        assert_eq!(NE_ADD_VCPU, 0xC004_AE21);
        assert_eq!(NE_GET_IMAGE_LOAD_INFO, 0xC010_AE22);
        assert_eq!(NE_SET_USER_MEMORY_REGION, 0x4018_AE23);
        assert_eq!(NE_START_ENCLAVE, 0xC010_AE24);
    }

    #[test]
    fn test_ne_error_codes_are_256_to_275_and_round_trip() {
        for (error, code) in NeError::ALL.into_iter().zip(256u32..) {
            assert_eq!(error.code(), code);
            assert_eq!(NeError::try_from(code), Ok(error));
            assert!(!error.message().is_empty());
        }
        assert_eq!(NeError::try_from(255), Err(UnknownNeError(255)));
        assert_eq!(NeError::try_from(276), Err(UnknownNeError(276)));
    }

    #[test]
    fn test_enclave_state_values() {
        for state in [
            EnclaveState::Init,
            EnclaveState::Running,
            EnclaveState::Stopped,
        ] {
            assert_eq!(EnclaveState::from_value(state.value()), Some(state));
        }
        assert_eq!(EnclaveState::Stopped.value(), 0xFFFF);
        assert_eq!(EnclaveState::from_value(1), None);
    }

    #[test]
    fn test_is_reserved_cid_refuses_1_to_3_u32_max_and_wider() {
        for cid in [1, 2, 3, u64::from(u32::MAX), 1 << 32, u64::MAX] {
            assert!(is_reserved_cid(cid), "{cid}");
        }
        for cid in [0, 4, 16, LAST_ENCLAVE_CID] {
            assert!(!is_reserved_cid(cid), "{cid}");
        }
    }
}
