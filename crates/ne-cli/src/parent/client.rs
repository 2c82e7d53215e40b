// SPDX-License-Identifier: Apache-2.0
//! Talking to the emulated parent, starting it in the background when none runs.

use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
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
        std::fs::create_dir_all(dir).map_err(|e| unreachable(socket, &e.to_string()))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(socket))
        .map_err(|e| unreachable(socket, &format!("cannot open its log: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| unreachable(socket, &e.to_string()))?;
    let mut command = Command::new(exe);
    command.args(["parent", "run", "--socket"]).arg(socket);
    command.args(start.args());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this nectl does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| unreachable(socket, &format!("cannot start it: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another nectl may have started one at the same moment, which then owns the
            // socket: give it a moment to listen before calling this a failure.
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
    Err(unreachable(socket, "it did not start listening in time"))
}
