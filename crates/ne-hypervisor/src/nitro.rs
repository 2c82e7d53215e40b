// SPDX-License-Identifier: Apache-2.0
//! [`NitroHypervisor`]: what the Nitro hypervisor does on `ENCLAVE_START` — find the image
//! at 8 MiB of the donated memory, validate and measure it, refuse a bad one with
//! `ENOEXEC` — before a [`Backend`] runs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ne_abi::errno::ENOEXEC;
use ne_device::{EnclaveSpec, Hypervisor, HypervisorEvent, StartProgress, StartRefused};

use crate::backend::{Backend, StartRequest};
use crate::image::{load_image, EnclaveImage};
use crate::memory::{read_lock, SharedMemory};

/// The device's hypervisor: the image check, then the backend.
#[derive(Debug)]
pub struct NitroHypervisor<B: Backend> {
    memory: SharedMemory,
    backend: B,
    images: BTreeMap<u64, Arc<EnclaveImage>>,
}

/// `error` and its sources, joined with `": "`: a whole reason on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl<B: Backend> NitroHypervisor<B> {
    /// A hypervisor reading images from `memory` and running them on `backend`.
    pub fn new(memory: SharedMemory, backend: B) -> Self {
        NitroHypervisor {
            memory,
            backend,
            images: BTreeMap::new(),
        }
    }

    /// The image of the enclave in slot `slot_uid`, while it is starting or running.
    pub fn image(&self, slot_uid: u64) -> Option<&Arc<EnclaveImage>> {
        self.images.get(&slot_uid)
    }

    /// The parent's RAM as this hypervisor reads it.
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to steer (make an enclave exit or crash).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// How long until the backend has news by the clock alone.
    pub fn next_wakeup(&self) -> Option<Duration> {
        self.backend.next_wakeup()
    }
}

impl<B: Backend> Hypervisor for NitroHypervisor<B> {
    fn start(&mut self, enclave: &EnclaveSpec<'_>) -> Result<StartProgress, StartRefused> {
        let memory = read_lock(&self.memory);
        let image = load_image(&memory, enclave.regions).map_err(|error| {
            let reason = format!("invalid enclave image: {}", error_chain(&error));
            tracing::warn!(
                slot = enclave.slot_uid,
                "refusing to start the enclave: {reason}"
            );
            StartRefused {
                errno: ENOEXEC,
                reason,
            }
        })?;
        let progress = self.backend.start(&StartRequest {
            enclave,
            image: &image,
            memory: &memory,
        })?;
        tracing::info!(
            slot = enclave.slot_uid,
            cid = enclave.cid,
            pcr0 = %image.measurements.pcr0,
            "enclave image accepted"
        );
        self.images.insert(enclave.slot_uid, Arc::new(image));
        Ok(progress)
    }

    fn stop(&mut self, slot_uid: u64) {
        self.backend.stop(slot_uid);
        self.images.remove(&slot_uid);
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        let event = self.backend.poll_event()?;
        match &event {
            HypervisorEvent::StartCompleted {
                slot_uid,
                result: Err(_),
            }
            | HypervisorEvent::Stopped { slot_uid, .. } => {
                self.images.remove(slot_uid);
            }
            HypervisorEvent::StartCompleted { result: Ok(()), .. } => {}
        }
        Some(event)
    }
}
