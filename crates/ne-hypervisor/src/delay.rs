// SPDX-License-Identifier: Apache-2.0
//! [`Delayed`]: a backend whose starts take a fixed time, measured on an injected
//! [`Clock`], as a VM boot would; to test how a driver and its users cope with slow starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ne_device::{HypervisorEvent, StartProgress, StartRefused};

use crate::backend::{Backend, StartRequest};

/// Monotonic time, as a duration since an arbitrary start.
pub trait Clock: Send + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told: for tests. Clones share the time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A backend whose starts complete `delay` after they began; running, stopping and ending
/// are the inner backend's.
#[derive(Debug)]
pub struct Delayed<B: Backend, C: Clock> {
    inner: B,
    clock: C,
    delay: Duration,
    starting: BTreeMap<u64, Duration>,
}

impl<B: Backend, C: Clock> Delayed<B, C> {
    /// Delays every start of `inner` by `delay` on `clock`.
    pub fn new(inner: B, clock: C, delay: Duration) -> Self {
        Delayed {
            inner,
            clock,
            delay,
            starting: BTreeMap::new(),
        }
    }
}

impl<B: Backend, C: Clock> Backend for Delayed<B, C> {
    fn start(&mut self, request: &StartRequest<'_>) -> Result<StartProgress, StartRefused> {
        self.inner.start(request)?;
        let due = self.clock.now().saturating_add(self.delay);
        self.starting.insert(request.enclave.slot_uid, due);
        Ok(StartProgress::InProgress)
    }

    fn stop(&mut self, slot_uid: u64) {
        self.starting.remove(&slot_uid);
        self.inner.stop(slot_uid);
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        let now = self.clock.now();
        let due = self
            .starting
            .iter()
            .find(|&(_, &due)| due <= now)
            .map(|(&uid, _)| uid);
        if let Some(slot_uid) = due {
            self.starting.remove(&slot_uid);
            return Some(HypervisorEvent::StartCompleted {
                slot_uid,
                result: Ok(()),
            });
        }
        self.inner.poll_event()
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let now = self.clock.now();
        let first = self
            .starting
            .values()
            .min()
            .map(|due| due.saturating_sub(now));
        match (first, self.inner.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn end(&mut self, slot_uid: u64, crash: bool) -> bool {
        !self.starting.contains_key(&slot_uid) && self.inner.end(slot_uid, crash)
    }

    fn console(&self, slot_uid: u64) -> Option<crate::Console> {
        self.inner.console(slot_uid)
    }

    fn describe(&self, slot_uid: u64) -> Vec<(&'static str, String)> {
        self.inner.describe(slot_uid)
    }
}
