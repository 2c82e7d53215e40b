// SPDX-License-Identifier: Apache-2.0
//! The control interface: a Unix socket beside the vfio-user one, where the host lists the
//! slots, reads the command history, injects faults, and makes enclaves exit or crash (the
//! guest sees vector 1). One JSON request line, one JSON response line per connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use ne_abi::{Command, MsixVector};
use ne_device::{FaultRule, SlotState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::Shared;

/// The longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// What the host can ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Every slot: uid, state, CID, flags, memory regions, vCPUs.
    Slots,
    /// The last completed commands, oldest first.
    History,
    /// Counters and whether the driver enabled the device.
    Status,
    /// Arms a fault: the next `count` commands named `command` (any, if `None`) get `action`.
    Fault {
        /// A command name (`SLOT_ALLOC`, …) or number; `None` for every command.
        command: Option<String>,
        /// How many commands it catches.
        count: u32,
        /// What happens to them.
        action: FaultKind,
    },
    /// Disarms every fault.
    ClearFaults,
    /// Publishes a reply held by a delay fault.
    ReleaseReply,
    /// Raises a vector out of turn (0 reply, 1 event).
    Spurious {
        /// The vector.
        vector: u16,
    },
    /// Makes the running enclave of a slot exit or crash.
    End {
        /// The slot.
        slot_uid: u64,
        /// Crash rather than exit.
        crash: bool,
    },
}

/// A fault's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// Answer this rc without executing.
    Fail(i32),
    /// Hold the reply until `ReleaseReply`.
    Delay,
    /// Lose the reply.
    Drop,
}

/// The answer: `{"Ok": …}` or `{"Err": "why"}`.
pub type ControlResponse = Result<Value, String>;

/// Parses a command name (`SLOT_ALLOC`) or number (`4`).
pub fn parse_command(name: &str) -> Option<Command> {
    Command::ALL
        .into_iter()
        .find(|c| c.name().eq_ignore_ascii_case(name))
        .or_else(|| {
            name.parse::<u32>()
                .ok()
                .and_then(|n| Command::try_from(n).ok())
        })
}

/// Starts serving the control interface on `path` in a thread.
pub fn spawn(path: &Path, shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    thread::Builder::new()
        .name("ne-control".to_owned())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(&stream, &shared);
            }
        })
}

fn answer(stream: &UnixStream, shared: &Shared) {
    let mut line = String::new();
    let response: ControlResponse = BufReader::new(stream.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            serde_json::from_str::<ControlRequest>(&line)
                .map_err(|e| format!("malformed request: {e}"))
        })
        .and_then(|request| handle(shared, request));
    let mut out = serde_json::to_string(&response).unwrap_or_default();
    out.push('\n');
    let _ = (&*stream).write_all(out.as_bytes());
}

/// Carries out one request.
pub fn handle(shared: &Shared, request: ControlRequest) -> ControlResponse {
    let mut device = shared.device();
    match request {
        ControlRequest::Slots => Ok(Value::Array(device.slots().iter().map(slot_json).collect())),
        ControlRequest::History => Ok(Value::Array(
            device
                .history()
                .map(|r| {
                    let name = Command::try_from(r.command).map_or("INVALID", Command::name);
                    json!({ "Command": name, "Number": r.command, "Rc": r.rc })
                })
                .collect(),
        )),
        ControlRequest::Status => {
            let stats = device.stats();
            Ok(json!({
                "Enabled": device.is_enabled(),
                "Busy": device.is_busy(),
                "Slots": device.slots().len(),
                "Doorbells": stats.doorbells,
                "Replies": stats.replies,
                "Events": stats.events,
                "IgnoredDoorbells": stats.ignored_doorbells,
                "DroppedReplies": stats.dropped_replies,
                "InvalidAccesses": stats.invalid_accesses,
                "ParentRam": device.slots().parent_ram().iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
            }))
        }
        ControlRequest::Fault {
            command,
            count,
            action,
        } => {
            let command = match command {
                Some(name) => {
                    Some(parse_command(&name).ok_or_else(|| format!("unknown command {name:?}"))?)
                }
                None => None,
            };
            let action = match action {
                FaultKind::Fail(rc) => ne_device::FaultAction::Fail { rc },
                FaultKind::Delay => ne_device::FaultAction::Delay,
                FaultKind::Drop => ne_device::FaultAction::Drop,
            };
            device
                .faults_mut()
                .arm(FaultRule {
                    command,
                    remaining: count,
                    action,
                })
                .map_err(|e| e.to_string())?;
            Ok(json!({ "Armed": device.faults_mut().rules().len() }))
        }
        ControlRequest::ClearFaults => {
            device.faults_mut().clear();
            Ok(json!({ "Armed": 0 }))
        }
        ControlRequest::ReleaseReply => {
            Ok(json!({ "Released": device.release_held_reply().map_err(|e| e.to_string())? }))
        }
        ControlRequest::Spurious { vector } => {
            let vector = MsixVector::from_index(vector)
                .ok_or_else(|| format!("the device has no vector {vector}"))?;
            device.raise_spurious(vector).map_err(|e| e.to_string())?;
            Ok(json!({ "Raised": vector.index() }))
        }
        ControlRequest::End { slot_uid, crash } => {
            let simulated = device.hypervisor_mut();
            let ended = if crash {
                simulated.crash(slot_uid)
            } else {
                simulated.exit(slot_uid)
            };
            if !ended {
                return Err(format!("no enclave runs in slot {slot_uid}"));
            }
            device
                .process_hypervisor_events()
                .map_err(|e| e.to_string())?;
            Ok(json!({ "SlotUID": slot_uid, "Ended": true, "Crashed": crash }))
        }
    }
}

fn slot_json(slot: &ne_device::Slot) -> Value {
    let state = match slot.state() {
        SlotState::Init => "INIT",
        SlotState::Starting { .. } => "STARTING",
        SlotState::Running { .. } => "RUNNING",
        SlotState::Stopped { .. } => "STOPPED",
    };
    json!({
        "SlotUID": slot.uid(),
        "State": state,
        "CID": slot.state().cid(),
        "Flags": slot.state().flags(),
        "MemoryBytes": slot.mem_size(),
        "Regions": slot.regions().iter().map(|r| [r.paddr, r.size]).collect::<Vec<_>>(),
        "VCPUs": slot.vcpus(),
    })
}

/// Sends `request` to the control socket at `path`.
pub fn call(path: &Path, request: &ControlRequest) -> io::Result<ControlResponse> {
    let stream = UnixStream::connect(path)?;
    let mut line = serde_json::to_string(request).map_err(io::Error::other)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(io::Error::other)
}
