// SPDX-License-Identifier: Apache-2.0
//! The control interface: a Unix socket beside the vfio-user one, where the host lists the
//! slots, reads the command history, injects faults, and makes enclaves exit or crash (the
//! guest sees vector 1). One JSON request line, one JSON response line per connection.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ne_abi::{Command, MsixVector};
use ne_device::{FaultRule, SlotState};
use ne_jsonl::{CallError, Limits, Outcome, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;

use crate::state::ServerState;

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

/// Why a control request failed.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ControlError {
    /// The request could not be read.
    #[error("{0}")]
    Malformed(String),
    /// Too many control connections at once.
    #[error("The control socket is busy; try again")]
    Busy,
    /// A command name or number the device does not have.
    #[error("Unknown command {0:?}")]
    UnknownCommand(String),
    /// A vector the device does not have.
    #[error("The device has no vector {0}")]
    NoSuchVector(u16),
    /// No enclave runs in the slot, or the backend cannot end it.
    #[error("No enclave the backend can end runs in slot {0}")]
    NoEnclave(u64),
    /// The device refused (too many faults armed, an interrupt that failed).
    #[error("{0}")]
    Device(String),
}

/// The answer: `{"Ok": …}` or `{"Err": …}`.
pub type ControlResponse = Result<Value, ControlError>;

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
pub fn spawn(path: &Path, shared: Arc<ServerState>) -> io::Result<JoinHandle<()>> {
    // A live control socket belongs to another server: never take it over.
    let server = Server::new(ne_jsonl::bind_exclusive(path)?, Limits::default());
    thread::Builder::new()
        .name("ne-control".to_owned())
        .spawn(move || {
            server.run(
                move |request: Result<ControlRequest, String>| {
                    let response = request
                        .map_err(ControlError::Malformed)
                        .and_then(|r| handle(&shared, r));
                    (response, Outcome::Continue)
                },
                Err::<Value, _>(ControlError::Busy),
            );
        })
}

/// Carries out one request.
pub fn handle(shared: &ServerState, request: ControlRequest) -> ControlResponse {
    let mut device = shared.device();
    match request {
        ControlRequest::Slots => Ok(Value::Array(
            device
                .slots()
                .iter()
                .map(|slot| slot_json(slot, &device.hypervisor().backend().describe(slot.uid())))
                .collect(),
        )),
        ControlRequest::History => Ok(Value::Array(
            shared
                .log()
                .history()
                .into_iter()
                .map(|r| {
                    let name = Command::try_from(r.command).map_or("INVALID", Command::name);
                    json!({ "Command": name, "Number": r.command, "Rc": r.rc })
                })
                .collect(),
        )),
        ControlRequest::Status => {
            let stats = shared.log().stats();
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
                Some(name) => Some(parse_command(&name).ok_or(ControlError::UnknownCommand(name))?),
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
                .map_err(|e| ControlError::Device(e.to_string()))?;
            Ok(json!({ "Armed": device.faults_mut().rules().len() }))
        }
        ControlRequest::ClearFaults => {
            device.faults_mut().clear();
            Ok(json!({ "Armed": 0 }))
        }
        ControlRequest::ReleaseReply => {
            let released = device
                .release_held_reply()
                .map_err(|e| ControlError::Device(e.to_string()))?;
            Ok(json!({ "Released": released }))
        }
        ControlRequest::Spurious { vector } => {
            let vector =
                MsixVector::from_index(vector).ok_or(ControlError::NoSuchVector(vector))?;
            device
                .raise_spurious(vector)
                .map_err(|e| ControlError::Device(e.to_string()))?;
            Ok(json!({ "Raised": vector.index() }))
        }
        ControlRequest::End { slot_uid, crash } => {
            if !device.hypervisor_mut().backend_mut().end(slot_uid, crash) {
                return Err(ControlError::NoEnclave(slot_uid));
            }
            device
                .process_hypervisor_events()
                .map_err(|e| ControlError::Device(e.to_string()))?;
            Ok(json!({ "SlotUID": slot_uid, "Ended": true, "Crashed": crash }))
        }
    }
}

fn slot_json(slot: &ne_device::Slot, backend: &[(&'static str, String)]) -> Value {
    let state = match slot.state() {
        SlotState::Init => "INIT",
        SlotState::Starting { .. } => "STARTING",
        SlotState::Running { .. } => "RUNNING",
        SlotState::Stopped { .. } => "STOPPED",
    };
    let mut value = json!({
        "SlotUID": slot.uid(),
        "State": state,
        "CID": slot.state().cid(),
        "Flags": slot.state().flags(),
        "MemoryBytes": slot.mem_size(),
        "Regions": slot.regions().iter().map(|r| [r.paddr, r.size]).collect::<Vec<_>>(),
        "VCPUs": slot.vcpus(),
    });
    if let Some(object) = value.as_object_mut() {
        for (key, detail) in backend {
            object.insert((*key).to_owned(), Value::String(detail.clone()));
        }
    }
    value
}

/// How long a control call waits for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` to the control socket at `path`.
pub fn call(path: &Path, request: &ControlRequest) -> Result<ControlResponse, CallError> {
    ne_jsonl::call(path, request, CALL_TIMEOUT, &Limits::default())
}
