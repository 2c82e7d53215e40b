// SPDX-License-Identifier: Apache-2.0
//! The enclave API: what a process can do with `/dev/nitro_enclaves` and the enclave fd
//! `NE_CREATE_VM` returns, as two traits. The in-process driver implements them
//! ([`DeviceFile`], [`EnclaveFile`]) and so does the Linux kernel's driver
//! (`sys::KernelDevice`, `sys::KernelEnclave`), so a launch written once runs on both.
//!
//! Every failure is an [`Error`] whose [`Error::errno`] is what the ioctl sets.

use std::sync::Arc;
use std::time::Duration;

use ne_abi::NeUserMemoryRegion;

use crate::bar::Bar;
use crate::enclave::Enclave;
use crate::error::{Error, Result};
use crate::memory::UserMemory;
use crate::shared::Shared;

/// `/dev/nitro_enclaves`, opened.
pub trait EnclaveDevice {
    /// The enclave fd.
    type Enclave: EnclaveFd;

    /// `NE_CREATE_VM`: a new enclave in INIT state (the device allocates a slot).
    fn create_vm(&self) -> Result<Self::Enclave>;
}

impl<T: EnclaveDevice> EnclaveDevice for Arc<T> {
    type Enclave = T::Enclave;

    fn create_vm(&self) -> Result<Self::Enclave> {
        (**self).create_vm()
    }
}

/// The enclave fd: set an enclave up, start it, learn when it stops, release it.
pub trait EnclaveFd: Send + std::fmt::Debug {
    /// The device's slot uid (`NE_CREATE_VM`'s output).
    fn slot_uid(&self) -> u64;

    /// `NE_GET_IMAGE_LOAD_INFO`: where the image of type `flags` goes in enclave memory.
    fn image_load_info(&self, flags: u64) -> Result<u64>;

    /// `NE_SET_USER_MEMORY_REGION`: donates the hugepages at `region` of the caller's
    /// memory.
    fn set_user_memory_region(&self, region: NeUserMemoryRegion) -> Result<()>;

    /// `NE_ADD_VCPU`: adds parent CPU `vcpu_id` (0: any from the pool); returns it.
    fn add_vcpu(&self, vcpu_id: u32) -> Result<u32>;

    /// `NE_START_ENCLAVE`: starts the enclave with `flags`, at `cid` (0: any); returns
    /// the CID it got.
    fn start(&self, flags: u64, cid: u64) -> Result<u64>;

    /// `poll` on the fd for up to `timeout`: true once the enclave stopped by itself
    /// (`POLLHUP`), which stays true.
    fn wait_event(&self, timeout: Duration) -> Result<bool>;

    /// `close`: stops the enclave if it runs and frees its slot; reports what a close
    /// cannot (the in-process driver's refused `ENCLAVE_STOP` or `SLOT_FREE`).
    fn release(self) -> Result<()>
    where
        Self: Sized;
}

/// The in-process driver opened by a process whose memory is `M`: the memory that
/// `NE_SET_USER_MEMORY_REGION` pins pages from, as Linux uses the caller's `mm`.
pub struct DeviceFile<B: Bar + 'static, M> {
    shared: Arc<Shared<B>>,
    memory: Arc<M>,
}

impl<B: Bar + 'static, M> std::fmt::Debug for DeviceFile<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFile").finish_non_exhaustive()
    }
}

impl<B: Bar + 'static, M> DeviceFile<B, M> {
    pub(crate) fn new(shared: Arc<Shared<B>>, memory: Arc<M>) -> Self {
        DeviceFile { shared, memory }
    }
}

/// An enclave of the in-process driver, with the memory of the process that made it.
pub struct EnclaveFile<B: Bar + 'static, M> {
    enclave: Enclave<B>,
    memory: Arc<M>,
}

impl<B: Bar + 'static, M> std::fmt::Debug for EnclaveFile<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveFile")
            .field("enclave", &self.enclave)
            .finish_non_exhaustive()
    }
}

impl<B: Bar + 'static, M> EnclaveFile<B, M> {
    /// The driver's view of the enclave.
    pub fn enclave(&self) -> &Enclave<B> {
        &self.enclave
    }
}

impl<B: Bar + 'static, M: UserMemory + Send + Sync> EnclaveDevice for DeviceFile<B, M> {
    type Enclave = EnclaveFile<B, M>;

    fn create_vm(&self) -> Result<Self::Enclave> {
        Ok(EnclaveFile {
            enclave: self.shared.create_vm()?,
            memory: Arc::clone(&self.memory),
        })
    }
}

impl<B: Bar + 'static, M: UserMemory + Send + Sync> EnclaveFd for EnclaveFile<B, M> {
    fn slot_uid(&self) -> u64 {
        self.enclave.slot_uid()
    }

    fn image_load_info(&self, flags: u64) -> Result<u64> {
        self.enclave.image_load_info(flags)
    }

    fn set_user_memory_region(&self, region: NeUserMemoryRegion) -> Result<()> {
        self.enclave
            .set_user_memory_region(region, self.memory.as_ref())
    }

    fn add_vcpu(&self, vcpu_id: u32) -> Result<u32> {
        self.enclave.add_vcpu(vcpu_id)
    }

    fn start(&self, flags: u64, cid: u64) -> Result<u64> {
        self.enclave.start(flags, cid)
    }

    fn wait_event(&self, timeout: Duration) -> Result<bool> {
        Ok(self.enclave.wait_event(timeout))
    }

    fn release(self) -> Result<()> {
        self.enclave.release()
    }
}

/// The error an ioctl failing with `errno` stands for: an `NE_ERR_*` code (256–275) as
/// [`Error::Ne`], anything else as [`Error::Errno`] with `context`.
pub fn error_from_errno(errno: i32, context: impl Into<String>) -> Error {
    match u32::try_from(errno)
        .ok()
        .and_then(|code| ne_abi::NeError::try_from(code).ok())
    {
        Some(ne) => Error::Ne(ne),
        None => Error::Errno {
            errno,
            context: context.into(),
        },
    }
}
