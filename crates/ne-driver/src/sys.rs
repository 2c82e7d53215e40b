// SPDX-License-Identifier: Apache-2.0
//! The Linux kernel's NE driver, through `/dev/nitro_enclaves`: the only module of the
//! project that calls into the kernel directly, and so the only one with `unsafe`.
//!
//! [`KernelDevice::create_vm`] is `NE_CREATE_VM`; [`KernelEnclave`] wraps the enclave fd
//! and its ioctls; [`AnonMapping`] is an anonymous mapping (of 2 MiB hugepages, to donate).
//! They implement the enclave API ([`EnclaveDevice`], [`EnclaveFd`]); an ioctl's failure
//! becomes the driver [`Error`] of its errno: an `NE_ERR_*` code (256–275), a standard
//! errno, or the device's.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use ne_abi::uapi;
use ne_abi::{NeEnclaveStartInfo, NeImageLoadInfo, NeUserMemoryRegion};

use crate::api::{error_from_errno, EnclaveDevice, EnclaveFd};
use crate::error::{Error, Result};

/// `MAP_HUGE_2MB`: log2(2 MiB) in the mmap flags' huge-page-size field.
const MAP_HUGE_2MB: libc::c_int = 21 << libc::MAP_HUGE_SHIFT;

/// The misc device `/dev/nitro_enclaves`.
#[derive(Debug)]
pub struct KernelDevice {
    file: File,
}

/// An enclave fd returned by `NE_CREATE_VM`. Closing it (dropping) releases the enclave.
#[derive(Debug)]
pub struct KernelEnclave {
    fd: OwnedFd,
    slot_uid: u64,
}

/// Runs an ioctl whose argument is `arg`, turning -1 into the errno.
///
/// # Safety
/// `request` must be an ioctl of `fd` whose argument is a pointer to a `T`, read and/or
/// written by the kernel only within `size_of::<T>()` bytes.
unsafe fn ioctl_with<T>(fd: &impl AsRawFd, request: u32, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees the request takes a `*mut T`; `arg` is a valid,
    // exclusive reference for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::c_ulong::from(request),
            std::ptr::from_mut(arg),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl KernelDevice {
    /// Opens the device (usually `/dev/nitro_enclaves`).
    pub fn open(path: &Path) -> io::Result<KernelDevice> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(KernelDevice { file })
    }
}

/// The driver error an ioctl's `io::Error` stands for (its errno: an `NE_ERR_*` code or a
/// standard one).
fn ioctl_error(what: &str, error: &io::Error) -> Error {
    let errno = error.raw_os_error().unwrap_or(crate::errno::EIO);
    error_from_errno(errno, format!("{what}: {error}"))
}

impl EnclaveDevice for KernelDevice {
    type Enclave = KernelEnclave;

    fn create_vm(&self) -> Result<KernelEnclave> {
        let mut slot_uid = 0u64;
        // SAFETY: NE_CREATE_VM is _IOR(0xAE, 0x20, __u64): the kernel writes a u64.
        let fd = unsafe { ioctl_with(&self.file, uapi::NE_CREATE_VM, &mut slot_uid) }
            .map_err(|e| ioctl_error("NE_CREATE_VM", &e))?;
        // SAFETY: on success NE_CREATE_VM returns a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(KernelEnclave { fd, slot_uid })
    }
}

impl EnclaveFd for KernelEnclave {
    fn slot_uid(&self) -> u64 {
        self.slot_uid
    }

    fn add_vcpu(&self, id: u32) -> Result<u32> {
        let mut id = id;
        // SAFETY: NE_ADD_VCPU is _IOWR(0xAE, 0x21, __u32).
        unsafe { ioctl_with(&self.fd, uapi::NE_ADD_VCPU, &mut id) }
            .map_err(|e| ioctl_error("NE_ADD_VCPU", &e))?;
        Ok(id)
    }

    fn image_load_info(&self, flags: u64) -> Result<u64> {
        let mut info = NeImageLoadInfo {
            flags,
            memory_offset: 0,
        };
        // SAFETY: NE_GET_IMAGE_LOAD_INFO is _IOWR with struct ne_image_load_info.
        unsafe { ioctl_with(&self.fd, uapi::NE_GET_IMAGE_LOAD_INFO, &mut info) }
            .map_err(|e| ioctl_error("NE_GET_IMAGE_LOAD_INFO", &e))?;
        Ok(info.memory_offset)
    }

    fn set_user_memory_region(&self, region: NeUserMemoryRegion) -> Result<()> {
        let mut region = region;
        // SAFETY: NE_SET_USER_MEMORY_REGION is _IOW with struct ne_user_memory_region; the
        // kernel pins the user pages itself and fails cleanly on bad addresses.
        unsafe { ioctl_with(&self.fd, uapi::NE_SET_USER_MEMORY_REGION, &mut region) }
            .map_err(|e| ioctl_error("NE_SET_USER_MEMORY_REGION", &e))?;
        Ok(())
    }

    fn start(&self, flags: u64, cid: u64) -> Result<u64> {
        let mut info = NeEnclaveStartInfo {
            flags,
            enclave_cid: cid,
        };
        // SAFETY: NE_START_ENCLAVE is _IOWR with struct ne_enclave_start_info.
        unsafe { ioctl_with(&self.fd, uapi::NE_START_ENCLAVE, &mut info) }
            .map_err(|e| ioctl_error("NE_START_ENCLAVE", &e))?;
        Ok(info.enclave_cid)
    }

    fn wait_event(&self, timeout: Duration) -> Result<bool> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR | libc::POLLHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, borrowed for the call.
        let rc = unsafe { libc::poll(&raw mut pollfd, 1, timeout_ms) };
        if rc < 0 {
            return Err(ioctl_error("poll", &io::Error::last_os_error()));
        }
        Ok(pollfd.revents & libc::POLLHUP != 0)
    }

    /// Closes the fd; the kernel's release reports no error.
    fn release(self) -> Result<()> {
        drop(self.fd);
        Ok(())
    }
}

/// An anonymous private mapping, unmapped on drop: 2 MiB hugepages to donate
/// ([`AnonMapping::hugepages`]), or plain pages ([`AnonMapping::plain`], which the driver
/// refuses, for conformance tests).
#[derive(Debug)]
pub struct AnonMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value; moving it to another thread
// moves that ownership.
unsafe impl Send for AnonMapping {}

impl AnonMapping {
    /// Maps `len` bytes (a multiple of 2 MiB) of 2 MiB hugepages
    /// (`MAP_HUGETLB | MAP_HUGE_2MB`).
    pub fn hugepages(len: usize) -> io::Result<AnonMapping> {
        Self::map(len, libc::MAP_HUGETLB | MAP_HUGE_2MB)
    }

    /// Maps `len` bytes of plain 4 KiB pages.
    pub fn plain(len: usize) -> io::Result<AnonMapping> {
        Self::map(len, 0)
    }

    fn map(len: usize, extra_flags: libc::c_int) -> io::Result<AnonMapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; no existing
        // memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(AnonMapping { ptr, len })
    }

    /// The mapping's user address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The mapping's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` readable and writable bytes owned by `self`, borrowed
        // mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
