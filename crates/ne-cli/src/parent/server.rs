// SPDX-License-Identifier: Apache-2.0
//! The parent process: one enclave host (an emulated [`Parent`], or the kernel's driver)
//! and the enclaves launched
//! on it, served over a Unix socket so that enclaves outlive the `nectl` that ran them, as
//! nitro-cli's enclave processes do.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;

use ne_parent::{CpuRequest, LaunchError, LaunchRequest, LaunchStep, Parent, ParentConfig};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::json::{EnclaveJson, MeasurementsJson, TerminatedJson};
use crate::parent::host::{Host, Running};
use crate::parent::protocol::{Cpus, Request, Response, Target};

/// The instance ID nitro-cli falls back to when the parent has no asset tag.
pub const DEFAULT_INSTANCE_ID: &str = "i-0000000000000000";
/// The environment variable that sets the instance ID used in enclave IDs.
pub const INSTANCE_ID_ENV: &str = "NECTL_INSTANCE_ID";
/// How long `End` waits for the driver to see the enclave's event.
const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// One enclave the parent holds.
struct Entry {
    name: String,
    id: String,
    running: Running,
    measurements: Option<MeasurementsJson>,
}

/// The server's state.
struct Server {
    host: Host,
    enclaves: Mutex<Vec<Entry>>,
    instance_id: String,
    socket: PathBuf,
}

/// Runs the emulated parent on `socket` until a `Stop` request. Fails if another parent
/// already answers there.
/// What the parent process runs enclaves on.
#[derive(Clone, Debug)]
pub enum HostSpec {
    /// An emulated parent of this shape.
    Emulated(ParentConfig),
    /// The kernel's driver at this path.
    Kernel(PathBuf),
}

/// Runs the parent process on `socket` until a `Stop` request. Fails if another parent
/// already answers there.
pub fn serve(socket: &Path, spec: HostSpec) -> Result<()> {
    let (listener, _lock) = bind(socket)?;
    let host = match spec {
        HostSpec::Emulated(config) => Parent::new(config)
            .map(|p| Host::Emulated(Box::new(p)))
            .map_err(|e| {
                CliError::new(
                    Code::ParentConnection,
                    format!("cannot build the emulated parent: {e}"),
                )
            })?,
        HostSpec::Kernel(path) => Host::kernel(&path).map_err(|e| {
            CliError::new(
                Code::ParentConnection,
                format!("cannot open {}: {e}", path.display()),
            )
            .hint("is the nitro_enclaves module loaded, and are you allowed to open the device?")
        })?,
    };
    let server = Arc::new(Server {
        host,
        enclaves: Mutex::new(Vec::new()),
        instance_id: std::env::var(INSTANCE_ID_ENV)
            .unwrap_or_else(|_| DEFAULT_INSTANCE_ID.to_owned()),
        socket: socket.to_owned(),
    });
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "emulated parent listening");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let server = Arc::clone(&server);
        thread::spawn(move || server.handle(stream));
    }
    Ok(())
}

/// Claims `socket` for this process and listens on it. A lock file beside it, held for the
/// process's life, makes the claim exclusive: two parents started at once (two `nectl`s
/// racing to start one) cannot both listen, and a socket file found while holding the
/// lock is a dead parent's and is replaced.
fn bind(socket: &Path) -> Result<(UnixListener, std::fs::File)> {
    let unreachable = |e: std::io::Error| {
        CliError::new(
            Code::ParentConnection,
            format!("cannot listen on {}: {e}", socket.display()),
        )
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(unreachable)?;
    }
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(socket.with_extension("lock"))
        .map_err(unreachable)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(CliError::new(
                Code::ParentConnection,
                format!("a parent already owns {}", socket.display()),
            )
            .hint("stop it with `nectl parent stop`, or pick another --socket"));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(unreachable(e)),
    }
    if socket.exists() {
        std::fs::remove_file(socket).map_err(unreachable)?;
    }
    let listener = UnixListener::bind(socket).map_err(unreachable)?;
    Ok((listener, lock))
}

