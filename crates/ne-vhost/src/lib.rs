// SPDX-License-Identifier: Apache-2.0
//! One vhost-user device served to one front-end, on rust-vmm's `vhost-user-backend`: the
//! socket listens before [`serve_one`] returns (so QEMU may be started at once), a thread
//! serves the front-end that connects until it goes away, and [`Served::shutdown`] ends the
//! service whether or not a front-end ever came. Each enclave VM's vsock and NSM devices
//! are served this way.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// The virtio features every device here offers: `VIRTIO_F_VERSION_1`, and the vhost-user
/// protocol features (what QEMU 11.1 needs of them).
pub const FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// The event that stops a device's worker thread (`VhostUserBackend::exit_event`).
pub fn exit_event() -> Option<(EventConsumer, EventNotifier)> {
    new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
}

/// A served device: its socket, and the thread serving it.
#[derive(Debug)]
pub struct Served {
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    /// The vhost-user socket QEMU connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until the front-end is gone (or never came and the service was shut down).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Ends the service: a front-end that never came is replaced by a connection that
    /// closes at once; the socket file is removed.
    pub fn shutdown(mut self) {
        if let Some(thread) = self.thread.take() {
            if !thread.is_finished() {
                // Unblocks a listener still waiting for QEMU; harmless once QEMU connected.
                let _ = UnixStream::connect(&self.socket);
            }
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Listens on `socket` and serves `backend` to the one front-end that connects, in a thread
/// named `name`. `prepare` may register the backend's own event sources with the daemon's
/// epoll handlers before it starts; `ended` runs in the thread once the front-end is gone.
pub fn serve_one<B>(
    socket: &Path,
    name: &str,
    backend: B,
    prepare: impl FnOnce(&VhostUserDaemon<B>) -> io::Result<()>,
    ended: impl FnOnce() + Send + 'static,
) -> io::Result<Served>
where
    B: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + Clone + Send + Sync + 'static,
{
    let mut listener = Listener::new(socket, true).map_err(other)?;
    let mut daemon = VhostUserDaemon::new(
        name.to_owned(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(other)?;
    prepare(&daemon)?;
    let thread = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            match daemon.start(&mut listener) {
                Ok(()) => {
                    if let Err(e) = daemon.wait() {
                        tracing::debug!("vhost-user front-end ended: {e}");
                    }
                }
                Err(e) => tracing::debug!("no vhost-user front-end: {e}"),
            }
            for handler in daemon.get_epoll_handlers() {
                handler.send_exit_event();
            }
            ended();
        })?;
    Ok(Served {
        socket: socket.to_owned(),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use vhost::vhost_user::message::VhostUserProtocolFeatures;
    use vm_memory::GuestMemoryAtomic;

    use super::*;

    /// A device of one queue that does nothing.
    #[derive(Clone)]
    struct Idle;

    impl VhostUserBackend for Idle {
        type Bitmap = ();
        type Vring = VringRwLock;

        fn num_queues(&self) -> usize {
            1
        }
        fn max_queue_size(&self) -> usize {
            16
        }
        fn features(&self) -> u64 {
            0
        }
        fn protocol_features(&self) -> VhostUserProtocolFeatures {
            VhostUserProtocolFeatures::empty()
        }
        fn set_event_idx(&self, _enabled: bool) {}
        fn update_memory(&self, _memory: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
            Ok(())
        }
        fn handle_event(
            &self,
            _device_event: u16,
            _evset: vmm_sys_util::epoll::EventSet,
            _vrings: &[VringRwLock],
            _thread_id: usize,
        ) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_a_service_nobody_connected_to_ends_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("device.sock");
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let served = serve_one(
            &socket,
            "idle",
            Idle,
            |_| Ok(()),
            move || {
                flag.store(true, Ordering::SeqCst);
            },
        )
        .unwrap();
        assert!(socket.exists(), "it listens before serve_one returns");
        served.shutdown();
        assert!(!socket.exists());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ended.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the serving thread did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
