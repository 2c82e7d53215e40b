// SPDX-License-Identifier: Apache-2.0
//! The Nitro Enclaves device served over vfio-user, so that a QEMU guest (≥ 10.1, with
//! `-device vfio-user-pci`) sees an NE PCI function and the unmodified Linux
//! `nitro_enclaves` driver binds to it.
//!
//! A thin adapter: [`backend::Backend`] maps the vfio-user regions to the device's config
//! space (256 bytes) and BAR 3 (8 KiB), the client's DMA maps to the parent RAM ranges that
//! `SLOT_ADD_MEM` is checked against, and `SET_IRQS` eventfds to the two MSI-X vectors. QEMU
//! emulates the MSI-X table itself, so the device raises vectors without gating them.
//!
//! One client at a time. When a client disconnects (or resets the device), every enclave
//! is stopped, every slot freed, and the server waits for the next client on the same
//! socket. The client is untrusted: malformed, truncated or out-of-range messages get an
//! error reply or a closed connection, never a crash.
//!
//! The backend that runs enclaves is chosen once, when the server is built. Commands
//! complete inside the BAR write that rings the doorbell, except enclave starts that take
//! time (a delayed backend, a VM boot): then the device holds the reply, the socket loop
//! goes on serving config and BAR messages, and the events pump finishes the start off
//! the loop and raises vector 0.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod backend;
pub mod control;
pub mod irq;

use std::io;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ne_device::config_space::{BAR_SIZE, CONFIG_SPACE_SIZE};
use ne_device::DeviceConfig;
use thiserror::Error;
use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_IRQ_INFO_EVENTFD, VFIO_PCI_BAR3_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{IrqInfo, Server, ServerRegion};

pub use backend::{Backend, ServedBackend, ServedDevice, ServedHypervisor, ServerState};

/// The default parent CPU count: enough for any ordinary QEMU guest (`-smp` up to 256).
pub const DEFAULT_PARENT_CPUS: u32 = 256;

/// Why serving failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration describes no usable device.
    #[error("Invalid device configuration")]
    Config(#[from] ne_device::ConfigError),
    /// The socket could not be created.
    #[error("Failed to listen on vfio-user socket {}", .path.display())]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: vfio_user::Error,
    },
    /// The device's backend or its events pump could not be started.
    #[error("Failed to start the device's backend")]
    Backend(#[source] io::Error),
}

/// The device configuration `nectl serve` uses by default: the usual limits, 256 parent
/// CPUs, no RAM until the client maps it, and no MSI-X gating (QEMU emulates the table).
pub fn default_device_config() -> DeviceConfig {
    DeviceConfig {
        parent_cpus: DEFAULT_PARENT_CPUS,
        parent_ram: Vec::new(),
        msix_gating: false,
        ..DeviceConfig::default()
    }
}

/// The regions the server declares: config space and BAR 3, read/write, not mappable.
fn regions() -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let size = match index {
                VFIO_PCI_CONFIG_REGION_INDEX => CONFIG_SPACE_SIZE as u64,
                VFIO_PCI_BAR3_REGION_INDEX => BAR_SIZE,
                _ => 0,
            };
            let flags = if size > 0 {
                VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
            } else {
                0
            };
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: u32::try_from(size_of::<vfio_region_info>()).unwrap_or(u32::MAX),
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas: Vec::new(),
                mmap_fd: None,
            }
        })
        .collect()
}

/// The interrupts the server declares: two MSI-X vectors, nothing else.
fn irqs() -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| IrqInfo {
            index,
            flags: VFIO_IRQ_INFO_EVENTFD,
            count: if index == VFIO_PCI_MSIX_IRQ_INDEX {
                u32::from(ne_abi::pci::MSIX_VECTORS)
            } else {
                0
            },
        })
        .collect()
}

/// A vfio-user server of the NE device on one socket.
#[derive(Debug)]
pub struct NeServer {
    socket: PathBuf,
    shared: Arc<ServerState>,
}

impl NeServer {
    /// A server for `config` on `socket` (not yet listening) whose enclaves are simulated.
    pub fn new(socket: &Path, config: DeviceConfig) -> Result<NeServer, Error> {
        Self::with_backend(socket, config, |_| {
            Ok(Box::new(ne_device::SimulatedHypervisor::new()))
        })
    }

    /// A server for `config` on `socket` whose enclaves the backend `backend` makes runs
    /// (it is given the notifier to signal when it has news). The backend is made once:
    /// vfio resets and new clients keep it.
    pub fn with_backend(
        socket: &Path,
        config: DeviceConfig,
        backend: impl FnOnce(ne_hypervisor::Notifier) -> io::Result<ServedBackend>,
    ) -> Result<NeServer, Error> {
        config.validate()?;
        let shared = ServerState::new(config, backend).map_err(Error::Backend)?;
        Ok(NeServer {
            socket: socket.to_owned(),
            shared,
        })
    }

    /// What the server shares with the control interface: the device, its interrupts and
    /// the client's DMA maps.
    pub fn shared(&self) -> Arc<ServerState> {
        Arc::clone(&self.shared)
    }

    /// Serves one client: listens, handles its messages until it disconnects, then resets
    /// the device and forgets the client's memory.
    pub fn serve_one(&self) -> Result<(), Error> {
        let server =
            Server::new(&self.socket, true, irqs(), regions()).map_err(|source| Error::Listen {
                path: self.socket.clone(),
                source,
            })?;
        tracing::info!(socket = %self.socket.display(), "waiting for a vfio-user client");
        let mut backend = Backend::new(Arc::clone(&self.shared));
        match server.run(&mut backend) {
            Ok(()) => tracing::info!("client disconnected"),
            Err(e) => tracing::warn!("client connection ended: {e}"),
        }
        drop(server);
        self.shared.disconnect();
        Ok(())
    }

    /// Serves clients one after another, forever.
    pub fn serve(&self) -> Result<(), Error> {
        loop {
            self.serve_one()?;
        }
    }
}
