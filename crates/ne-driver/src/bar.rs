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
/// with the requester for the lock), as Linux's two handlers do not wake each other.
#[derive(Debug, Default)]
pub struct Vectors {
    counts: Mutex<VectorCounts>,
    reply_raised: Condvar,
    event_raised: Condvar,
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
        let mut counts = self.lock();
        match vector {
            MsixVector::Reply => counts.reply += 1,
            MsixVector::Event => counts.event += 1,
        }
        drop(counts);
        self.raised(vector).notify_all();
    }

    fn raised(&self, vector: MsixVector) -> &Condvar {
        match vector {
            MsixVector::Reply => &self.reply_raised,
            MsixVector::Event => &self.event_raised,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> VectorCounts {
        *self.lock()
    }

    /// Wakes every waiter for good.
    pub fn close(&self) {
        self.lock().closed = true;
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
        let mut counts = self.lock();
        while counts.of(vector) <= seen && !counts.closed {
            match deadline {
                None => {
                    counts = raised.wait(counts).unwrap_or_else(PoisonError::into_inner);
                }
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    counts = raised
                        .wait_timeout(counts, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        *counts
    }

    fn lock(&self) -> MutexGuard<'_, VectorCounts> {
        // The counts stay meaningful even if a holder panicked.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
