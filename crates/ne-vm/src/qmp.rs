// SPDX-License-Identifier: Apache-2.0
//! Listening to an enclave VM's QMP monitor for one thing: why it shut down. QEMU exits
//! with status 0 both when the guest powers off and when it resets (with `-no-reboot`, a
//! triple fault or a reboot after a panic); the `SHUTDOWN` event's `reason` tells them
//! apart.
//!
//! QEMU is started with the monitor as a `wait=on` server: it does not run the guest until
//! this side has connected, so no event is missed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_send_signal, Signal};

/// How long QEMU may take to create its monitor socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest QMP line read.
const MAX_LINE: u64 = 64 * 1024;

/// Watches the monitor at `path` in a thread; the thread ends with the last `SHUTDOWN`
/// reason QEMU reported, once QEMU closes the monitor. If the monitor cannot be reached,
/// QEMU (which waits for it) is killed.
pub(crate) fn watch(path: &Path, pidfd: &Arc<OwnedFd>) -> JoinHandle<Option<String>> {
    let path = path.to_owned();
    let pidfd = Arc::clone(pidfd);
    let spawned = thread::Builder::new()
        .name("ne-vm-qmp".to_owned())
        .spawn(move || {
            let reason = read_events(&path, &pidfd);
            if reason.is_err() {
                let _ = pidfd_send_signal(&*pidfd, Signal::KILL);
            }
            reason.ok().flatten()
        });
    spawned.unwrap_or_else(|_| thread::spawn(|| None))
}

/// Connects, negotiates, and reads events until QEMU closes the monitor; returns the last
/// shutdown reason. `Ok(None)` at once if QEMU ended before its monitor was reached; `Err`
/// if its monitor never answered while it ran.
fn read_events(path: &PathBuf, pidfd: &OwnedFd) -> Result<Option<String>, ()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(stream) => break stream,
            Err(_) if has_ended(pidfd) => return Ok(None),
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Err(_) => return Err(()),
        }
    };
    let mut reader = BufReader::new(stream.try_clone().map_err(|_| ())?);
    let mut writer = stream;
    // QEMU greets, then takes commands once capabilities are negotiated.
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|_| ())?;
    let mut reason = None;
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return Ok(reason),
            Ok(_) => {
                if let Some(cause) = shutdown_reason(&line) {
                    reason = Some(cause);
                }
            }
        }
    }
}

/// Whether the process behind `pidfd` has ended: a pidfd polls readable from then on.
fn has_ended(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&Timespec::default())), Ok(ready) if ready > 0)
}

/// The `reason` of a `SHUTDOWN` event line.
fn shutdown_reason(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value.get("event")?.as_str()? == "SHUTDOWN")
        .then(|| {
            value
                .get("data")?
                .get("reason")?
                .as_str()
                .map(str::to_owned)
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_shutdown_reason_is_read_from_the_event_only() {
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(shutdown_reason(event).as_deref(), Some("guest-reset"));
        assert_eq!(
            shutdown_reason(r#"{"event": "RESET", "data": {"reason": "x"}}"#),
            None
        );
        assert_eq!(shutdown_reason(r#"{"return": {}}"#), None);
        assert_eq!(shutdown_reason("not json"), None);
    }

    #[test]
    fn test_a_qemu_that_ended_before_its_monitor_is_not_waited_for() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id().cast_signed()).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let read = read_events(&dir.path().join("never.sock"), &pidfd);
        assert_eq!(read, Ok(None));
        assert!(
            started.elapsed() < CONNECT_TIMEOUT / 2,
            "waited for the monitor of a process that had ended"
        );
    }
}
