// SPDX-License-Identifier: Apache-2.0
//! Delivering a backend's news: a [`Notifier`] the backend signals when something happened
//! (a VM exited), and a pump thread that then lets the device collect the backend's events
//! (`NePciDevice::process_hypervisor_events`). The pump also wakes when a backend waits
//! for a time ([`crate::Backend::next_wakeup`]).

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    signalled: bool,
    closed: bool,
}

/// A wake-up flag the backend raises and the pump waits on. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Notifier {
    /// A notifier nobody has signalled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the pump: the backend has news.
    pub fn notify(&self) {
        self.lock().signalled = true;
        self.inner.1.notify_all();
    }

    /// Stops the pump for good.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// Waits until signalled, closed, or `timeout` passes (`None`: no timeout); clears the
    /// signal. Returns false once closed.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut state = self.lock();
        while !state.signalled && !state.closed {
            state = match timeout {
                None => self
                    .inner
                    .1
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(timeout) => {
                    let (state, result) = self
                        .inner
                        .1
                        .wait_timeout(state, timeout)
                        .unwrap_or_else(PoisonError::into_inner);
                    if result.timed_out() {
                        let open = !state.closed;
                        return open;
                    }
                    state
                }
            };
        }
        state.signalled = false;
        !state.closed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the pump thread: each time `notifier` is signalled or the last wake-up is due,
/// it calls `step`, which processes the device's hypervisor events and returns the next
/// wake-up the backend asks for. Ends when the notifier is closed.
pub fn spawn_pump(
    name: &str,
    notifier: Notifier,
    mut step: impl FnMut() -> Option<Duration> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_owned()).spawn(move || {
        let mut wakeup = step();
        while notifier.wait(wakeup) {
            wakeup = step();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn test_pump_steps_once_at_start_and_once_per_notification_then_ends_on_close() {
        let notifier = Notifier::new();
        let steps = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let counter = Arc::clone(&steps);
        let pump = spawn_pump("test-pump", notifier.clone(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
            None
        })
        .unwrap();
        rx.recv().unwrap();
        notifier.notify();
        rx.recv().unwrap();
        notifier.close();
        pump.join().unwrap();
        assert_eq!(steps.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn test_wait_returns_false_once_closed() {
        let notifier = Notifier::new();
        notifier.close();
        assert!(!notifier.wait(None));
    }
}
