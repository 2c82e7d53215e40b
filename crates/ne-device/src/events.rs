// SPDX-License-Identifier: Apache-2.0
//! What the device reports as it works, for logs, metrics and operator tools: an injected
//! sink in vm-superio's `*Events` style, so the device itself keeps no history or counters.
//!
//! [`NoEvents`] ignores everything (the default); [`DeviceLog`] keeps counters, the last
//! [`HISTORY_LEN`] commands and the last rejection, for tests and the control socket.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::CmdError;

/// Hooks the device calls as it works. Every method has an empty default.
pub trait NeEvents {
    /// The driver wrote `NE_COMMAND` with `value`.
    fn doorbell(&self, _value: u32) {}
    /// A doorbell arrived while a command was pending, and was ignored.
    fn doorbell_ignored(&self, _value: u32) {}
    /// A command completed: its number and the reply's rc (`None`: fault injection
    /// dropped the reply).
    fn command_completed(&self, _command: u32, _rc: Option<i32>) {}
    /// A command was rejected, and why (before [`NeEvents::command_completed`]).
    fn command_rejected(&self, _command: u32, _error: &CmdError) {}
    /// A reply was written to `NE_RECV_DATA` (and vector 0 requested).
    fn reply_published(&self) {}
    /// Fault injection dropped a reply.
    fn reply_dropped(&self) {}
    /// An enclave stopped by itself and vector 1 was requested.
    fn event_raised(&self, _slot_uid: u64) {}
    /// A BAR access touched nothing the driver may act on: reserved or read-only bytes,
    /// or bytes outside the BAR.
    fn invalid_access(&self, _offset: u64, _len: usize) {}
}

/// A sink that ignores everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoEvents;

impl NeEvents for NoEvents {}

impl<T: NeEvents + ?Sized> NeEvents for Arc<T> {
    fn doorbell(&self, value: u32) {
        (**self).doorbell(value);
    }
    fn doorbell_ignored(&self, value: u32) {
        (**self).doorbell_ignored(value);
    }
    fn command_completed(&self, command: u32, rc: Option<i32>) {
        (**self).command_completed(command, rc);
    }
    fn command_rejected(&self, command: u32, error: &CmdError) {
        (**self).command_rejected(command, error);
    }
    fn reply_published(&self) {
        (**self).reply_published();
    }
    fn reply_dropped(&self) {
        (**self).reply_dropped();
    }
    fn event_raised(&self, slot_uid: u64) {
        (**self).event_raised(slot_uid);
    }
    fn invalid_access(&self, offset: u64, len: usize) {
        (**self).invalid_access(offset, len);
    }
}

/// Counters of what the device has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// `NE_COMMAND` writes.
    pub doorbells: u64,
    /// Replies written to `NE_RECV_DATA` (each followed by one vector-0 request).
    pub replies: u64,
    /// Out-of-band events (each followed by one vector-1 request).
    pub events: u64,
    /// Doorbells ignored because a command was still pending.
    pub ignored_doorbells: u64,
    /// Replies dropped by fault injection.
    pub dropped_replies: u64,
    /// BAR accesses that touched nothing the driver may act on.
    pub invalid_accesses: u64,
}

/// How many completed commands [`DeviceLog`] remembers.
pub const HISTORY_LEN: usize = 1024;

/// One completed command: what the driver asked and what the device answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// The number written to `NE_COMMAND`.
    pub command: u32,
    /// The reply's rc; `None` when fault injection dropped the reply.
    pub rc: Option<i32>,
}

/// The last command the device rejected, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The command number written to `NE_COMMAND`.
    pub command: u32,
    /// Why it was rejected.
    pub error: CmdError,
}

#[derive(Debug, Default)]
struct LogInner {
    stats: DeviceStats,
    history: VecDeque<CommandRecord>,
    last_rejection: Option<Rejection>,
}

/// A sink that counts, keeps the last [`HISTORY_LEN`] commands and the last rejection.
/// Share it with `Arc` to read it while the device runs.
#[derive(Debug, Default)]
pub struct DeviceLog {
    inner: Mutex<LogInner>,
}

impl DeviceLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters so far.
    pub fn stats(&self) -> DeviceStats {
        self.lock().stats
    }

    /// The last completed commands, oldest first.
    pub fn history(&self) -> Vec<CommandRecord> {
        self.lock().history.iter().copied().collect()
    }

    /// The last command rejected and why: what a log line would say.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.lock().last_rejection.clone()
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // Counters stay meaningful even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NeEvents for DeviceLog {
    fn doorbell(&self, _value: u32) {
        self.lock().stats.doorbells += 1;
    }

    fn doorbell_ignored(&self, _value: u32) {
        self.lock().stats.ignored_doorbells += 1;
    }

    fn command_completed(&self, command: u32, rc: Option<i32>) {
        let mut inner = self.lock();
        if inner.history.len() >= HISTORY_LEN {
            inner.history.pop_front();
        }
        inner.history.push_back(CommandRecord { command, rc });
    }

    fn command_rejected(&self, command: u32, error: &CmdError) {
        self.lock().last_rejection = Some(Rejection {
            command,
            error: error.clone(),
        });
    }

    fn reply_published(&self) {
        self.lock().stats.replies += 1;
    }

    fn reply_dropped(&self) {
        self.lock().stats.dropped_replies += 1;
    }

    fn event_raised(&self, _slot_uid: u64) {
        self.lock().stats.events += 1;
    }

    fn invalid_access(&self, _offset: u64, _len: usize) {
        self.lock().stats.invalid_accesses += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_device_log_keeps_only_the_last_history_len_commands() {
        let log = DeviceLog::new();
        for command in 0..=u32::try_from(HISTORY_LEN).unwrap() {
            log.command_completed(command, Some(0));
        }
        let history = log.history();
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].command, 1);
    }

    #[test]
    fn test_device_log_through_arc_counts_each_hook() {
        let log = Arc::new(DeviceLog::new());
        let sink: Arc<DeviceLog> = Arc::clone(&log);
        sink.doorbell(4);
        sink.doorbell_ignored(4);
        sink.reply_published();
        sink.reply_dropped();
        sink.event_raised(1);
        sink.invalid_access(0x200, 4);
        sink.command_rejected(4, &CmdError::Disabled);
        let stats = log.stats();
        assert_eq!(
            stats,
            DeviceStats {
                doorbells: 1,
                replies: 1,
                events: 1,
                ignored_doorbells: 1,
                dropped_replies: 1,
                invalid_accesses: 1,
            }
        );
        assert_eq!(log.last_rejection().unwrap().error, CmdError::Disabled);
    }
}
