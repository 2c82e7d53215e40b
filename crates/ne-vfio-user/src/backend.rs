// SPDX-License-Identifier: Apache-2.0
//! The `vfio_user::ServerBackend` of the device: regions to config space and BAR 3, DMA maps
//! to parent RAM, `SET_IRQS` to eventfds. The client is untrusted: every offset and length
//! is checked before the device sees it, and nothing it sends can panic the server.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ne_device::config_space::{BAR_SIZE, CONFIG_SPACE_SIZE};
use ne_device::{DeviceConfig, NePciDevice, SimulatedHypervisor};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_BAR3_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};

use crate::irq::EventFdInterrupt;
use crate::ram::DmaMaps;

/// The device as the server runs it.
pub type ServedDevice = NePciDevice<EventFdInterrupt, SimulatedHypervisor>;

/// What the server loop and the control interface share.
#[derive(Debug)]
pub struct Shared {
    /// The device.
    pub device: Mutex<ServedDevice>,
    /// Its interrupts.
    pub irq: EventFdInterrupt,
    /// The client's DMA maps.
    pub dma: Mutex<DmaMaps>,
    /// The configuration to reset to.
    pub config: DeviceConfig,
    /// How long simulated enclave starts take; `None`: they complete in the doorbell write.
    pub start_delay: Option<std::time::Duration>,
}

impl Shared {
    /// A fresh device for `config` (validated by the caller) whose enclave starts take
    /// `start_delay` (see [`crate::starts`]).
    pub fn new(
        config: DeviceConfig,
        start_delay: Option<std::time::Duration>,
    ) -> io::Result<Shared> {
        let irq = EventFdInterrupt::default();
        let device = Self::fresh_device(&config, &irq, start_delay)?;
        Ok(Shared {
            device: Mutex::new(device),
            irq,
            dma: Mutex::new(DmaMaps::default()),
            config,
            start_delay,
        })
    }

    fn fresh_device(
        config: &DeviceConfig,
        irq: &EventFdInterrupt,
        start_delay: Option<std::time::Duration>,
    ) -> io::Result<ServedDevice> {
        let hypervisor = match start_delay {
            Some(_) => SimulatedHypervisor::deferred(),
            None => SimulatedHypervisor::new(),
        };
        NePciDevice::with_hypervisor(config.clone(), irq.clone(), hypervisor)
            .map_err(io::Error::other)
    }

    /// The device, locked.
    pub fn device(&self) -> MutexGuard<'_, ServedDevice> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Back to power-on: every enclave stopped, every slot freed, interrupts and DMA maps
    /// forgotten. What happens on a vfio reset and when a client goes away.
    pub fn reset(&self) -> io::Result<()> {
        self.irq.clear();
        self.dma
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let mut device = self.device();
        // ENABLE 0 stops every enclave through the hypervisor before the device is replaced.
        device
            .write_bar(ne_abi::regs::ENABLE, &[0])
            .map_err(io::Error::other)?;
        *device =
            NePciDevice::new(self.config.clone(), self.irq.clone()).map_err(io::Error::other)?;
        device.set_parent_ram(Vec::new()).map_err(io::Error::other)
    }
}

/// The backend one client's `vfio_user::Server::run` drives.
#[derive(Debug)]
pub struct Backend {
    shared: Arc<Shared>,
}

impl Backend {
    /// A backend over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Backend { shared }
    }
}

fn invalid(why: String) -> io::Error {
    tracing::warn!("client request refused: {why}");
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// Checks that `len` bytes at `offset` fit in a region of `size` bytes.
fn check_range(region: u32, offset: u64, len: usize, size: u64) -> io::Result<()> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len));
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(invalid(format!(
            "region {region}: {len} bytes at {offset:#x} exceed its {size} bytes"
        ))),
    }
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
                self.shared.device().read_config(offset, data);
                Ok(())
            }
            VFIO_PCI_BAR3_REGION_INDEX => {
                check_range(region, offset, data.len(), BAR_SIZE)?;
                self.shared.device().read_bar(offset, data);
                Ok(())
            }
            _ => Err(invalid(format!("region {region} does not exist"))),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
                self.shared
                    .device()
                    .write_config(offset, data)
                    .map_err(io::Error::other)
            }
            VFIO_PCI_BAR3_REGION_INDEX => {
                check_range(region, offset, data.len(), BAR_SIZE)?;
                self.shared
                    .device()
                    .write_bar(offset, data)
                    .map_err(io::Error::other)
            }
            _ => Err(invalid(format!("region {region} does not exist"))),
        }
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        _offset: u64,
        address: u64,
        size: u64,
        _fd: Option<File>,
    ) -> io::Result<()> {
        let mut dma = self
            .shared
            .dma
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !dma.map(address, size) {
            return Err(invalid(format!(
                "DMA map of {size:#x} bytes at {address:#x} is empty or wraps"
            )));
        }
        tracing::debug!(address, size, "DMA map");
        self.shared
            .device()
            .set_parent_ram(dma.parent_ram())
            .map_err(io::Error::other)
    }

    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        let mut dma = self
            .shared
            .dma
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !dma.unmap(address, size) {
            return Err(invalid(format!(
                "DMA unmap of {size:#x} bytes at {address:#x} wraps"
            )));
        }
        self.shared
            .device()
            .set_parent_ram(dma.parent_ram())
            .map_err(io::Error::other)
    }

    fn reset(&mut self) -> io::Result<()> {
        tracing::info!("device reset by the client");
        self.shared.reset()
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            // The device has no INTx or MSI: accept disabling them, refuse anything else.
            return if count == 0 {
                Ok(())
            } else {
                Err(invalid(format!("IRQ index {index} has no vectors")))
            };
        }
        let end = start
            .checked_add(count)
            .filter(|&end| end <= u32::from(ne_abi::pci::MSIX_VECTORS));
        let Some(end) = end else {
            return Err(invalid(format!(
                "MSI-X vectors {start}+{count} do not exist"
            )));
        };
        let trigger = flags & VFIO_IRQ_SET_ACTION_TRIGGER != 0;
        if trigger && flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            let mut fds = fds.into_iter();
            for vector in start..end {
                self.shared.irq.set(vector, fds.next());
            }
        } else if trigger && flags & VFIO_IRQ_SET_DATA_NONE != 0 && count == 0 {
            self.shared.irq.clear();
        }
        Ok(())
    }
}