impl Server {
    fn handle(&self, stream: UnixStream) {
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_REQUEST_BYTES)).read_line(&mut line);
        let request: Result<Request> = read
            .map_err(|e| {
                CliError::new(
                    Code::InvalidArgument,
                    format!("cannot read the request: {e}"),
                )
            })
            .and_then(|_| {
                serde_json::from_str(&line).map_err(|e| {
                    CliError::new(Code::InvalidArgument, format!("malformed request: {e}"))
                })
            });
        let stop = matches!(request, Ok(Request::Stop));
        let response = match request.and_then(|request| self.dispatch(request)) {
            Ok(value) => Response::Ok(value),
            Err(error) => Response::Err(error),
        };
        let mut out = serde_json::to_string(&response).unwrap_or_default();
        out.push('\n');
        let _ = (&stream).write_all(out.as_bytes());
        drop(stream);
        if stop {
            let _ = std::fs::remove_file(&self.socket);
            tracing::info!("emulated parent stopped");
            std::process::exit(0);
        }
    }

    fn dispatch(&self, request: Request) -> Result<Value> {
        self.reap();
        match request {
            Request::Run {
                eif_path,
                memory_mib,
                cpus,
                cid,
                debug,
                name,
            } => self.run(&eif_path, memory_mib, cpus, cid, debug, name),
            Request::Describe => Ok(json!(self.describe())),
            Request::Terminate(target) => self.terminate(&target),
            Request::End { enclave, crash } => self.end(&enclave, crash),
            Request::Status => Ok(self.status()),
            Request::Stop => {
                let all = self.terminate(&Target::All).unwrap_or(Value::Null);
                Ok(json!({ "Stopped": true, "Terminated": all }))
            }
        }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.enclaves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases enclaves that stopped on their own, as nitro-cli's enclave process exits
    /// when its poll reports POLLHUP.
    fn reap(&self) {
        let mut entries = self.entries();
        let (stopped, running): (Vec<Entry>, Vec<Entry>) =
            entries.drain(..).partition(|e| !e.running.is_running());
        *entries = running;
        for entry in stopped {
            tracing::warn!(enclave = %entry.id, name = %entry.name, "enclave stopped on its own; releasing it");
        }
    }

    fn run(
        &self,
        eif_path: &Path,
        memory_mib: u64,
        cpus: Cpus,
        cid: u64,
        debug: bool,
        name: Option<String>,
    ) -> Result<Value> {
        let eif = std::fs::read(eif_path).map_err(|e| {
            CliError::new(
                Code::FileOperation,
                format!("cannot read {}: {e}", eif_path.display()),
            )
        })?;
        let name = self.pick_name(name, eif_path)?;
        let request = LaunchRequest {
            eif,
            memory_mib,
            cpus: match cpus {
                Cpus::Count(n) => CpuRequest::Count(n),
                Cpus::Ids(ids) => CpuRequest::Ids(ids),
            },
            cid,
            debug,
        };
        let (running, measurements) = self
            .host
            .launch(&request)
            .map_err(|e| self.launch_error(e))?;
        let uid = running.slot_uid();
        let entry = Entry {
            id: format!("{}-enc{uid:x}", self.instance_id),
            name,
            measurements,
            running,
        };
        tracing::info!(enclave = %entry.id, name = %entry.name, cid = entry.running.cid(), "enclave running");
        let mut out = self.describe_entry(&entry);
        out.state = None;
        out.flags = None;
        self.entries().push(entry);
        Ok(json!(out))
    }

    fn pick_name(&self, name: Option<String>, eif_path: &Path) -> Result<String> {
        let taken = |candidate: &str| self.entries().iter().any(|e| e.name == candidate);
        if let Some(name) = name {
            if taken(&name) {
                return Err(CliError::new(
                    Code::EnclaveNaming,
                    format!("an enclave named {name:?} already runs"),
                )
                .hint("choose another --enclave-name, or terminate that enclave"));
            }
            return Ok(name);
        }
        let stem = eif_path.file_stem().map_or_else(
            || "enclave".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok((0..)
            .map(|n| {
                if n == 0 {
                    stem.clone()
                } else {
                    format!("{stem}_{n}")
                }
            })
            .find(|candidate| !taken(candidate))
            .unwrap_or(stem))
    }

    fn describe_entry(&self, entry: &Entry) -> EnclaveJson {
        let running = &entry.running;
        let state = if running.is_running() {
            "RUNNING"
        } else {
            "TERMINATING"
        };
        EnclaveJson {
            name: entry.name.clone(),
            id: entry.id.clone(),
            process_id: std::process::id(),
            cid: running.cid(),
            cpu_count: running.cpu_ids().len(),
            cpu_ids: running.cpu_ids().to_vec(),
            memory_mib: running.memory_mib(),
            state: Some(state.to_owned()),
            flags: Some(
                if running.debug() {
                    "DEBUG_MODE"
                } else {
                    "NONE"
                }
                .to_owned(),
            ),
            measurements: entry.measurements.clone(),
        }
    }

    fn describe(&self) -> Vec<EnclaveJson> {
        self.entries()
            .iter()
            .map(|e| self.describe_entry(e))
            .collect()
    }

    fn terminate(&self, target: &Target) -> Result<Value> {
        let chosen: Vec<Entry> = {
            let mut entries = self.entries();
            let matches = |e: &Entry| match target {
                Target::Id(id) => &e.id == id,
                Target::Name(name) => &e.name == name,
                Target::All => true,
            };
            let (chosen, rest): (Vec<Entry>, Vec<Entry>) = entries.drain(..).partition(matches);
            *entries = rest;
            chosen
        };
        if chosen.is_empty() && *target != Target::All {
            return Err(CliError::new(
                Code::NoSuchEnclave,
                format!("no enclave matches {target:?}"),
            )
            .hint("`nectl describe-enclaves` lists the enclaves and their IDs"));
        }
        let results: Vec<TerminatedJson> = chosen
            .into_iter()
            .map(|entry| {
                let Entry {
                    name, id, running, ..
                } = entry;
                let terminated = match running.release() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(enclave = %id, "release failed: {e}");
                        false
                    }
                };
                tracing::info!(enclave = %id, "enclave terminated");
                TerminatedJson {
                    name,
                    id,
                    terminated,
                }
            })
            .collect();
        Ok(match (target, results.as_slice()) {
            (Target::All, _) => json!(results),
            (_, [one]) => json!(one),
            _ => json!(results),
        })
    }

    fn end(&self, enclave: &str, crash: bool) -> Result<Value> {
        let entries = self.entries();
        let entry = entries
            .iter()
            .find(|e| e.id == enclave || e.name == enclave)
            .ok_or_else(|| {
                CliError::new(
                    Code::NoSuchEnclave,
                    format!("no enclave is named or numbered {enclave:?}"),
                )
            })?;
        let ended = self
            .host
            .end(&entry.running, crash)
            .map_err(|why| CliError::new(Code::InvalidArgument, why))?;
        // Answer once the driver has seen the event (POLLHUP), so the next command finds
        // the enclave gone.
        let seen = ended && entry.running.wait_stopped(EVENT_WAIT);
        Ok(json!({ "EnclaveID": entry.id, "Ended": ended, "Crashed": crash, "EventSeen": seen }))
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "ProcessID": std::process::id(),
            "Socket": self.socket,
            "InstanceID": self.instance_id,
            "Enclaves": self.entries().len(),
        });
        if let (Some(out), Value::Object(host)) = (status.as_object_mut(), self.host.status()) {
            out.extend(host);
        }
        status
    }

    /// Turns a launch failure into the code nitro-cli would give, with a hint.
    fn launch_error(&self, error: LaunchError) -> CliError {
        use ne_abi::NeError;
        let ne = error.driver.as_ref().and_then(ne_driver::Error::ne_error);
        let errno = error.driver.as_ref().map(ne_driver::Error::errno);
        let message = error.message.clone();
        match (error.step, ne, errno) {
            (LaunchStep::Request, _, _) => CliError::new(Code::InvalidArgument, message),
            (LaunchStep::MemoryRequested, _, _) => {
                CliError::new(Code::InsufficientMemoryRequested, message)
                    .hint("ask for more with --memory")
            }
            (LaunchStep::MemoryAvailable, _, _) => {
                CliError::new(Code::InsufficientMemoryAvailable, message)
                    .hint("ask for less memory, or terminate an enclave to free its hugepages")
            }
            (LaunchStep::CreateVm, Some(NeError::NoCpusAvailInPool), _)
            | (LaunchStep::AddVcpu, Some(NeError::NoCpusAvailInPool), _) => {
                CliError::new(Code::InsufficientCpus, message)
                    .hint("ask for fewer CPUs, or terminate an enclave to free its cores")
            }
            (LaunchStep::CreateVm, _, Some(28)) => {
                let most = self
                    .host
                    .max_enclaves()
                    .map_or_else(|| "a few".to_owned(), |n| n.to_string());
                CliError::new(Code::CreateVm, message).hint(format!(
                    "at most {most} enclaves run at once; terminate one first"
                ))
            }
            (LaunchStep::CreateVm, _, _) => CliError::new(Code::CreateVm, message),
            (LaunchStep::ImageLoadInfo, _, _) => CliError::new(Code::ImageLoadInfo, message),
            (LaunchStep::SetMemory, _, _) => CliError::new(Code::SetMemoryRegion, message),
            (LaunchStep::AddVcpu, Some(NeError::VcpuNotInCpuPool), _) => {
                CliError::new(Code::NoSuchCpuInPool, message)
                    .hint("pick free CPUs of the pool; `nectl parent status` shows it")
            }
            (LaunchStep::AddVcpu, _, _) => CliError::new(Code::AddVcpu, message),
            (LaunchStep::Start, _, Some(ne_parent::ENOEXEC)) => {
                let reason = self
                    .host
                    .refusal_reason()
                    .unwrap_or_else(|| "the image is not valid".to_owned());
                CliError::new(Code::EnclaveBoot, format!("the hypervisor refused the image: {reason}"))
                    .hint("rebuild the image with `nectl build-eif` and check it with `nectl describe-eif`")
            }
            (LaunchStep::Start, _, _) => CliError::new(Code::StartEnclave, message),
        }
    }
}
