// SPDX-License-Identifier: Apache-2.0
//! What runs an enclave once its image checked out: the [`Backend`] trait, and the
//! simulated backend (`ne_device::SimulatedHypervisor`, which runs nothing).

use std::time::Duration;

use ne_device::{
    EnclaveSpec, Hypervisor, HypervisorEvent, SimulatedHypervisor, StartProgress, StartRefused,
};

use crate::console::Console;
use crate::image::EnclaveImage;
use crate::memory::ParentMemory;

/// Everything a backend is given to start an enclave.
#[derive(Clone, Copy, Debug)]
pub struct StartRequest<'a> {
    /// The slot, CID, flags, donated regions and vCPUs.
    pub enclave: &'a EnclaveSpec<'a>,
    /// The validated image found in the donated memory.
    pub image: &'a EnclaveImage,
    /// The parent's RAM, to find the files behind the donated regions.
    pub memory: &'a ParentMemory,
}

/// Runs enclaves whose image [`crate::NitroHypervisor`] has checked.
pub trait Backend: Send + std::fmt::Debug {
    /// Starts the enclave of `request`.
    fn start(&mut self, request: &StartRequest<'_>) -> Result<StartProgress, StartRefused>;

    /// Stops the enclave of `slot_uid`, running or still starting, and forgets it.
    fn stop(&mut self, slot_uid: u64);

    /// The next queued event, if any.
    fn poll_event(&mut self) -> Option<HypervisorEvent>;

    /// How long until the backend has news by the clock alone, if it is waiting for a
    /// time; `None` when only an outside event (a notification) can bring news.
    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    /// Makes the running enclave of `slot_uid` exit by itself (or crash); false if none
    /// runs there or the backend cannot. For operator tools and tests.
    fn end(&mut self, slot_uid: u64, crash: bool) -> bool;

    /// The console of the enclave of `slot_uid`, if the backend keeps one.
    fn console(&self, _slot_uid: u64) -> Option<Console> {
        None
    }

    /// A short description of the enclave of `slot_uid` for operators (its process, its
    /// accelerator, …), as key–value pairs.
    fn describe(&self, _slot_uid: u64) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn start(&mut self, request: &StartRequest<'_>) -> Result<StartProgress, StartRefused> {
        (**self).start(request)
    }
    fn stop(&mut self, slot_uid: u64) {
        (**self).stop(slot_uid);
    }
    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        (**self).poll_event()
    }
    fn next_wakeup(&self) -> Option<Duration> {
        (**self).next_wakeup()
    }
    fn end(&mut self, slot_uid: u64, crash: bool) -> bool {
        (**self).end(slot_uid, crash)
    }
    fn console(&self, slot_uid: u64) -> Option<Console> {
        (**self).console(slot_uid)
    }
    fn describe(&self, slot_uid: u64) -> Vec<(&'static str, String)> {
        (**self).describe(slot_uid)
    }
}

/// The simulated backend: nothing is booted; enclaves run until stopped, or until told
/// to exit or crash.
impl Backend for SimulatedHypervisor {
    fn start(&mut self, request: &StartRequest<'_>) -> Result<StartProgress, StartRefused> {
        Hypervisor::start(self, request.enclave)
    }

    fn stop(&mut self, slot_uid: u64) {
        Hypervisor::stop(self, slot_uid);
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        Hypervisor::poll_event(self)
    }

    fn end(&mut self, slot_uid: u64, crash: bool) -> bool {
        if crash {
            self.crash(slot_uid)
        } else {
            self.exit(slot_uid)
        }
    }

    fn describe(&self, slot_uid: u64) -> Vec<(&'static str, String)> {
        self.enclaves()
            .get(&slot_uid)
            .map(|_| vec![("Backend", "simulated".to_owned())])
            .unwrap_or_default()
    }
}
