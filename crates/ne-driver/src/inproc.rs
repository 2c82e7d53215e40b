// SPDX-License-Identifier: Apache-2.0
//! The driver wired to a device model in the same process: a [`Bar`] over a shared
//! [`NePciDevice`], whose interrupts raise a [`Vectors`] latch.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use ne_abi::MsixVector;
use ne_device::config_space::{COMMAND, MSIX_CONTROL, MSIX_ENABLE};
use ne_device::{msix, Hypervisor, Interrupt, NePciDevice};

use crate::bar::{Bar, Vectors};
use crate::device::lock;

impl Interrupt for Vectors {
    type Error = Infallible;

    fn trigger(&self, vector: MsixVector) -> Result<(), Infallible> {
        self.raise(vector);
        Ok(())
    }
}

/// A device model in this process whose vectors raise a [`Vectors`] latch.
pub type InProcDevice<H> = NePciDevice<Arc<Vectors>, H>;

/// BAR 3 of a device model shared with the host side (which injects faults and crashes).
pub struct InProcBar<H: Hypervisor> {
    device: Arc<Mutex<InProcDevice<H>>>,
}

impl<H: Hypervisor> std::fmt::Debug for InProcBar<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcBar").finish_non_exhaustive()
    }
}

impl<H: Hypervisor> InProcBar<H> {
    /// A BAR over `device`.
    pub fn new(device: Arc<Mutex<InProcDevice<H>>>) -> Self {
        InProcBar { device }
    }
}

impl<H: Hypervisor + Send> Bar for InProcBar<H> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.device).read_bar(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // The latch cannot fail to raise a vector.
        let _ = lock(&self.device).write_bar(offset, data);
    }
}

/// What the PCI core does before the driver's probe runs: memory decoding and bus
/// mastering on, MSI-X enabled and both vectors unmasked (`pci_enable_device`,
/// `pci_set_master`, `pci_alloc_irq_vectors`, `request_irq`).
pub fn pci_enable<H: Hypervisor>(device: &mut InProcDevice<H>) {
    // Memory space and bus master.
    let _ = device.write_config(COMMAND as u64, &0x0006u16.to_le_bytes());
    let _ = device.write_config(MSIX_CONTROL as u64, &MSIX_ENABLE.to_le_bytes());
    for vector in MsixVector::ALL {
        let control =
            msix::TABLE_OFFSET + u64::from(vector.index()) * msix::ENTRY_BYTES as u64 + 12;
        device.write_bar(control, &0u32.to_le_bytes()).ok();
    }
}
