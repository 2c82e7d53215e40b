// SPDX-License-Identifier: Apache-2.0
//! The Linux errno values that cross the interface: the device answers a rejected command
//! with `rc = -errno`, and the driver's ioctls fail with these (or an `NE_ERR_*` code,
//! [`crate::NeError`]). The values are the same on x86-64 and arm64
//! (`include/uapi/asm-generic/errno-base.h`, `errno.h`).

/// Operation not permitted: the CPU pool cannot change while enclaves exist.
pub const EPERM: i32 = 1;
/// No such file or directory: an unknown slot or CID, or the end of an iteration.
pub const ENOENT: i32 = 2;
/// I/O error: the hypervisor failed without saying how.
pub const EIO: i32 = 5;
/// Exec format error: the image in enclave memory is not a valid EIF.
pub const ENOEXEC: i32 = 8;
/// Out of memory.
pub const ENOMEM: i32 = 12;
/// Bad address: memory that is not mapped, or outside the parent's RAM.
pub const EFAULT: i32 = 14;
/// Device or resource busy: the slot's state, or a resource another slot holds.
pub const EBUSY: i32 = 16;
/// No such device: the device is disabled.
pub const ENODEV: i32 = 19;
/// Invalid argument: a malformed request.
pub const EINVAL: i32 = 22;
/// No space left on device: a configured limit is reached (slots, regions, vCPUs).
pub const ENOSPC: i32 = 28;
/// Address already in use: the CID belongs to a live enclave.
pub const EADDRINUSE: i32 = 98;
/// Cannot assign requested address: no CID is free.
pub const EADDRNOTAVAIL: i32 = 99;
/// Connection timed out: the device did not answer in time.
pub const ETIMEDOUT: i32 = 110;
