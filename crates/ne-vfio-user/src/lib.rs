// SPDX-License-Identifier: Apache-2.0
//! The Nitro Enclaves device served over vfio-user, so that a QEMU guest (≥ 10.1, with
//! `-device vfio-user-pci`) sees an NE PCI function and the unmodified Linux
//! `nitro_enclaves` driver binds to it.
//!
//! A thin adapter: the vfio-user regions map to the device's config space (256 bytes) and
//! BAR 3 (8 KiB), the client's DMA maps (with their fds) to the parent RAM the hypervisor
//! reads and `SLOT_ADD_MEM` is checked against, and `SET_IRQS` eventfds to the two MSI-X
//! vectors. QEMU emulates the MSI-X table itself, so the device raises vectors without
//! gating them.
//!
//! The client is untrusted. The message loop is the project's own ([`wire`], `session`):
//! every message is read whole (a split header included) and bounded before anything is
//! allocated, decoded from exactly its own bytes, and answered — errors with a non-zero
//! errno; a message the stream cannot be followed past closes the connection. Raising an
//! interrupt never waits on the client's eventfd.
//!
//! One client at a time: another that connects meanwhile is closed within half a second (a
//! client reconnecting while its old session is still ending is served instead). When a client
//! disconnects, every enclave is stopped, every slot freed and its memory forgotten; a vfio
//! reset stops and frees too, but keeps the DMA maps (QEMU does not send them again). The
//! socket stays bound for the server's life, so reconnecting clients are never refused.
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

pub mod control;
pub mod irq;
mod session;
mod state;
pub mod wire;

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ne_device::DeviceConfig;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use thiserror::Error;

pub use session::Ended;
pub use state::{Refusal, ServedBackend, ServedDevice, ServedHypervisor, ServerState};

/// The default parent CPU count: enough for any ordinary QEMU guest (`-smp` up to 256).
pub const DEFAULT_PARENT_CPUS: u32 = 256;
/// How often the accept loop looks whether the session ended.
const ACCEPT_TICK: Duration = Duration::from_millis(100);
/// How long a client that connects while a session is ending waits for that end (the
/// device reset after a disconnect) before it is refused as a second client.
const HANDOVER: Duration = Duration::from_millis(500);

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
        source: io::Error,
    },
    /// The device's backend or its events pump could not be started.
    #[error("Failed to start the device's backend")]
    Backend(#[source] io::Error),
    /// Accepting a client failed for good.
    #[error("Failed to accept a client")]
    Accept(#[source] io::Error),
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

/// A vfio-user server of the NE device on one socket. It listens from construction until
/// it is dropped (then its socket file is removed); clients are served one at a time, and
/// a client that connects while another is served is refused within half a second (its
/// connection is closed), never left waiting.
#[derive(Debug)]
pub struct NeServer {
    socket: PathBuf,
    listener: UnixListener,
    shared: Arc<ServerState>,
}

impl NeServer {
    /// A server for `config` listening on `socket`, whose enclaves are simulated.
    pub fn new(socket: &Path, config: DeviceConfig) -> Result<NeServer, Error> {
        Self::with_backend(socket, config, |_| {
            Ok(Box::new(ne_device::SimulatedHypervisor::new()))
        })
    }

    /// A server for `config` listening on `socket`, whose enclaves the backend `backend`
    /// makes runs (it is given the notifier to signal when it has news). The backend is
    /// made once: vfio resets and new clients keep it. A socket file with a live server
    /// behind it is refused; a stale one (its server was killed) is replaced.
    pub fn with_backend(
        socket: &Path,
        config: DeviceConfig,
        backend: impl FnOnce(ne_hypervisor::Notifier) -> io::Result<ServedBackend>,
    ) -> Result<NeServer, Error> {
        config.validate()?;
        let shared = ServerState::new(config, backend).map_err(Error::Backend)?;
        let listener = ne_jsonl::bind_exclusive(socket).map_err(|source| Error::Listen {
            path: socket.to_owned(),
            source,
        })?;
        tracing::info!(socket = %socket.display(), "listening for vfio-user clients");
        Ok(NeServer {
            socket: socket.to_owned(),
            listener,
            shared,
        })
    }

    /// What the server shares with the control interface: the device, its interrupts and
    /// the client's DMA maps.
    pub fn shared(&self) -> Arc<ServerState> {
        Arc::clone(&self.shared)
    }

    /// Serves one client to its end (then resets the device and forgets the client's
    /// memory), refusing any other client meanwhile.
    pub fn serve_one(&self) -> Result<Ended, Error> {
        self.serve_clients(Some(1))
            .map(|mut ended| ended.pop().unwrap_or(Ended::Closed))
    }

    /// Serves clients one after another, forever.
    pub fn serve(&self) -> Result<(), Error> {
        self.serve_clients(None).map(drop)
    }

    /// Serves `count` clients (`None`: forever); returns how each session ended.
    fn serve_clients(&self, count: Option<usize>) -> Result<Vec<Ended>, Error> {
        let (done_tx, done_rx) = channel::<Ended>();
        let mut busy = false;
        let mut ended = Vec::new();
        loop {
            if let Ok(end) = done_rx.try_recv() {
                busy = false;
                ended.push(end);
                if count.is_some_and(|count| ended.len() >= count) {
                    return Ok(ended);
                }
            }
            if !self.wait_for_client()? {
                continue;
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of fds, most likely: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    thread::sleep(ACCEPT_TICK);
                    continue;
                }
            };
            if busy {
                // A client that reconnects may arrive before the old session has ended.
                match done_rx.recv_timeout(HANDOVER) {
                    Ok(end) => {
                        ended.push(end);
                        if count.is_some_and(|count| ended.len() >= count) {
                            return Ok(ended);
                        }
                    }
                    Err(_) => {
                        tracing::warn!("a second client connected while one is served: refused");
                        drop(stream);
                        continue;
                    }
                }
            }
            busy = true;
            self.start_session(stream, done_tx.clone())?;
        }
    }

    /// Waits up to a tick for a client to connect; true when one is waiting.
    fn wait_for_client(&self) -> Result<bool, Error> {
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(ACCEPT_TICK.as_nanos()).unwrap_or(100_000_000),
        };
        match poll(&mut fds, Some(&tick)) {
            Ok(ready) => Ok(ready > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(Error::Accept(e.into())),
        }
    }

    /// Serves `stream` on a thread of its own; its end is sent to `done`.
    fn start_session(&self, stream: UnixStream, done: Sender<Ended>) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("ne-vfio-user".to_owned())
            .spawn(move || {
                tracing::info!("vfio-user client connected");
                let end = session::serve(&shared, &stream);
                match &end {
                    Ended::Closed => tracing::info!("client disconnected"),
                    Ended::Broken(why) => tracing::warn!("client connection ended: {why}"),
                }
                shared.disconnect();
                let _ = done.send(end);
            })
            .map(drop)
            .map_err(Error::Accept)
    }
}

impl Drop for NeServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
