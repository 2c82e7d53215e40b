// SPDX-License-Identifier: Apache-2.0
//! The Linux kernel's NE driver, through `/dev/nitro_enclaves`: the only module of the
//! project that calls into the kernel directly, and so the only one with `unsafe`.
//!
//! [`KernelDevice::create_vm`] is `NE_CREATE_VM`; [`KernelEnclave`] wraps the enclave fd
//! and its ioctls; [`HugepageMemory`] is an anonymous 2 MiB-hugepage mapping to donate.
//! Failures are `io::Error`s whose raw OS error is the errno the driver set: an
//! `NE_ERR_*` code (256–275), a standard errno, or the device's.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

use ne_abi::uapi;
use ne_abi::{NeEnclaveStartInfo, NeImageLoadInfo, NeUserMemoryRegion};

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

    /// `NE_CREATE_VM`: a new enclave and its slot uid.
    pub fn create_vm(&self) -> io::Result<KernelEnclave> {
        let mut slot_uid = 0u64;
        // SAFETY: NE_CREATE_VM is _IOR(0xAE, 0x20, __u64): the kernel writes a u64.
        let fd = unsafe { ioctl_with(&self.file, uapi::NE_CREATE_VM, &mut slot_uid)? };
        // SAFETY: on success NE_CREATE_VM returns a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(KernelEnclave { fd, slot_uid })
    }
}

impl KernelEnclave {
    /// The slot uid the device gave.
    pub fn slot_uid(&self) -> u64 {
        self.slot_uid
    }

    /// `NE_ADD_VCPU`: adds CPU `id` (0: any from the pool); returns the CPU added.
    pub fn add_vcpu(&self, id: u32) -> io::Result<u32> {
        let mut id = id;
        // SAFETY: NE_ADD_VCPU is _IOWR(0xAE, 0x21, __u32).
        unsafe { ioctl_with(&self.fd, uapi::NE_ADD_VCPU, &mut id)? };
        Ok(id)
    }

    /// `NE_GET_IMAGE_LOAD_INFO`: where the image goes in enclave memory.
    pub fn image_load_info(&self, flags: u64) -> io::Result<u64> {
        let mut info = NeImageLoadInfo {
            flags,
            memory_offset: 0,
        };
        // SAFETY: NE_GET_IMAGE_LOAD_INFO is _IOWR with struct ne_image_load_info.
        unsafe { ioctl_with(&self.fd, uapi::NE_GET_IMAGE_LOAD_INFO, &mut info)? };
        Ok(info.memory_offset)
    }

    /// `NE_SET_USER_MEMORY_REGION`.
    pub fn set_user_memory_region(&self, region: NeUserMemoryRegion) -> io::Result<()> {
        let mut region = region;
        // SAFETY: NE_SET_USER_MEMORY_REGION is _IOW with struct ne_user_memory_region; the
        // kernel pins the user pages itself and fails cleanly on bad addresses.
        unsafe { ioctl_with(&self.fd, uapi::NE_SET_USER_MEMORY_REGION, &mut region)? };
        Ok(())
    }

    /// `NE_START_ENCLAVE`: starts it; returns its CID.
    pub fn start(&self, flags: u64, cid: u64) -> io::Result<u64> {
        let mut info = NeEnclaveStartInfo {
            flags,
            enclave_cid: cid,
        };
        // SAFETY: NE_START_ENCLAVE is _IOWR with struct ne_enclave_start_info.
        unsafe { ioctl_with(&self.fd, uapi::NE_START_ENCLAVE, &mut info)? };
        Ok(info.enclave_cid)
    }

    /// Polls the enclave fd for up to `timeout_ms`; true if it reported POLLHUP (the
    /// enclave stopped on its own).
    pub fn wait_hangup(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR | libc::POLLHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, borrowed for the call.
        let rc = unsafe { libc::poll(&raw mut pollfd, 1, timeout_ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pollfd.revents & libc::POLLHUP != 0)
    }
}

/// An anonymous private mapping backed by 2 MiB hugepages (`MAP_HUGETLB | MAP_HUGE_2MB`),
/// unmapped on drop.
#[derive(Debug)]
pub struct HugepageMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value; moving it to another thread
// moves that ownership.
unsafe impl Send for HugepageMemory {}

impl HugepageMemory {
    /// Maps `len` bytes (a multiple of 2 MiB) of hugepages.
    pub fn new(len: usize) -> io::Result<HugepageMemory> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | MAP_HUGE_2MB;
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
        Ok(HugepageMemory { ptr, len })
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

impl Drop for HugepageMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
