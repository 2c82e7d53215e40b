// SPDX-License-Identifier: Apache-2.0
//! What a host's PCI core does to the device before a driver's probe runs, for hosts that
//! embed the device without a real PCI core: memory decoding and bus mastering on
//! (`pci_enable_device`, `pci_set_master`), MSI-X enabled (`pci_alloc_irq_vectors`) and both
//! vectors unmasked (`request_irq`).

use ne_abi::MsixVector;

use crate::config_space::{MSIX_CONTROL, MSIX_ENABLE, PCI_COMMAND};
use crate::error::Error;
use crate::events::NeEvents;
use crate::hypervisor::Hypervisor;
use crate::interrupt::Interrupt;
use crate::msix;
use crate::NePciDevice;

/// PCI Command bits: memory space (1) and bus master (2).
const MEMORY_AND_BUS_MASTER: u16 = 0x0006;
/// Byte of an MSI-X table entry that holds its vector control word.
const VECTOR_CONTROL_AT: u64 = 12;

/// Enables the device as the PCI core would before the driver's probe.
pub fn enable<I: Interrupt, H: Hypervisor, E: NeEvents>(
    device: &mut NePciDevice<I, H, E>,
) -> Result<(), Error<I::Error>> {
    device.write_config(PCI_COMMAND as u64, &MEMORY_AND_BUS_MASTER.to_le_bytes())?;
    device.write_config(MSIX_CONTROL as u64, &MSIX_ENABLE.to_le_bytes())?;
    for vector in MsixVector::ALL {
        let entry = msix::TABLE_OFFSET + u64::from(vector.index()) * msix::ENTRY_BYTES as u64;
        device.write_bar(entry + VECTOR_CONTROL_AT, &0u32.to_le_bytes())?;
    }
    Ok(())
}
