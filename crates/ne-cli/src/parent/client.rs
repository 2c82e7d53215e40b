// SPDX-License-Identifier: Apache-2.0
//! Talking to the emulated parent, starting it in the background when none runs.

use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::ParentStart;
use crate::error::{CliError, Code, Result};
use crate::parent::protocol::{self, Request, Response};
use crate::paths::log_path;

/// How long to wait for the parent another `nectl` started, when ours lost the race.
const LOSER_GRACE: Duration = Duration::from_secs(5);
/// How long a newly started parent has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a request may take to be answered: a launch waits for the enclave to boot.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends `request` to the parent on `socket`; returns what it answered. If none answers
/// and `start` is `Some`, starts one first (on the kernel device it names, if any).
pub fn call(socket: &Path, request: &Request, start: Option<&ParentStart>) -> Result<Value> {
    let limits = protocol::limits();
    let answer = match ne_jsonl::call(socket, request, ANSWER_TIMEOUT, &limits) {
        Err(ne_jsonl::CallError::Connect { .. }) if start.is_some() => {
            spawn_parent(socket, start.cloned().unwrap_or_default())?;
            ne_jsonl::call(socket, request, ANSWER_TIMEOUT, &limits)
        }
        other => other,
    };
    match answer {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Err(error)) => Err(error),
        Err(e @ ne_jsonl::CallError::Connect { .. }) => {
            Err(unreachable(socket, &ne_hypervisor::error_chain(&e))
                .hint("no parent runs there; `nectl run-enclave` starts one"))
        }
        Err(e) => Err(unreachable(socket, &ne_hypervisor::error_chain(&e))),
    }
}

fn unreachable(socket: &Path, why: &str) -> CliError {
    CliError::new(
        Code::ParentConnection,
        format!(
            "cannot talk to the emulated parent at {}: {why}",
            socket.display()
        ),
    )
    .hint(format!("its log is {}", log_path(socket).display()))
}

/// Starts `nectl parent run` in the background on `socket`, logging beside it, and waits
/// until it listens.
fn spawn_parent(socket: &Path, start: ParentStart) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::new(
                Code::ParentConnection,
                format!(
                    "cannot make the directory {} for the parent's socket: {e}",
                    dir.display()
                ),
            )
            .hint("choose another --socket (or NECTL_SOCKET) in a directory you can write")
        })?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(socket))
        .map_err(|e| unreachable(socket, &format!("cannot open its log: {e}")))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().map_err(|e| unreachable(socket, &e.to_string()))?;
    let mut command = Command::new(exe);
    command.args(["parent", "run", "--socket"]).arg(socket);
    command.args(start.args());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this nectl does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| unreachable(socket, &format!("cannot start it: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let listening = child.stdout.take().map(|out| wait_for_line(out, deadline));
    if listening == Some(Readiness::Listening) {
        end_unless_owner(socket, &mut child);
        return Ok(());
    }
    // Silent: it exited (its log says why), or the deadline passed (the loop ends at once).
    while Instant::now() < deadline {
        if UnixStream::connect(socket).is_ok() {
            end_unless_owner(socket, &mut child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = log_since(&log_path(socket), log_start);
            if !said.contains("already owns") {
                // It failed by itself: say why at once, as it said it.
                let why = said
                    .lines()
                    .filter(|line| !line.trim().is_empty() && !line.contains("more: nectl explain"))
                    .map(|line| line.strip_prefix("nectl: error ").unwrap_or(line))
                    .collect::<Vec<_>>()
                    .join("\n  ");
                return Err(CliError::new(
                    Code::ParentConnection,
                    format!("the parent process could not start ({status}): {why}"),
                )
                .hint(format!("its log is {}", log_path(socket).display())));
            }
            // Another nectl started one at the same moment, which owns the socket: give
            // it a moment to listen.
            let grace = Instant::now() + LOSER_GRACE;
            while Instant::now() < grace {
                if UnixStream::connect(socket).is_ok() {
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(20));
            }
            return Err(unreachable(
                socket,
                &format!("it exited at start ({status})"),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(unreachable(socket, "it did not start listening in time"))
}

/// What a newly started parent said on its standard output.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// It announced that it listens.
    Listening,
    /// It closed its output without a word (it exited), or the deadline passed.
    Silent,
}

/// Waits until `deadline` for the first line `out` carries.
fn wait_for_line(out: std::process::ChildStdout, deadline: Instant) -> Readiness {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::io::BufRead;
    let mut fds = [PollFd::new(&out, PollFlags::IN)];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Readiness::Silent;
        };
        let left = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match poll(&mut fds, Some(&left)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => break,
            Err(_) => return Readiness::Silent,
        }
    }
    let mut line = String::new();
    match std::io::BufReader::new(out).read_line(&mut line) {
        Ok(n) if n > 0 && line.contains("Listening") => Readiness::Listening,
        _ => Readiness::Silent,
    }
}

/// Ends `child` if another parent answers on `socket`: two `nectl`s that start a parent at
/// the same moment each spawn one, and the loser, if it were slow to reach the socket's
/// lock, could take the socket over once the winner stops — a parent nobody knows of.
fn end_unless_owner(socket: &Path, child: &mut Child) {
    let owner = call(socket, &Request::Status, None)
        .ok()
        .and_then(|status| status.get("ProcessID").and_then(Value::as_u64));
    if owner.is_some_and(|pid| pid != u64::from(child.id())) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// What the log at `path` gained after `start` bytes (at most the last 4 KiB).
fn log_since(path: &Path, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let end = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = start.max(end.saturating_sub(4096));
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(from))
        .and_then(|_| file.take(4096).read_to_string(&mut text));
    text
}

/// `nectl console`: streams the console of `enclave` (an ID or name) to stdout until the
/// enclave ends, or `disconnect_timeout` passes.
pub fn console(socket: &Path, enclave: &str, disconnect_timeout: Option<Duration>) -> Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = UnixStream::connect(socket).map_err(|e| {
        unreachable(socket, &e.to_string())
            .hint("no parent runs there; `nectl run-enclave` starts one")
    })?;
    let request = Request::Console {
        enclave: enclave.to_owned(),
    };
    let mut line = serde_json::to_vec(&request)
        .map_err(|e| CliError::new(Code::InvalidArgument, e.to_string()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| unreachable(socket, &e.to_string()))?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    (&mut reader)
        .take(protocol::limits().max_response_bytes)
        .read_line(&mut answer)
        .map_err(|e| unreachable(socket, &e.to_string()))?;
    match serde_json::from_str(&answer) {
        Ok(Response::Ok(_)) => {}
        Ok(Response::Err(error)) => return Err(error),
        Err(e) => return Err(unreachable(socket, &format!("unreadable answer ({e})"))),
    }
    eprintln!("Successfully connected to the console.");
    let deadline = disconnect_timeout.map(|timeout| Instant::now() + timeout);
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let _ = stream.set_read_timeout(Some(left));
        }
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let shown = stdout
                    .write_all(buf.get(..n).unwrap_or_default())
                    .and_then(|()| stdout.flush());
                if shown.is_err() {
                    // The reader of our output went away (`| head`).
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CliError::new(
                    Code::ConsoleConnection,
                    format!("reading the console failed: {e}"),
                ))
            }
        }
    }
}
