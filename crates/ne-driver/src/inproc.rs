// SPDX-License-Identifier: Apache-2.0
//! The driver wired to a device model in the same process: a [`Bar`] over a shared
//! [`NePciDevice`], whose interrupts raise a [`Vectors`] latch.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use ne_abi::MsixVector;
use ne_device::{Hypervisor, Interrupt, NeEvents, NePciDevice, NoEvents};

use crate::bar::{Bar, Vectors};
use crate::shared::lock;

impl Interrupt for Vectors {
    type Error = Infallible;

    fn trigger(&self, vector: MsixVector) -> Result<(), Infallible> {
        self.raise(vector);
        Ok(())
    }
}

/// A device model in this process whose vectors raise a [`Vectors`] latch.
pub type InProcDevice<H, E = NoEvents> = NePciDevice<Arc<Vectors>, H, E>;

/// BAR 3 of a device model shared with the host side (which injects faults and crashes).
pub struct InProcBar<H: Hypervisor, E: NeEvents = NoEvents> {
    device: Arc<Mutex<InProcDevice<H, E>>>,
}

impl<H: Hypervisor, E: NeEvents> std::fmt::Debug for InProcBar<H, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcBar").finish_non_exhaustive()
    }
}

impl<H: Hypervisor, E: NeEvents> InProcBar<H, E> {
    /// A BAR over `device`.
    pub fn new(device: Arc<Mutex<InProcDevice<H, E>>>) -> Self {
        InProcBar { device }
    }
}

impl<H: Hypervisor + Send, E: NeEvents + Send> Bar for InProcBar<H, E> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.device).read_bar(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // The latch cannot fail to raise a vector.
        let _ = lock(&self.device).write_bar(offset, data);
    }
}

/// What the PCI core does before the driver's probe runs ([`ne_device::pci_core::enable`]).
pub fn pci_enable<H: Hypervisor, E: NeEvents>(device: &mut InProcDevice<H, E>) {
    // The latch behind the interrupts cannot fail.
    let _ = ne_device::pci_core::enable(device);
}
