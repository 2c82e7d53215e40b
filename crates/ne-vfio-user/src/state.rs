// SPDX-License-Identifier: Apache-2.0
//! What the server keeps across clients: the device (with the backend chosen once), its
//! interrupts, the client's RAM as its DMA maps describe it, the device's log, and the
//! pump that delivers the backend's news.

use std::fs::File;
use std::io;

use ne_abi::errno::EINVAL;
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
    pub(crate) fn map(
        &self,
        address: u64,
        size: u64,
        fd: Option<File>,
        offset: u64,
    ) -> Result<(), Refusal> {
        let mut memory = self.memory.write().unwrap_or_else(PoisonError::into_inner);
        if !memory.map(address, size, fd.map(Arc::new), offset) {
            return Err(Refusal::invalid(format!(
                "DMA map of {size:#x} bytes at {address:#x} (offset {offset:#x}) is empty or wraps"
            )));
        }
        tracing::debug!(address, size, offset, "DMA map");
        self.device()
            .set_parent_ram(memory.donatable_ranges())
            .map_err(|e| Refusal::invalid(e.to_string()))
    }

    /// Forgets a DMA map and tells the device where RAM is.
    pub(crate) fn unmap(&self, address: u64, size: u64) -> Result<(), Refusal> {
        let mut memory = self.memory.write().unwrap_or_else(PoisonError::into_inner);
        if !memory.unmap(address, size) {
            return Err(Refusal::invalid(format!(
                "DMA unmap of {size:#x} bytes at {address:#x} wraps"
            )));
        }
        self.device()
            .set_parent_ram(memory.donatable_ranges())
            .map_err(|e| Refusal::invalid(e.to_string()))
    }

    /// Reads `data.len()` bytes of `region` at `offset`.
    pub(crate) fn region_read(
        &self,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), Refusal> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
                self.device().read_config(offset, data);
                Ok(())
            }
            VFIO_PCI_BAR3_REGION_INDEX => {
                check_range(region, offset, data.len(), BAR_SIZE)?;
                self.device().read_bar(offset, data);
                Ok(())
            }
            _ => Err(Refusal::invalid(format!("region {region} does not exist"))),
        }
    }

    /// Writes `data` to `region` at `offset`.
    pub(crate) fn region_write(
        &self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Refusal> {
        let written = match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                check_range(region, offset, data.len(), CONFIG_SPACE_SIZE as u64)?;
                self.device().write_config(offset, data)
            }
            VFIO_PCI_BAR3_REGION_INDEX => {
                check_range(region, offset, data.len(), BAR_SIZE)?;
                self.device().write_bar(offset, data)
            }
            _ => return Err(Refusal::invalid(format!("region {region} does not exist"))),
        };
        // A vector the client cannot take is its own loss; the write itself happened.
        if let Err(e) = written {
            tracing::debug!("raising a vector failed: {e}");
        }
        Ok(())
    }

    /// `SET_IRQS`: the eventfds of MSI-X vectors `start..start + count` (or none).
    pub(crate) fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), Refusal> {
        if index != VFIO_PCI_MSIX_IRQ_INDEX {
            // The device has no INTx or MSI: accept disabling them, refuse anything else.
            return if count == 0 {
                Ok(())
            } else {
                Err(Refusal::invalid(format!(
                    "IRQ index {index} has no vectors"
                )))
            };
        }
        let end = start
            .checked_add(count)
            .filter(|&end| end <= u32::from(ne_abi::pci::MSIX_VECTORS));
        let Some(end) = end else {
            return Err(Refusal::invalid(format!(
                "MSI-X vectors {start}+{count} do not exist"
            )));
        };
        let trigger = flags & VFIO_IRQ_SET_ACTION_TRIGGER != 0;
        if trigger && flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            let mut fds = fds.into_iter();
            for vector in start..end {
                self.irq.set(vector, fds.next());
            }
        } else if trigger && flags & VFIO_IRQ_SET_DATA_NONE != 0 && count == 0 {
            self.irq.clear();
        }
        Ok(())
    }
}

impl Drop for ServerState {
    fn drop(&mut self) {
        self.notifier.close();
    }
}

/// Why a client's request was refused: the errno its error reply carries, and why (for
/// the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The errno (positive, never 0).
    pub errno: i32,
    /// What was wrong.
    pub why: String,
}

impl Refusal {
    /// An `EINVAL` refusal.
    pub fn invalid(why: String) -> Refusal {
        Refusal { errno: EINVAL, why }
    }
}

/// Checks that `len` bytes at `offset` fit in a region of `size` bytes.
fn check_range(region: u32, offset: u64, len: usize, size: u64) -> Result<(), Refusal> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len));
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(Refusal::invalid(format!(
            "region {region}: {len} bytes at {offset:#x} exceed its {size} bytes"
        ))),
    }
}
