// SPDX-License-Identifier: Apache-2.0
//! The seam between the driver and a device: BAR 3 accesses and the two MSI-X vectors.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use ne_abi::MsixVector;

/// BAR 3 of an NE device, wherever it is: in process, over vfio-user, mapped MMIO.
///
/// Offsets are relative to the BAR. Accesses must not fail: a device that is gone reads
/// zeros, as a PCI read of a removed device returns all ones or zeros and never traps.
pub trait Bar: Send + Sync {
    /// Reads `data.len()` bytes at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Counts the MSI-X messages the device raised, per vector, and lets the driver wait for
/// the next one: the part of an interrupt handler that wakes a waiter. Each vector wakes
/// only its own waiters: a reply must not wake the event worker (which would then contend
/// with the requester for the lock), as Linux's two handlers do not wake each other. A
/// vector nobody waits for wakes nobody: the standard condition variable makes a system
/// call on every notification, and a requester usually finds its reply already there.
#[derive(Debug, Default)]
pub struct Vectors {
    state: Mutex<Latch>,
    reply_raised: Condvar,
    event_raised: Condvar,
}

/// The counts, and how many threads sleep on each vector.
#[derive(Debug, Default)]
struct Latch {
    counts: VectorCounts,
    reply_sleepers: u32,
    event_sleepers: u32,
}

impl Latch {
    fn sleepers(&mut self, vector: MsixVector) -> &mut u32 {
        match vector {
            MsixVector::Reply => &mut self.reply_sleepers,
            MsixVector::Event => &mut self.event_sleepers,
        }
    }
}

/// How many times each vector was raised, and whether waiters should give up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorCounts {
    /// Vector 0 messages.
    pub reply: u64,
    /// Vector 1 messages.
    pub event: u64,
    /// Set when the driver is removed: every waiter returns.
    pub closed: bool,
}

impl VectorCounts {
    /// The count of `vector`.
    pub fn of(&self, vector: MsixVector) -> u64 {
        match vector {
            MsixVector::Reply => self.reply,
            MsixVector::Event => self.event,
        }
    }
}

impl Vectors {
    /// A latch that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one message on `vector` and wakes the waiters (the interrupt handler).
    pub fn raise(&self, vector: MsixVector) {
        let mut latch = self.lock();
        match vector {
            MsixVector::Reply => latch.counts.reply += 1,
            MsixVector::Event => latch.counts.event += 1,
        }
        let sleepers = *latch.sleepers(vector);
        drop(latch);
        if sleepers > 0 {
            self.raised(vector).notify_all();
        }
    }

    fn raised(&self, vector: MsixVector) -> &Condvar {
        match vector {
            MsixVector::Reply => &self.reply_raised,
            MsixVector::Event => &self.event_raised,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> VectorCounts {
        self.lock().counts
    }

    /// Wakes every waiter for good.
    pub fn close(&self) {
        self.lock().counts.closed = true;
        self.reply_raised.notify_all();
        self.event_raised.notify_all();
    }

    /// Waits until `vector` has been raised more than `seen` times, the latch is closed, or
    /// `deadline` passes (`None`: no deadline). Returns the counts then.
    pub fn wait_beyond(
        &self,
        vector: MsixVector,
        seen: u64,
        deadline: Option<Instant>,
    ) -> VectorCounts {
        let raised = self.raised(vector);
        let mut latch = self.lock();
        while latch.counts.of(vector) <= seen && !latch.counts.closed {
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => Some(left),
                    None => break,
                },
            };
            // Counted under the lock the raiser takes, so a raise after this sees a sleeper.
            *latch.sleepers(vector) += 1;
            latch = match left {
                None => raised.wait(latch).unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    raised
                        .wait_timeout(latch, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            *latch.sleepers(vector) -= 1;
        }
        latch.counts
    }

    fn lock(&self) -> MutexGuard<'_, Latch> {
        // The counts stay meaningful even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn test_a_sleeping_waiter_is_woken_by_its_vector_only() {
        let vectors = Arc::new(Vectors::new());
        let waiter = {
            let vectors = Arc::clone(&vectors);
            thread::spawn(move || vectors.wait_beyond(MsixVector::Event, 0, None))
        };
        // Give it time to sleep; a reply must not wake it.
        thread::sleep(Duration::from_millis(50));
        vectors.raise(MsixVector::Reply);
        thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a reply woke the event waiter");
        vectors.raise(MsixVector::Event);
        let counts = waiter.join().unwrap();
        assert_eq!((counts.reply, counts.event), (1, 1));
    }

    #[test]
    fn test_a_vector_raised_with_nobody_waiting_is_seen_by_the_next_wait() {
        let vectors = Vectors::new();
        vectors.raise(MsixVector::Reply);
        let deadline = Instant::now() + Duration::from_secs(5);
        let counts = vectors.wait_beyond(MsixVector::Reply, 0, Some(deadline));
        assert_eq!(counts.reply, 1);
        assert!(
            Instant::now() < deadline,
            "it waited for a raise that had happened"
        );
    }

    #[test]
    fn test_a_deadline_ends_the_wait_and_leaves_no_sleeper_counted() {
        let vectors = Vectors::new();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            vectors
                .wait_beyond(MsixVector::Reply, 0, Some(deadline))
                .reply,
            0
        );
        assert_eq!(vectors.lock().reply_sleepers, 0);
    }
}
