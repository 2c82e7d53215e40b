// SPDX-License-Identifier: Apache-2.0
//! The parent process: one [`ParentInstance`] (the emulated [`Parent`], or the kernel's
//! driver) and the enclaves launched on it, served over a Unix socket so that enclaves
//! outlive the `nectl` that ran them, as nitro-cli's enclave processes do.

use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ne_abi::errno::{EADDRINUSE, ENOEXEC, ENOSPC};
use ne_abi::NeError;
use ne_driver::EnclaveFd;
use ne_hypervisor::ConsoleReader;
use ne_jsonl::Outcome;
use ne_parent::{
    launch, CpuRequest, KernelParent, LaunchError, LaunchRequest, LaunchStep, Launched, Parent,
    ParentConfig, ParentInstance, ParentStatus,
};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::files::{read_eif, MAX_EIF_BYTES};
use crate::json::{EnclaveJson, MeasurementsJson, TerminatedJson};
use crate::parent::causes::{cpu_list, Holder, Situation};
use crate::parent::protocol::{self, Cpus, Request, Response, Target};

/// The instance ID nitro-cli falls back to when the parent has no asset tag.
pub const DEFAULT_INSTANCE_ID: &str = "i-0000000000000000";
/// The environment variable that sets the instance ID used in enclave IDs.
pub const INSTANCE_ID_ENV: &str = "NECTL_INSTANCE_ID";
/// Tells whoever started this parent that it listens — one JSON line on standard output,
/// which the `nectl` that spawned it in the background waits for — then points standard
/// output at `/dev/null`, so nothing later writes to a pipe whose reader has gone.
fn announce_listening(socket: &Path) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", json!({ "Listening": socket }));
    let _ = out.flush();
    drop(out);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// The parent's instance id: `$NECTL_INSTANCE_ID`, else [`DEFAULT_INSTANCE_ID`].
pub fn instance_id() -> String {
    std::env::var(INSTANCE_ID_ENV).unwrap_or_else(|_| DEFAULT_INSTANCE_ID.to_owned())
}

/// How long `End` waits for the driver to see the enclave's event.
const EVENT_WAIT: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;
/// `sizeof(sun_path)`: a Unix socket's path, with its terminating NUL, fits in this.
const MAX_SOCKET_PATH: usize = 108;

/// What the parent process runs enclaves on.
#[derive(Clone, Debug)]
pub enum HostSpec {
    /// An emulated parent of this shape.
    Emulated(ParentConfig),
    /// The kernel's driver at this path.
    Kernel(PathBuf),
}

/// One enclave the parent holds.
struct Entry<P: ParentInstance> {
    name: String,
    id: String,
    launched: Launched<P>,
}

/// The server's state.
struct Server<P: ParentInstance> {
    parent: P,
    enclaves: Mutex<Vec<Entry<P>>>,
    /// Names taken by running enclaves and by launches in progress.
    names: Mutex<BTreeSet<String>>,
    instance_id: String,
    socket: PathBuf,
}

/// Runs the parent process on `socket` until a `Stop` request. Fails if another parent
/// already answers there.
pub fn serve(socket: &Path, spec: HostSpec) -> Result<()> {
    // The parent is built before the socket listens: a client that finds the socket must
    // never reach a process that is about to fail (it would see its connection reset
    // rather than the cause, which the starting client reads from this process's log).
    match spec {
        HostSpec::Emulated(config) => {
            let parent = Parent::new(config).map_err(|e| {
                CliError::new(
                    Code::ParentConnection,
                    format!("cannot build the emulated parent: {}", chain(&e)),
                )
            })?;
            let (listener, _lock) = bind(socket)?;
            run(listener, socket, parent)
        }
        HostSpec::Kernel(path) => {
            let parent = KernelParent::open(&path).map_err(|e| {
                CliError::new(
                    Code::ParentConnection,
                    format!("cannot open {}: {e}", path.display()),
                )
                .hint(
                    "is the nitro_enclaves module loaded, and are you allowed to open the device?",
                )
            })?;
            let (listener, _lock) = bind(socket)?;
            run(listener, socket, parent)
        }
    }
}

