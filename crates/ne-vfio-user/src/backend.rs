// SPDX-License-Identifier: Apache-2.0
//! The `vfio_user::ServerBackend` of the device: regions to config space and BAR 3, DMA maps
//! (with their fds) to the parent RAM the hypervisor reads, `SET_IRQS` to eventfds. The client is untrusted: every offset and length
//! is checked before the device sees it, and nothing it sends can panic the server.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use ne_device::config_space::{BAR_SIZE, CONFIG_SPACE_SIZE};
use ne_device::{DeviceConfig, DeviceLog, NePciDevice};
use ne_hypervisor::{
    spawn_pump, Backend as EnclaveBackend, NitroHypervisor, Notifier, ParentMemory, SharedMemory,
};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_BAR3_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};

use crate::irq::EventFdInterrupt;

/// What runs the served device's enclaves, chosen when the server is built.
pub type ServedBackend = Box<dyn EnclaveBackend>;
/// The served device's hypervisor: the image check, then the backend.
pub type ServedHypervisor = NitroHypervisor<ServedBackend>;
/// The device as the server runs it.
pub type ServedDevice = NePciDevice<EventFdInterrupt, ServedHypervisor, Arc<DeviceLog>>;

/// What the server loop, the events pump and the control interface share.
#[derive(Debug)]
pub struct ServerState {
    device: Mutex<ServedDevice>,
    irq: EventFdInterrupt,
    memory: SharedMemory,
    log: Arc<DeviceLog>,
    notifier: Notifier,
}

impl ServerState {
    /// A device for `config` (validated by the caller) whose enclaves the backend that
    /// `backend` makes runs; `backend` is given the notifier to signal when it has news.
    /// Starts the pump that delivers that news.
    pub fn new(
        config: DeviceConfig,
        backend: impl FnOnce(Notifier) -> io::Result<ServedBackend>,
    ) -> io::Result<Arc<ServerState>> {
        let irq = EventFdInterrupt::default();
        let memory: SharedMemory = Arc::new(RwLock::new(ParentMemory::new()));
        let notifier = Notifier::new();
        let hypervisor = NitroHypervisor::new(Arc::clone(&memory), backend(notifier.clone())?);
        let log = Arc::new(DeviceLog::new());
        let device = NePciDevice::with_events(config, irq.clone(), hypervisor, Arc::clone(&log))
            .map_err(io::Error::other)?;
        let shared = Arc::new(ServerState {
            device: Mutex::new(device),
            irq,
            memory,
            log,
            notifier,
        });
        let pumped = Arc::downgrade(&shared);
        spawn_pump("ne-events", shared.notifier.clone(), move || {
            let shared = pumped.upgrade()?;
            let mut device = shared.device();
            if let Err(e) = device.process_hypervisor_events() {
                tracing::warn!("cannot deliver the backend's news: {e}");
            }
            device.hypervisor().next_wakeup()
        })?;
        Ok(shared)
    }

    /// The device, locked.
    pub fn device(&self) -> MutexGuard<'_, ServedDevice> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the device reported: counters, history, the last rejection.
    pub fn log(&self) -> &DeviceLog {
        &self.log
    }

    /// The client's RAM, as its DMA maps describe it.
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    /// A vfio reset: the device back to power-on (every enclave stopped, every slot
    /// freed); the client's DMA maps and interrupts stay, as QEMU does not send them again.
    pub fn reset(&self) {
        self.device().reset();
    }

    /// The client went away: a reset, and its DMA maps and interrupts forgotten.
    pub fn disconnect(&self) {
        self.irq.clear();
        let mut device = self.device();
        device.reset();
        self.memory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // An empty list is always valid.
        let _ = device.set_parent_ram(Vec::new());
    }

    /// Records a DMA map (replacing what it overlaps) and tells the device where RAM is.
    fn map(&self, address: u64, size: u64, fd: Option<File>, offset: u64) -> io::Result<()> {
        let mut memory = self.memory.write().unwrap_or_else(PoisonError::into_inner);
        if !memory.map(address, size, fd.map(Arc::new), offset) {
            return Err(invalid(format!(
                "DMA map of {size:#x} bytes at {address:#x} is empty or wraps"
            )));
        }
        tracing::debug!(address, size, offset, "DMA map");
        self.device()
            .set_parent_ram(memory.donatable_ranges())
            .map_err(io::Error::other)
    }

    /// Forgets a DMA map and tells the device where RAM is.
    fn unmap(&self, address: u64, size: u64) -> io::Result<()> {
        let mut memory = self.memory.write().unwrap_or_else(PoisonError::into_inner);
        if !memory.unmap(address, size) {
            return Err(invalid(format!(
                "DMA unmap of {size:#x} bytes at {address:#x} wraps"
            )));
        }
        self.device()
            .set_parent_ram(memory.donatable_ranges())
            .map_err(io::Error::other)
    }
}

impl Drop for ServerState {
    fn drop(&mut self) {
        self.notifier.close();
    }
}

/// The backend one client's `vfio_user::Server::run` drives.
#[derive(Debug)]
pub struct Backend {
    shared: Arc<ServerState>,
}

impl Backend {
    /// A backend over `shared`.
    pub fn new(shared: Arc<ServerState>) -> Self {
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
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        self.shared.map(address, size, fd, offset)
    }

    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        self.shared.unmap(address, size)
    }

    fn reset(&mut self) -> io::Result<()> {
        tracing::info!("device reset by the client");
        self.shared.reset();
        Ok(())
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
