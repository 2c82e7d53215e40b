// SPDX-License-Identifier: Apache-2.0
//! Interrupts as eventfds: the client hands one per MSI-X vector in `SET_IRQS`, and a
//! vector is raised by adding 1 to its eventfd (cf. Firecracker's `EventFdTrigger`).

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use ne_device::{Interrupt, MsixVector};

/// The eventfds of the two vectors; clones share them.
#[derive(Clone, Debug, Default)]
pub struct EventFdInterrupt {
    fds: Arc<Mutex<[Option<File>; 2]>>,
}

impl EventFdInterrupt {
    /// Sets (or, with `None`, clears) the eventfd of vector `index`; false if the device has
    /// no such vector. The fd is made non-blocking: raising a vector must never wait on
    /// the client (QEMU's own eventfds are non-blocking already).
    pub fn set(&self, index: u32, fd: Option<File>) -> bool {
        let fd = fd.inspect(|fd| {
            if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
                let _ = rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK);
            }
        });
        let mut fds = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
        match fds.get_mut(usize::try_from(index).unwrap_or(usize::MAX)) {
            Some(slot) => {
                *slot = fd;
                true
            }
            None => false,
        }
    }

    /// Clears every eventfd.
    pub fn clear(&self) {
        *self.fds.lock().unwrap_or_else(PoisonError::into_inner) = [None, None];
    }
}

impl Interrupt for EventFdInterrupt {
    type Error = io::Error;

    /// Adds 1 to the vector's eventfd, without waiting: a full eventfd (or pipe) already
    /// holds a pending interrupt, so nothing is lost. A vector the client gave no eventfd
    /// is dropped, as a disabled MSI-X vector would be.
    fn trigger(&self, vector: MsixVector) -> io::Result<()> {
        let fds = self.fds.lock().unwrap_or_else(PoisonError::into_inner);
        match fds
            .get(usize::from(vector.index()))
            .and_then(Option::as_ref)
        {
            Some(mut fd) => match fd.write(&1u64.to_ne_bytes()) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}