fn run<P: ParentInstance + 'static>(
    listener: UnixListener,
    socket: &Path,
    parent: P,
) -> Result<()> {
    let server = Arc::new(Server {
        parent,
        enclaves: Mutex::new(Vec::new()),
        names: Mutex::new(BTreeSet::new()),
        instance_id: instance_id(),
        socket: socket.to_owned(),
    });
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "parent listening");
    announce_listening(socket);
    // A termination signal stops the parent as `nectl parent stop` does: every enclave
    // terminated, the socket removed.
    let stopping = socket.to_owned();
    crate::signals::on_termination(move |signal| {
        tracing::info!(signal, "stopping on a signal");
        let stop = ne_jsonl::call::<_, Response>(
            &stopping,
            &Request::Stop,
            Duration::from_secs(60),
            &protocol::limits(),
        );
        if stop.is_err() {
            let _ = std::fs::remove_file(&stopping);
            std::process::exit(1);
        }
    })?;
    let serving = Arc::clone(&server);
    ne_jsonl::Server::new(listener, protocol::limits()).run(
        move |request: std::result::Result<Request, String>| {
            if let Ok(Request::Console { enclave }) = &request {
                return match serving.console(enclave) {
                    Ok(reader) => (
                        Response::Ok(json!({ "Console": true })),
                        Outcome::Stream(Box::new(move |stream| pipe_console(reader, stream))),
                    ),
                    Err(error) => (Response::Err(error), Outcome::Continue),
                };
            }
            let stop = matches!(request, Ok(Request::Stop));
            let response = match request
                .map_err(|why| CliError::new(Code::InvalidArgument, why))
                .and_then(|request| serving.dispatch(request))
            {
                Ok(value) => Response::Ok(value),
                Err(error) => Response::Err(error),
            };
            (
                response,
                if stop {
                    Outcome::Stop
                } else {
                    Outcome::Continue
                },
            )
        },
        Response::Err(
            CliError::new(
                Code::ParentConnection,
                "the parent is busy with other requests",
            )
            .hint("try again in a moment"),
        ),
    );
    let _ = std::fs::remove_file(&server.socket);
    tracing::info!("parent stopped");
    Ok(())
}

