// SPDX-License-Identifier: Apache-2.0
//! An enclave's console: what its serial port printed, kept in a bounded history so a late
//! reader still sees the boot, and handed to live readers as it arrives. A reader that
//! falls behind loses its place (it is dropped), never slows the VM.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many bytes of history a console keeps.
pub const CONSOLE_HISTORY_BYTES: usize = 256 * 1024;
/// How many chunks a live reader may have waiting before it is dropped.
const READER_BACKLOG: usize = 1024;
/// What the kernel prints when it panics.
const PANIC_MARK: &[u8] = b"Kernel panic - not syncing";

#[derive(Debug, Default)]
struct Inner {
    history: VecDeque<u8>,
    readers: Vec<SyncSender<Vec<u8>>>,
    panicked: bool,
    closed: bool,
    /// The tail of the last chunk, to find a panic mark split across chunks.
    carry: Vec<u8>,
}

/// One enclave's console. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Console {
    inner: Arc<Mutex<Inner>>,
}

/// A live reader: the history at the time it attached, then each new chunk until the
/// console closes (the VM ended) or the reader fell too far behind.
#[derive(Debug)]
pub struct ConsoleReader {
    /// What the console printed before the reader attached.
    pub history: Vec<u8>,
    /// What it prints from now on.
    pub live: Receiver<Vec<u8>>,
}

impl Console {
    /// An empty console.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what the VM printed and passes it to the live readers.
    pub fn push(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        let mut window = std::mem::take(&mut inner.carry);
        window.extend_from_slice(bytes);
        if window.windows(PANIC_MARK.len()).any(|w| w == PANIC_MARK) {
            inner.panicked = true;
        }
        let keep = window.len().min(PANIC_MARK.len());
        inner.carry = window.split_off(window.len() - keep);
        inner.history.extend(bytes);
        let excess = inner.history.len().saturating_sub(CONSOLE_HISTORY_BYTES);
        inner.history.drain(..excess);
        inner
            .readers
            .retain(|reader| match reader.try_send(bytes.to_vec()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            });
    }

    /// The VM is gone: live readers see their channel end.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.readers.clear();
    }

    /// Whether the kernel printed that it panicked.
    pub fn panicked(&self) -> bool {
        self.lock().panicked
    }

    /// Everything still in the history.
    pub fn history(&self) -> Vec<u8> {
        self.lock().history.iter().copied().collect()
    }

    /// The last `lines` lines of the history, as text.
    pub fn tail(&self, lines: usize) -> String {
        let text = String::from_utf8_lossy(&self.history()).replace('\r', "");
        let all: Vec<&str> = text.lines().collect();
        all.get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Attaches a live reader.
    pub fn attach(&self) -> ConsoleReader {
        let mut inner = self.lock();
        let (sender, live) = sync_channel(READER_BACKLOG);
        if !inner.closed {
            inner.readers.push(sender);
        }
        ConsoleReader {
            history: inner.history.iter().copied().collect(),
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_history_keeps_only_the_last_bytes() {
        let console = Console::new();
        console.push(&vec![b'a'; CONSOLE_HISTORY_BYTES]);
        console.push(b"end");
        let history = console.history();
        assert_eq!(history.len(), CONSOLE_HISTORY_BYTES);
        assert!(history.ends_with(b"aend"));
    }

    #[test]
    fn test_a_late_reader_sees_the_history_then_live_output() {
        let console = Console::new();
        console.push(b"boot\n");
        let reader = console.attach();
        console.push(b"hello\n");
        console.close();
        assert_eq!(reader.history, b"boot\n");
        assert_eq!(reader.live.recv().unwrap(), b"hello\n");
        reader.live.recv().unwrap_err();
    }

    #[test]
    fn test_a_reader_that_stops_reading_is_dropped_not_waited_for() {
        let console = Console::new();
        let reader = console.attach();
        for _ in 0..READER_BACKLOG + 10 {
            console.push(b"x");
        }
        let received = reader.live.try_iter().count();
        assert_eq!(received, READER_BACKLOG);
    }

    #[test]
    fn test_a_panic_split_across_chunks_is_seen() {
        let console = Console::new();
        console.push(b"[ 1.0] Kernel pan");
        assert!(!console.panicked());
        console.push(b"ic - not syncing: Attempted to kill init!");
        assert!(console.panicked());
    }

    #[test]
    fn test_tail_gives_the_last_lines() {
        let console = Console::new();
        console.push(b"one\r\ntwo\r\nthree\r\n");
        assert_eq!(console.tail(2), "two\nthree");
    }
}