/// Claims `socket` for this process and listens on it. A lock file beside it, held for the
/// process's life, makes the claim exclusive: two parents started at once (two `nectl`s
/// racing to start one) cannot both listen, and a socket file found while holding the
/// lock is a dead parent's and is replaced.
fn bind(socket: &Path) -> Result<(UnixListener, std::fs::File)> {
    let unreachable = |e: std::io::Error| {
        let error = CliError::new(
            Code::ParentConnection,
            format!("cannot listen on {}: {e}", socket.display()),
        );
        if socket.as_os_str().len() >= MAX_SOCKET_PATH {
            error.hint(format!(
                "a Unix socket's path must be shorter than {MAX_SOCKET_PATH} bytes; choose a shorter --socket (or NECTL_SOCKET)"
            ))
        } else {
            error
        }
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

/// `error` and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    ne_hypervisor::error_chain(error)
}

impl<P: ParentInstance> Server<P> {
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
            Request::Describe { metadata } => Ok(json!(self.describe(metadata))),
            Request::Terminate(target) => self.terminate(&target),
            Request::End { enclave, crash } => self.end(&enclave, crash),
            Request::Status => Ok(self.status()),
            Request::Console { .. } => Err(CliError::new(
                Code::InvalidArgument,
                "the console is streamed, not answered",
            )),
            Request::Stop => {
                let all = self.terminate(&Target::All).unwrap_or(Value::Null);
                Ok(json!({ "Stopped": true, "Terminated": all }))
            }
        }
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry<P>>> {
        self.enclaves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases enclaves that stopped on their own, as nitro-cli's enclave process exits
    /// when its poll reports POLLHUP.
    fn reap(&self) {
        let stopped: Vec<Entry<P>> = {
            let mut entries = self.entries();
            let (stopped, running) = entries.drain(..).partition(|e| !is_running(&e.launched));
            *entries = running;
            stopped
        };
        for entry in stopped {
            tracing::warn!(enclave = %entry.id, name = %entry.name, "enclave stopped on its own; releasing it");
            self.names().remove(&entry.name);
            if let Err(e) = entry.launched.release() {
                tracing::error!(enclave = %entry.id, "release failed: {e}");
            }
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
        // The image must fit a quarter of the memory asked for (nitro-cli's rule): read
        // no more than that could hold.
        let max = memory_mib.saturating_mul(MIB).min(MAX_EIF_BYTES);
        let eif = read_eif(eif_path, max.max(1))?;
        let name = self.reserve_name(name, eif_path)?;
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
        let launched = match launch(&self.parent, &request) {
            Ok(launched) => launched,
            Err(error) => {
                self.names().remove(&name);
                return Err(self.launch_error(&error, &request));
            }
        };
        let entry = Entry {
            id: ne_nsm::enclave_id(&self.instance_id, launched.enclave.slot_uid()),
            name,
            launched,
        };
        tracing::info!(enclave = %entry.id, name = %entry.name, cid = entry.launched.cid, "enclave running");
        let mut out = describe_entry(&entry);
        out.state = None;
        out.flags = None;
        self.entries().push(entry);
        Ok(json!(out))
    }

    /// Takes a name for a new enclave under one lock, so two launches never get the same:
    /// the one asked for, else the EIF's stem; made unique as nitro-cli does (`name_1`, …).
    fn reserve_name(&self, name: Option<String>, eif_path: &Path) -> Result<String> {
        let base = match name {
            Some(name) => {
                check_enclave_name(&name)?;
                name
            }
            None => eif_path
                .file_stem()
                .map(|stem| sanitized_name(&stem.to_string_lossy()))
                .filter(|stem| !stem.is_empty())
                .unwrap_or_else(|| "enclave".to_owned()),
        };
        let mut names = self.names();
        let chosen = (0..)
            .map(|n| {
                if n == 0 {
                    base.clone()
                } else {
                    format!("{base}_{n}")
                }
            })
            .find(|candidate| !names.contains(candidate))
            .unwrap_or(base);
        names.insert(chosen.clone());
        Ok(chosen)
    }

    fn describe(&self, with_metadata: bool) -> Vec<EnclaveJson> {
        self.entries()
            .iter()
            .map(|entry| {
                let mut json = describe_entry(entry);
                if with_metadata {
                    json.add_metadata(entry.launched.metadata.as_ref());
                }
                json
            })
            .collect()
    }

    fn terminate(&self, target: &Target) -> Result<Value> {
        let chosen: Vec<Entry<P>> = {
            let mut entries = self.entries();
            let matches = |e: &Entry<P>| match target {
                Target::Id(id) => &e.id == id,
                Target::Name(name) => &e.name == name,
                Target::All => true,
            };
            let (chosen, rest) = entries.drain(..).partition(matches);
            *entries = rest;
            chosen
        };
        if chosen.is_empty() && *target != Target::All {
            return Err(CliError::new(
                Code::NoSuchEnclave,
                format!("no enclave {}", target.describe()),
            )
            .hint("`nectl describe-enclaves` lists the enclaves and their IDs"));
        }
        let results: Vec<TerminatedJson> = chosen
            .into_iter()
            .map(
                |Entry {
                     name, id, launched, ..
                 }| {
                    self.names().remove(&name);
                    let terminated = match launched.release() {
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
                },
            )
            .collect();
        Ok(match (target, results.as_slice()) {
            (Target::All, _) => json!(results),
            (_, [one]) => json!(one),
            _ => json!(results),
        })
    }

    /// A reader of the console of the debug-mode enclave named or numbered `enclave`.
    fn console(&self, enclave: &str) -> Result<ConsoleReader> {
        let entries = self.entries();
        let entry = entries
            .iter()
            .find(|e| e.id == enclave || e.name == enclave)
            .ok_or_else(|| {
                CliError::new(
                    Code::NoSuchEnclave,
                    format!("no enclave is named or numbered {enclave:?}"),
                )
                .hint("`nectl describe-enclaves` lists the enclaves")
            })?;
        if !entry.launched.debug {
            return Err(CliError::new(
                Code::ConsoleConnection,
                format!(
                    "enclave {} runs in production mode: its console is not available",
                    entry.id
                ),
            )
            .hint("only enclaves started with --debug-mode have a console"));
        }
        let console = self
            .parent
            .console(entry.launched.enclave.slot_uid(), entry.launched.cid)
            .ok_or_else(|| {
                CliError::new(
                    Code::ConsoleConnection,
                    format!("enclave {} has no console here", entry.id),
                )
                .hint("simulated enclaves (--backend sim) boot nothing and print nothing")
            })?;
        Ok(console.attach())
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
            .parent
            .end_enclave(entry.launched.enclave.slot_uid(), crash)
            .map_err(|why| CliError::new(Code::InvalidArgument, why.to_string()))?;
        // Answer once the driver has seen the event (POLLHUP), so the next command finds
        // the enclave gone.
        let seen = ended
            && entry
                .launched
                .enclave
                .wait_event(EVENT_WAIT)
                .unwrap_or(false);
        Ok(json!({ "EnclaveID": entry.id, "Ended": ended, "Crashed": crash, "EventSeen": seen }))
    }

    fn status(&self) -> Value {
        let situation = self.situation();
        let cpus_free = cpu_list(&situation.free_cpus());
        let cpus_in_use: Vec<Value> = situation
            .holders
            .iter()
            .map(|h| json!({ "EnclaveID": h.id, "EnclaveName": h.name, "CPUs": cpu_list(&h.cpus) }))
            .collect();
        let ParentStatus {
            backend,
            cpus,
            cpu_pool,
            cores,
            memory_mib,
            hugepages_total_mib,
            hugepages_free_mib,
            max_enclaves,
        } = situation.status;
        let enclaves: Vec<Value> = self
            .entries()
            .iter()
            .map(|entry| {
                let mut details = serde_json::Map::new();
                details.insert("EnclaveID".to_owned(), json!(entry.id));
                for (key, value) in self
                    .parent
                    .enclave_details(entry.launched.enclave.slot_uid())
                {
                    details.insert(key.to_owned(), json!(value));
                }
                Value::Object(details)
            })
            .collect();
        json!({
            "ProcessID": std::process::id(),
            "Socket": self.socket,
            "InstanceID": self.instance_id,
            "Enclaves": self.entries().len(),
            "Backend": backend,
            "CPUs": cpus,
            "CpuPool": cpu_pool,
            "Cores": cores.iter().map(|core| cpu_list(core)).collect::<Vec<_>>(),
            "CPUsFree": cpus_free,
            "CPUsInUse": cpus_in_use,
            "MemoryMiB": memory_mib,
            "HugepagesTotalMiB": hugepages_total_mib,
            "HugepagesFreeMiB": hugepages_free_mib,
            "MaxEnclaves": max_enclaves,
            "EnclaveBackends": enclaves,
        })
    }

    /// The parent and its enclaves' CIDs and CPUs, for an error that names the cause.
    fn situation(&self) -> Situation {
        let holders = self
            .entries()
            .iter()
            .map(|entry| Holder {
                id: entry.id.clone(),
                name: entry.name.clone(),
                cid: entry.launched.cid,
                cpus: entry.launched.cpu_ids.clone(),
            })
            .collect();
        Situation {
            status: self.parent.status(),
            holders,
        }
    }

    /// Turns a launch failure into the code nitro-cli would give, naming the cause where
    /// the parent knows it, with a hint.
    fn launch_error(&self, error: &LaunchError, request: &LaunchRequest) -> CliError {
        let (ne, errno) = driver_codes(error);
        let situation = || self.situation();
        match (error.step(), ne, errno, &request.cpus) {
            (LaunchStep::Start, _, Some(EADDRINUSE), _) => situation().cid_in_use(request.cid),
            (LaunchStep::Start, Some(NeError::FullCoresNotUsed), _, cpus) => {
                situation().part_of_a_core(cpus)
            }
            (
                LaunchStep::CreateVm | LaunchStep::AddVcpu,
                Some(NeError::NoCpusAvailInPool),
                _,
                CpuRequest::Count(count),
            ) => situation().too_few_cpus(*count),
            (LaunchStep::AddVcpu, _, _, CpuRequest::Ids(ids)) => situation()
                .named_cpus_refused(ids)
                .unwrap_or_else(|| self.plain_launch_error(error)),
            _ => self.plain_launch_error(error),
        }
    }

    /// A launch failure's code and hint from the step and the driver's error alone.
    fn plain_launch_error(&self, error: &LaunchError) -> CliError {
        let message = chain(error);
        let (ne, errno) = driver_codes(error);
        match (error.step(), ne, errno) {
            (LaunchStep::Request, _, _) if matches!(error, LaunchError::DuplicateCpu(_)) => {
                CliError::new(Code::InvalidCpuConfiguration, message)
            }
            (LaunchStep::Request, _, _) => CliError::new(Code::InvalidArgument, message),
            (LaunchStep::Image, _, _) => CliError::new(Code::EifParsing, message)
                .hint("check the image with `nectl describe-eif`"),
            (LaunchStep::MemoryRequested, _, _) => {
                CliError::new(Code::InsufficientMemoryRequested, message)
                    .hint("ask for more with --memory")
            }
            (LaunchStep::MemoryAvailable, _, _) => {
                CliError::new(Code::InsufficientMemoryAvailable, message)
                    .hint("ask for less memory, or terminate an enclave to free its hugepages")
            }
            (LaunchStep::CreateVm | LaunchStep::AddVcpu, Some(NeError::NoCpusAvailInPool), _) => {
                CliError::new(Code::InsufficientCpus, message)
                    .hint("ask for fewer CPUs, or terminate an enclave to free its cores")
            }
            (LaunchStep::CreateVm, _, Some(ENOSPC)) => {
                let most = self
                    .parent
                    .status()
                    .max_enclaves
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
            (LaunchStep::Start, _, Some(ENOEXEC)) => CliError::new(
                Code::EnclaveBoot,
                format!("the hypervisor refused the image in enclave memory: {message}"),
            )
            .hint(format!(
                "the parent's log ({}) says why",
                crate::paths::log_path(&self.socket).display()
            )),
            (LaunchStep::Start, _, _) => CliError::new(Code::StartEnclave, message),
            (LaunchStep::Heartbeat, _, _) => {
                let console = match error {
                    LaunchError::NoHeartbeat {
                        console: Some(lines),
                        ..
                    } if !lines.is_empty() => {
                        format!("\nthe enclave's console ended with:\n{lines}")
                    }
                    _ => String::new(),
                };
                CliError::new(
                    Code::EnclaveBoot,
                    format!("{message}; the enclave was terminated{console}"),
                )
                .hint("check that the image's init sends the heartbeat to CID 3, port 9000 (ne-init does), and the enclave's console (--debug-mode, `nectl console`)")
            }
        }
    }
}

/// The driver's `NE_ERR_*` code and errno behind a launch failure, if it came from a call.
fn driver_codes(error: &LaunchError) -> (Option<NeError>, Option<i32>) {
    let driver = error.driver_error();
    (
        driver.and_then(ne_driver::Error::ne_error),
        driver.map(ne_driver::Error::errno),
    )
}

/// Copies a console to a client: what it printed so far, then what it prints, until the
/// enclave ends or the client goes away.
fn pipe_console(reader: ConsoleReader, mut stream: std::os::unix::net::UnixStream) {
    use std::io::Write;
    if stream.write_all(&reader.history).is_err() {
        return;
    }
    for chunk in reader.live {
        if stream.write_all(&chunk).is_err() {
            return;
        }
    }
}

fn is_running<P: ParentInstance>(launched: &Launched<P>) -> bool {
    !launched.enclave.wait_event(Duration::ZERO).unwrap_or(false)
}

fn describe_entry<P: ParentInstance>(entry: &Entry<P>) -> EnclaveJson {
    let launched = &entry.launched;
    let state = if is_running(launched) {
        "RUNNING"
    } else {
        "TERMINATING"
    };
    EnclaveJson {
        name: entry.name.clone(),
        id: entry.id.clone(),
        process_id: std::process::id(),
        cid: launched.cid,
        cpu_count: launched.cpu_ids.len(),
        cpu_ids: launched.cpu_ids.clone(),
        memory_mib: launched.memory_mib,
        state: Some(state.to_owned()),
        flags: Some(if launched.debug { "DEBUG_MODE" } else { "NONE" }.to_owned()),
        measurements: Some(MeasurementsJson::from(&launched.measurements)),
        image_name: None,
        image_version: None,
        metadata: None,
    }
}

/// The longest enclave name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Refuses a name no user could mean: empty, too long, or holding control characters
/// (newlines, terminal escapes), which would garble describe-enclaves and the log.
fn check_enclave_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name.chars().count() > MAX_NAME_CHARS {
        format!("is longer than {MAX_NAME_CHARS} characters")
    } else if name.chars().any(char::is_control) {
        format!("{name:?} holds a control character (a newline, tab or terminal escape)")
    } else {
        return Ok(());
    };
    Err(
        CliError::new(Code::EnclaveNaming, format!("the --enclave-name {why}"))
            .hint(format!("use 1 to {MAX_NAME_CHARS} printable characters")),
    )
}

/// A name made from a file name: control characters become `_`, cut to the longest name.
fn sanitized_name(stem: &str) -> String {
    stem.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .take(MAX_NAME_CHARS)
        .collect()
}
