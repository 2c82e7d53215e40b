// SPDX-License-Identifier: Apache-2.0
//! The command line: nitro-cli's subcommands and flags, plus the emulated parent's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ne_abi::uapi::{is_reserved_cid, LAST_ENCLAVE_CID};
use ne_parent::{BackendChoice, ParentConfig};
use ne_vm::{Accel, VmChoice};
use serde_json::{json, Value};

use crate::eif_cmds::{self, BuildArgs};
use crate::error::{CliError, Code, Result};
use crate::parent::client::call;
use crate::parent::protocol::{Cpus, Request, Target};
use crate::parent::server;
use crate::paths::{self, socket_path};

/// Run Nitro Enclaves on an emulated parent, with nitro-cli's commands and JSON.
#[derive(Debug, Parser)]
#[command(name = "nectl", version, about)]
pub struct Cli {
    #[command(flatten)]
    socket: SocketArg,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    runner: RunnerArgs,
    #[command(subcommand)]
    command: Command,
}

/// `--socket`, for the commands that talk to the emulated parent (before the command name,
/// or after it).
#[derive(Clone, Debug, Default, Args)]
struct SocketArg {
    /// The emulated parent's socket [default: $NECTL_SOCKET, else
    /// $XDG_RUNTIME_DIR/nectl/parent.sock, else /tmp/nectl-UID/parent.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// `--device`, for the commands that run enclaves or reach them.
#[derive(Clone, Debug, Default, Args)]
struct DeviceArg {
    /// Run enclaves through the Linux driver at this device (e.g. /dev/nitro_enclaves)
    /// instead of on an emulated parent, and reach them over this machine's vsock.
    #[arg(long, value_name = "DEVICE")]
    device: Option<PathBuf>,
}

/// `--backend` and `--accel`, for the commands that start a parent or a device.
#[derive(Clone, Copy, Debug, Default, Args)]
struct RunnerArgs {
    /// What runs the enclaves of the parent a command starts: `vm` boots each as a QEMU VM
    /// (the default), `sim` boots nothing (images are still checked and measured).
    #[arg(long, env = "NECTL_BACKEND", value_enum)]
    backend: Option<BackendArg>,
    /// How enclave VMs run their vCPUs [default: kvm where it works, else tcg].
    #[arg(long, env = "NECTL_ACCEL", value_enum)]
    accel: Option<AccelArg>,
}

/// The options that say which parent a command addresses, from after the command name or,
/// failing that, from before it.
#[derive(Clone, Debug, Default)]
struct Options {
    socket: Option<PathBuf>,
    device: Option<PathBuf>,
    backend: Option<BackendArg>,
    accel: Option<AccelArg>,
}

impl Options {
    fn of(
        socket: Option<&SocketArg>,
        device: Option<&DeviceArg>,
        runner: Option<&RunnerArgs>,
    ) -> Options {
        Options {
            socket: socket.and_then(|s| s.socket.clone()),
            device: device.and_then(|d| d.device.clone()),
            backend: runner.and_then(|r| r.backend),
            accel: runner.and_then(|r| r.accel),
        }
    }

    /// These options, each missing one taken from `before`.
    fn or(self, before: Options) -> Options {
        Options {
            socket: self.socket.or(before.socket),
            device: self.device.or(before.device),
            backend: self.backend.or(before.backend),
            accel: self.accel.or(before.accel),
        }
    }
}

/// What runs a parent's enclaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// Each enclave boots as a QEMU VM.
    Vm,
    /// Nothing boots.
    Sim,
}

/// How enclave VMs run their vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// How to start a parent process: on which device, with which backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentStart {
    /// The kernel's device, for a parent on a real (or guest) NE device.
    pub device: Option<PathBuf>,
    /// The backend of an emulated parent.
    pub backend: Option<BackendArg>,
    /// The accelerator of its VMs.
    pub accel: Option<AccelArg>,
}

impl ParentStart {
    /// The arguments of `nectl parent run` that start such a parent.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        if let Some(device) = &self.device {
            args.extend(["--device".into(), device.clone().into_os_string()]);
        }
        if let Some(backend) = self.backend {
            let name = match backend {
                BackendArg::Vm => "vm",
                BackendArg::Sim => "sim",
            };
            args.extend(["--backend".into(), name.into()]);
        }
        if let Some(accel) = self.accel {
            let name = match accel {
                AccelArg::Kvm => "kvm",
                AccelArg::Tcg => "tcg",
            };
            args.extend(["--accel".into(), name.into()]);
        }
        args
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Launch an enclave from an EIF (starts the emulated parent if none runs).
    RunEnclave(RunArgs),
    /// List the running enclaves as a JSON array.
    DescribeEnclaves {
        /// Add each image's name, version and build metadata (nitro-cli's --metadata).
        #[arg(long)]
        metadata: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Terminate enclaves.
    TerminateEnclave {
        #[command(flatten)]
        which: TerminateArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the console of a debug-mode enclave until it ends (or the timeout passes).
    Console(ConsoleArgs),
    /// Connect stdin and stdout to a vsock port of an enclave, from the parent's side
    /// (through the parent's `vsock/enclave-<cid>.sock`, Firecracker's hybrid vsock).
    Connect {
        /// The enclave's CID.
        #[arg(long)]
        enclave_cid: u64,
        /// The port in the enclave.
        #[arg(long)]
        port: u32,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Validate an EIF and print its measurements and metadata.
    DescribeEif {
        /// The EIF file.
        #[arg(long)]
        eif_path: PathBuf,
    },
    /// Build an EIF from a kernel, a command line and ramdisks.
    BuildEif(BuildEifArgs),
    /// Sign an EIF with a P-384 key and its certificate, as nitro-cli's sign-eif: PCR8
    /// then measures the certificate, and describe-eif checks the signature.
    SignEif {
        /// The EIF (replaced by the signed one unless --output-file is given).
        #[arg(long)]
        eif_path: PathBuf,
        /// The PEM X.509 certificate of the key.
        #[arg(long, value_name = "FILE")]
        signing_certificate: PathBuf,
        /// The P-384 EC private key, PEM (PKCS#8 or SEC1).
        #[arg(long, value_name = "FILE")]
        private_key: PathBuf,
        /// Write the signed image here instead.
        #[arg(long, value_name = "FILE")]
        output_file: Option<PathBuf>,
    },
    /// Build a runnable EIF from a container's files and a command, with the project's
    /// kernel and init: no Docker daemon, no network; the same inputs give the same PCRs.
    BuildEnclave(BuildEnclaveArgs),
    /// Print the PCR of a file (--input), or PCR8 of a signing certificate, as nitro-cli's
    /// `pcr` does: compare it with an image's or an attestation's measurements.
    Pcr {
        /// The file to measure.
        #[arg(
            long,
            required_unless_present = "signing_certificate",
            conflicts_with = "signing_certificate"
        )]
        input: Option<PathBuf>,
        /// A PEM X.509 certificate: prints the PCR8 of images signed with it.
        #[arg(long, value_name = "FILE")]
        signing_certificate: Option<PathBuf>,
    },
    /// Print the root certificate (PEM) of the enclaves' NSMs — made on first use, kept
    /// owner-only in $NECTL_ATTESTATION_DIR or ~/.config/nectl/attestation — for
    /// verifiers of their attestation documents.
    AttestationRoot,
    /// Verify an attestation document (from /dev/nsm in an enclave) as a verifier would:
    /// signature, certificate chain to the root, fields, and the PCRs and nonce expected.
    VerifyAttestation(crate::attestation::VerifyArgs),
    /// Pack a directory into an initramfs (newc cpio): sorted, times and owners zeroed,
    /// so the same files always give the same bytes (and the same PCRs).
    BuildInitramfs {
        /// The directory that becomes the enclave's root.
        #[arg(long)]
        root: PathBuf,
        /// Where to write the archive.
        #[arg(long)]
        output: PathBuf,
    },
    /// Explain an error code (E03, E26, …): `explain E26`, or nitro-cli's
    /// `explain --error-code E26`.
    Explain {
        /// The code.
        #[arg(required_unless_present = "error_code", conflicts_with = "error_code")]
        code: Option<String>,
        /// The code, as nitro-cli spells the option.
        #[arg(long, value_name = "CODE")]
        error_code: Option<String>,
    },
    /// Manage the emulated parent (the background process that holds the enclaves).
    #[command(subcommand)]
    Parent(ParentCommand),
    /// Serve the NE device over vfio-user on --socket, for QEMU's `vfio-user-pci`.
    Serve(ServeArgs),
    /// Measure, against the floor measured in the same run, and print JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect and steer the device `nectl serve` runs, through its control socket.
    #[command(visible_alias = "device")]
    Control(ControlArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// NE_START_ENCLAVE to heartbeat through the device and the VM backend, against QEMU
    /// booting the same kernel and initrd directly (alternating, median and max).
    Boot {
        /// The image (an init that sends the heartbeat, e.g. target/enclave/hello.eif).
        #[arg(long)]
        eif_path: PathBuf,
        /// Boots of each kind.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// vCPUs.
        #[arg(long, default_value_t = 2)]
        cpu_count: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u64,
    },
    /// NE_START_ENCLAVE to heartbeat on this parent: through the kernel's driver with
    /// --device (e.g. in a guest of `nectl serve`), else on the embedded default.
    Heartbeat {
        /// The image (an init that sends the heartbeat, e.g. target/enclave/hello.eif).
        #[arg(long)]
        eif_path: PathBuf,
        /// Boots, one after the other.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
        runs: u16,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        cpu_count: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u64,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Throughput to a running enclave's counting port (the hello image counts on 5006),
    /// through the kernel's vsock with --device, else the emulated parent's hybrid vsock.
    Vsock {
        /// The enclave's CID.
        #[arg(long)]
        enclave_cid: u64,
        /// The port that counts what it receives and answers the count.
        #[arg(long, default_value_t = 5006)]
        port: u32,
        /// MiB sent per run.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        mib: u64,
        /// The size of each write, in KiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
        write_kib: u16,
        /// Runs.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
        runs: u16,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        device: DeviceArg,
    },
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// The control socket given to `nectl serve --control`.
    #[arg(long)]
    control: PathBuf,
    #[command(subcommand)]
    command: ControlCommand,
}

#[derive(Debug, Subcommand)]
enum ControlCommand {
    /// The slots: state, CID, memory regions, vCPUs.
    Slots,
    /// The last commands the device completed, with their rc.
    History,
    /// Counters, and whether the driver enabled the device.
    Status,
    /// Make the next commands fail, wait or vanish.
    Fault {
        /// The command to catch (SLOT_ALLOC, 4, …); every command if omitted.
        #[arg(long)]
        command: Option<String>,
        /// How many commands to catch.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Answer this rc (e.g. -12) without executing.
        #[arg(long, allow_hyphen_values = true, group = "action")]
        rc: Option<i32>,
        /// Hold the reply until `release-reply`.
        #[arg(long, group = "action")]
        delay: bool,
        /// Lose the reply.
        #[arg(long, group = "action")]
        drop: bool,
    },
    /// Disarm every fault.
    ClearFaults,
    /// Publish a reply held by --delay.
    ReleaseReply,
    /// Make the enclave of a slot exit (or crash) on its own; the guest sees vector 1.
    EndEnclave {
        /// The slot.
        #[arg(long)]
        slot: u64,
        /// Crash rather than exit.
        #[arg(long)]
        crash: bool,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where QEMU's vfio-user-pci connects (required).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(flatten)]
    runner: RunnerArgs,
    /// The parent's CPU count: vCPU ids the device accepts run below it.
    #[arg(long, default_value_t = ne_vfio_user::DEFAULT_PARENT_CPUS)]
    parent_cpus: u32,
    /// The most enclaves at once.
    #[arg(long, default_value_t = ne_device::config::DEFAULT_MAX_SLOTS)]
    max_enclaves: usize,
    /// The most memory regions per enclave (reported by SLOT_ALLOC).
    #[arg(long, default_value_t = ne_device::config::DEFAULT_MAX_MEM_REGIONS)]
    max_mem_regions: u64,
    /// The most vCPUs per enclave.
    #[arg(long, default_value_t = ne_device::config::DEFAULT_MAX_VCPUS_PER_SLOT)]
    max_vcpus: u32,
    /// A control socket to open beside it (see `nectl control`).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Make every enclave start take this long, completed off the socket loop (to test
    /// how a guest copes with slow boots; simulated enclaves only).
    #[arg(long)]
    start_delay_ms: Option<u64>,
    /// Where the enclave VMs' files and the host's vsock sockets go (`vsock/<port>.sock`,
    /// `vsock/enclave-<cid>.sock`) [default: the socket's path with `.d` added].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve the guest's vsock device on this vhost-user socket (QEMU: `-chardev
    /// socket,id=v,path=PATH -device vhost-user-vsock-pci,chardev=v`): the guest
    /// is then CID 3 to its enclaves, as a parent instance is on Nitro.
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The EIF to run.
    #[arg(long, required_unless_present = "config")]
    eif_path: Option<PathBuf>,
    /// How many vCPUs (whole cores are taken from the pool).
    #[arg(
        long,
        conflicts_with = "cpu_ids",
        required_unless_present_any = ["cpu_ids", "config"]
    )]
    cpu_count: Option<u32>,
    /// Which vCPUs, e.g. `1,5` or `1 5`.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    cpu_ids: Option<Vec<u32>>,
    /// Memory in MiB (rounded up to whole 2 MiB hugepages).
    #[arg(long, required_unless_present = "config")]
    memory: Option<u64>,
    /// Read these options from nitro-cli's JSON configuration file instead (eif_path,
    /// memory_mib, cpu_count or cpu_ids, enclave_cid, debug_mode, enclave_name).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["eif_path", "cpu_count", "cpu_ids", "memory", "enclave_cid", "debug_mode", "enclave_name"]
    )]
    config: Option<PathBuf>,
    /// The enclave's CID (default: the device picks one).
    #[arg(long)]
    enclave_cid: Option<u64>,
    /// Start in debug mode.
    #[arg(long)]
    debug_mode: bool,
    /// A name for the enclave (default: the EIF's file name without extension).
    #[arg(long)]
    enclave_name: Option<String>,
    /// Once it runs, print its console until it ends (needs debug mode).
    #[arg(long)]
    attach_console: bool,
    #[command(flatten)]
    socket: SocketArg,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    runner: RunnerArgs,
}

impl RunArgs {
    /// The options from the command line, or from the configuration file it names.
    fn resolved(self) -> Result<RunArgs> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let config = crate::run_config::load(path)?;
        Ok(RunArgs {
            eif_path: Some(config.eif_path),
            cpu_count: config.cpu_count,
            cpu_ids: config.cpu_ids,
            memory: Some(config.memory_mib),
            config: None,
            enclave_cid: config.enclave_cid,
            debug_mode: config.debug_mode.unwrap_or(false),
            enclave_name: config.enclave_name,
            attach_console: self.attach_console,
            socket: self.socket,
            device: self.device,
            runner: self.runner,
        })
    }
}

#[derive(Debug, Args)]
struct ConsoleArgs {
    #[command(flatten)]
    enclave: EnclaveSelector,
    #[command(flatten)]
    socket: SocketArg,
    /// Stop printing after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    disconnect_timeout: Option<u64>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct EnclaveSelector {
    /// The enclave's ID, as describe-enclaves prints it.
    #[arg(long)]
    enclave_id: Option<String>,
    /// The enclave's name.
    #[arg(long)]
    enclave_name: Option<String>,
}

impl EnclaveSelector {
    fn id_or_name(&self) -> String {
        self.enclave_id
            .clone()
            .or_else(|| self.enclave_name.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TerminateArgs {
    /// The enclave's ID, as describe-enclaves prints it.
    #[arg(long)]
    enclave_id: Option<String>,
    /// The enclave's name.
    #[arg(long)]
    enclave_name: Option<String>,
    /// Every enclave.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
struct BuildEnclaveArgs {
    /// A directory that becomes the enclave's root.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "oci_archive",
        conflicts_with = "oci_archive"
    )]
    rootfs: Option<PathBuf>,
    /// An image archive: the OCI layout (`skopeo copy … oci-archive:FILE`, `docker save`
    /// of Docker 25 and later) or Docker's older `docker save` layout.
    #[arg(long, value_name = "FILE")]
    oci_archive: Option<PathBuf>,
    /// Where to write the EIF.
    #[arg(long, value_name = "FILE")]
    output_file: PathBuf,
    /// An environment variable for the command (repeatable; added to the image's).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The kernel [default: the kit's, $NE_CACHE/kit/kernel/vmlinuz].
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// A statically linked ne-init [default: $NE_INIT, else beside nectl, else this
    /// checkout's static release build].
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// The directory of the vsock modules [default: the kit's].
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// The image name in its metadata [default: the output's file stem].
    #[arg(long)]
    name: Option<String>,
    /// The image version in its metadata.
    #[arg(long, default_value = "1.0")]
    version: String,
    /// The command and its arguments, after `--` [default: the image's entry point and
    /// command].
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct BuildEifArgs {
    /// The kernel image.
    #[arg(long)]
    kernel: PathBuf,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// A ramdisk (repeat; the first is the bootstrap).
    #[arg(long = "ramdisk", required = true)]
    ramdisks: Vec<PathBuf>,
    /// Where to write the EIF.
    #[arg(long)]
    output: PathBuf,
    /// The image name in the metadata (default: the output's file stem).
    #[arg(long)]
    name: Option<String>,
    /// The image version in the metadata.
    #[arg(long, default_value = "1.0")]
    image_version: String,
    /// The kernel is for arm64.
    #[arg(long)]
    arm64: bool,
}

#[derive(Debug, Subcommand)]
enum ParentCommand {
    /// Run the emulated parent in the foreground (what `run-enclave` starts in the background).
    Run(ParentRunArgs),
    /// Terminate every enclave and stop the emulated parent.
    Stop {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Describe the emulated parent: CPUs, pool, hugepages, enclaves.
    Status {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Make an enclave exit or crash on its own, as the hypervisor would report it.
    EndEnclave {
        /// The enclave's ID or name.
        #[arg(long)]
        enclave: String,
        /// Crash instead of exiting cleanly.
        #[arg(long)]
        crash: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
}

/// How the emulated parent's CPUs are numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NumberingArg {
    /// Siblings apart: CPU c and c + cores.
    X86,
    /// Siblings adjacent: CPUs 2c and 2c + 1 (with 2 threads).
    Arm64,
}

/// The emulated parent's cores when none are asked for (of 2 threads each).
const DEFAULT_CORES: u32 = 8;

#[derive(Debug, Args)]
struct ParentRunArgs {
    /// RAM in MiB (only what enclaves touch is backed).
    #[arg(long, default_value_t = 4096)]
    ram_mib: u64,
    /// RAM in MiB the parent keeps; the rest is hugepages.
    #[arg(long, default_value_t = 512)]
    reserved_mib: u64,
    /// CPU cores [default: 8, of 2 threads: 16 vCPUs as an enclave-enabled 4xlarge
    /// instance has, whose pool of 7 cores fits the 4 enclaves of 2 vCPUs a parent may run].
    #[arg(long, default_value_t = DEFAULT_CORES, hide_default_value = true)]
    cores: u32,
    /// Threads per core.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// How Linux numbers the CPUs: `x86` (thread t of core c is CPU t × cores + c) or
    /// `arm64` (a core's threads are adjacent CPUs, as on Graviton and QEMU's `virt`).
    #[arg(long, value_enum, default_value_t = NumberingArg::X86)]
    cpu_numbering: NumberingArg,
    /// With `--cpu-numbering arm64`: clusters the cores are split into. Core ids restart in
    /// each, and the driver takes same-numbered cores of two clusters for one core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    clusters: u32,
    /// The NE CPU pool (`ne_cpus`) [default: every core but CPU 0's].
    #[arg(long)]
    cpu_pool: Option<String>,
    /// The most enclaves at once.
    #[arg(long, default_value_t = 4)]
    max_enclaves: usize,
    #[command(flatten)]
    socket: SocketArg,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    runner: RunnerArgs,
}

/// Prints `value` as nitro-cli prints its JSON.
pub fn print_json(value: &Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    // A reader that went away (`| head`) is not an error of ours.
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Runs a parsed command; `Some` is JSON to print.
pub fn run(cli: Cli) -> Result<Option<Value>> {
    let options = cli.command.options().or(Options::of(
        Some(&cli.socket),
        Some(&cli.device),
        Some(&cli.runner),
    ));
    let socket = socket_path(options.socket.as_deref())?;
    let start = ParentStart {
        device: options.device.clone(),
        backend: options.backend,
        accel: options.accel,
    };
    match cli.command {
        Command::RunEnclave(args) => {
            let args = args.resolved()?;
            let attach = args.attach_console;
            if attach && !args.debug_mode {
                return Err(CliError::new(
                    Code::InvalidArgument,
                    "--attach-console needs debug mode: a production enclave has no console",
                )
                .hint("add --debug-mode (or \"debug_mode\": true in the --config file)"));
            }
            let ran = run_enclave(&socket, &start, args)?;
            if !attach {
                return Ok(Some(ran));
            }
            print_json(&ran);
            let id = ran
                .get("EnclaveID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            crate::parent::client::console(&socket, &id, None).map(|()| None)
        }
        Command::Connect {
            enclave_cid, port, ..
        } => crate::vsock_connect::connect(&vsock_route(&options, &socket), enclave_cid, port)
            .map(|()| None),
        Command::Console(args) => crate::parent::client::console(
            &socket,
            &args.enclave.id_or_name(),
            args.disconnect_timeout.map(Duration::from_secs),
        )
        .map(|()| None),
        Command::DescribeEnclaves { metadata, .. } => {
            describe_enclaves(&socket, metadata).map(Some)
        }
        Command::TerminateEnclave { which: args, .. } => {
            let target = match (args.enclave_id, args.enclave_name) {
                (Some(id), _) => Target::Id(id),
                (None, Some(name)) => Target::Name(name),
                (None, None) => Target::All,
            };
            match target {
                // Every enclave of no parent is none at all.
                Target::All if !parent_runs(&socket) => Ok(Some(json!([]))),
                target => call(&socket, &Request::Terminate(target), None).map(Some),
            }
        }
        Command::DescribeEif { eif_path } => eif_cmds::describe(&eif_path).map(Some),
        Command::AttestationRoot => {
            print!("{}", crate::attestation::export_root()?);
            Ok(None)
        }
        Command::VerifyAttestation(args) => crate::attestation::verify(&args).map(Some),
        Command::SignEif {
            eif_path,
            signing_certificate,
            private_key,
            output_file,
        } => eif_cmds::sign(
            &eif_path,
            &signing_certificate,
            &private_key,
            output_file.as_deref(),
        )
        .map(Some),
        Command::BuildEnclave(args) => {
            let source = match (args.rootfs, args.oci_archive) {
                (Some(dir), _) => crate::build_enclave::Source::Rootfs(dir),
                (None, Some(archive)) => crate::build_enclave::Source::Archive(archive),
                (None, None) => {
                    return Err(CliError::new(
                        Code::InvalidArgument,
                        "give --rootfs DIR or --oci-archive FILE",
                    ))
                }
            };
            crate::build_enclave::build(&crate::build_enclave::BuildEnclave {
                source,
                command: args.command,
                env: args.env,
                output: args.output_file,
                kernel: args.kernel,
                init: args.init,
                modules: args.modules,
                name: args.name,
                version: args.version,
            })
            .map(Some)
        }
        Command::Pcr {
            input,
            signing_certificate,
        } => match (input, signing_certificate) {
            (_, Some(certificate)) => eif_cmds::pcr8_of_certificate(&certificate).map(Some),
            (Some(input), None) => eif_cmds::pcr_of_file(&input).map(Some),
            (None, None) => Err(CliError::new(
                Code::InvalidArgument,
                "give --input or --signing-certificate",
            )),
        },
        Command::BuildEif(args) => eif_cmds::build(&BuildArgs {
            kernel: args.kernel,
            cmdline: args.cmdline,
            ramdisks: args.ramdisks,
            output: args.output,
            name: args.name,
            version: args.image_version,
            arm64: args.arm64,
        })
        .map(Some),
        Command::BuildInitramfs { root, output } => {
            eif_cmds::build_initramfs(&root, &output).map(Some)
        }
        Command::Explain { code, error_code } => {
            explain(code.or(error_code).as_deref().unwrap_or_default()).map(Some)
        }
        Command::Parent(command) => parent(&socket, &start, command),
        Command::Serve(args) => {
            let backend = serve_backend(
                options.socket.as_deref(),
                &args,
                options.backend,
                options.accel,
            )?;
            serve(options.socket.as_deref(), &args, backend).map(|()| None)
        }
        Command::Control(args) => control(&args).map(Some),
        Command::Bench(BenchCommand::Boot {
            eif_path,
            runs,
            cpu_count,
            memory,
        }) => {
            init_logging();
            crate::bench::boot(&crate::bench::BootBench {
                eif: eif_path,
                runs,
                cpus: cpu_count,
                memory_mib: memory,
            })
            .map(Some)
        }
        Command::Bench(BenchCommand::Heartbeat {
            eif_path,
            runs,
            cpu_count,
            memory,
            ..
        }) => {
            init_logging();
            crate::bench::heartbeat(&crate::bench::HeartbeatBench {
                eif: eif_path,
                runs: runs.into(),
                cpus: cpu_count,
                memory_mib: memory,
                device: options.device.clone(),
            })
            .map(Some)
        }
        Command::Bench(BenchCommand::Vsock {
            enclave_cid,
            port,
            mib,
            write_kib,
            runs,
            ..
        }) => crate::bench::vsock(&crate::bench::VsockBench {
            route: vsock_route(&options, &socket),
            cid: enclave_cid,
            port,
            mib,
            write_kib: write_kib.into(),
            runs: runs.into(),
        })
        .map(Some),
    }
}

impl Command {
    /// The parent options given after the command's name.
    fn options(&self) -> Options {
        match self {
            Command::RunEnclave(args) => {
                Options::of(Some(&args.socket), Some(&args.device), Some(&args.runner))
            }
            Command::DescribeEnclaves { socket, .. } => Options::of(Some(socket), None, None),
            Command::TerminateEnclave { socket, .. } => Options::of(Some(socket), None, None),
            Command::Console(args) => Options::of(Some(&args.socket), None, None),
            Command::Connect { socket, device, .. } => {
                Options::of(Some(socket), Some(device), None)
            }
            Command::Parent(ParentCommand::Run(args)) => {
                Options::of(Some(&args.socket), Some(&args.device), Some(&args.runner))
            }
            Command::Parent(
                ParentCommand::Stop { socket }
                | ParentCommand::Status { socket }
                | ParentCommand::EndEnclave { socket, .. },
            ) => Options::of(Some(socket), None, None),
            Command::Serve(args) => Options {
                socket: args.socket.clone(),
                ..Options::of(None, None, Some(&args.runner))
            },
            Command::Bench(BenchCommand::Heartbeat { device, .. }) => {
                Options::of(None, Some(device), None)
            }
            Command::Bench(BenchCommand::Vsock { socket, device, .. }) => {
                Options::of(Some(socket), Some(device), None)
            }
            Command::Bench(BenchCommand::Boot { .. })
            | Command::DescribeEif { .. }
            | Command::AttestationRoot
            | Command::VerifyAttestation(_)
            | Command::BuildEif(_)
            | Command::BuildEnclave(_)
            | Command::SignEif { .. }
            | Command::BuildInitramfs { .. }
            | Command::Explain { .. }
            | Command::Pcr { .. }
            | Command::Control(_) => Options::default(),
        }
    }
}

/// How this command reaches enclaves' vsock ports: the machine's own vsock with the
/// kernel's driver, else the emulated parent's hybrid vsock beside its socket.
fn vsock_route(options: &Options, socket: &Path) -> crate::vsock_connect::Route {
    match &options.device {
        Some(_) => crate::vsock_connect::Route::Vsock,
        None => crate::vsock_connect::Route::Hybrid(
            socket.parent().unwrap_or(Path::new(".")).join("vsock"),
        ),
    }
}

fn control(args: &ControlArgs) -> Result<Value> {
    use ne_vfio_user::control::{ControlRequest, FaultKind};
    let request = match &args.command {
        ControlCommand::Slots => ControlRequest::Slots,
        ControlCommand::History => ControlRequest::History,
        ControlCommand::Status => ControlRequest::Status,
        ControlCommand::Fault {
            command,
            count,
            rc,
            delay,
            drop,
        } => {
            let action = match (rc, delay, drop) {
                (Some(rc), _, _) => FaultKind::Fail(*rc),
                (None, true, _) => FaultKind::Delay,
                (None, false, true) => FaultKind::Drop,
                (None, false, false) => {
                    return Err(CliError::new(
                        Code::InvalidArgument,
                        "give --rc, --delay or --drop",
                    ));
                }
            };
            ControlRequest::Fault {
                command: command.clone(),
                count: *count,
                action,
            }
        }
        ControlCommand::ClearFaults => ControlRequest::ClearFaults,
        ControlCommand::ReleaseReply => ControlRequest::ReleaseReply,
        ControlCommand::EndEnclave { slot, crash } => ControlRequest::End {
            slot_uid: *slot,
            crash: *crash,
        },
    };
    let unreachable = |e: ne_jsonl::CallError| {
        CliError::new(
            Code::ParentConnection,
            format!("cannot use the control socket: {}", ne_hypervisor::error_chain(&e)),
        )
        .hint("start the server with `nectl serve --socket PATH --control PATH`, and give that control path")
    };
    ne_vfio_user::control::call(&args.control, &request)
        .map_err(unreachable)?
        .map_err(|why| CliError::new(Code::InvalidArgument, why.to_string()))
}

/// What runs the enclaves of `nectl serve`.
#[derive(Debug)]
enum ServeBackend {
    /// Nothing boots; starts may be delayed.
    Simulated { delay: Option<Duration> },
    /// Each enclave boots as a QEMU VM.
    Vm(VmChoice),
}

/// The backend `serve` runs: `--backend`, else a VM where QEMU is found (a warning and the
/// simulated backend where it is not).
fn serve_backend(
    socket: Option<&Path>,
    args: &ServeArgs,
    backend: Option<BackendArg>,
    accel: Option<AccelArg>,
) -> Result<ServeBackend> {
    let delay = args.start_delay_ms.map(Duration::from_millis);
    let vm = match backend {
        Some(BackendArg::Sim) => false,
        Some(BackendArg::Vm) => true,
        None if delay.is_some() => false,
        None => match ne_vm::Qemu::find() {
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "nectl serve: enclaves will be simulated (nothing boots): {}",
                    ne_hypervisor::error_chain(&e)
                );
                false
            }
        },
    };
    if !vm {
        if args.vsock.is_some() {
            return Err(CliError::new(
                Code::InvalidArgument,
                "--vsock needs enclaves that run: the VM backend",
            )
            .hint("install QEMU (scripts/provision.sh) or drop --backend sim"));
        }
        return Ok(ServeBackend::Simulated { delay });
    }
    if delay.is_some() {
        return Err(CliError::new(
            Code::InvalidArgument,
            "--start-delay-ms delays simulated starts only",
        )
        .hint("add --backend sim"));
    }
    let state_dir = match (&args.state_dir, socket) {
        (Some(dir), _) => paths::absolute(dir),
        (None, Some(socket)) => {
            let mut dir = paths::absolute(socket).into_os_string();
            dir.push(".d");
            PathBuf::from(dir)
        }
        (None, None) => PathBuf::new(),
    };
    paths::private_dir(&state_dir, rustix::process::getuid().as_raw())?;
    Ok(ServeBackend::Vm(vm_choice(accel, &state_dir)))
}

/// The VM backend of a parent or server whose files live in `dir`: its VMs' in `vms/`, the
/// parent's vsock sockets in `vsock/`, and the NSMs' parent and root as the installation's.
fn vm_choice(accel: Option<AccelArg>, dir: &Path) -> VmChoice {
    VmChoice {
        accel: accel.map(|accel| match accel {
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }),
        state_dir: dir.join("vms"),
        vsock_dir: Some(dir.join("vsock")),
        nsm: crate::attestation::nsm_choice(),
    }
}

fn serve(socket: Option<&Path>, args: &ServeArgs, backend: ServeBackend) -> Result<()> {
    let socket = socket.ok_or_else(|| {
        CliError::new(Code::InvalidArgument, "serve needs --socket PATH")
            .hint("give the path QEMU's vfio-user-pci connects to")
    })?;
    init_logging();
    let config = ne_device::DeviceConfig {
        parent_cpus: args.parent_cpus,
        max_slots: args.max_enclaves,
        max_mem_regions: args.max_mem_regions,
        max_vcpus_per_slot: args.max_vcpus,
        ..ne_vfio_user::default_device_config()
    };
    tracing::info!(?backend, "enclave backend");
    let mut router = None;
    let server = ne_vfio_user::NeServer::with_backend(socket, config, |notifier| {
        Ok(match backend {
            ServeBackend::Vm(choice) => {
                let vm = ne_vm::VmBackend::from_choice(choice, notifier)
                    .map_err(std::io::Error::other)?;
                router = Some(std::sync::Arc::clone(vm.router()));
                Box::new(vm)
            }
            ServeBackend::Simulated { delay: Some(delay) } => {
                Box::new(ne_hypervisor::Delayed::new(
                    ne_device::SimulatedHypervisor::new(),
                    ne_hypervisor::SystemClock::default(),
                    delay,
                ))
            }
            ServeBackend::Simulated { delay: None } => {
                Box::new(ne_device::SimulatedHypervisor::new())
            }
        })
    })
    .map_err(|e| CliError::new(Code::InvalidArgument, ne_hypervisor::error_chain(&e)))?;
    if let (Some(vsock), Some(router)) = (&args.vsock, router) {
        ne_vsock::serve_parent_vm(router, vsock).map_err(|e| {
            CliError::new(
                Code::FileOperation,
                format!("cannot serve the guest's vsock on {}: {e}", vsock.display()),
            )
        })?;
    }
    let files: Vec<PathBuf> = std::iter::once(socket.to_owned())
        .chain(args.control.clone())
        .chain(args.vsock.clone())
        .collect();
    crate::signals::on_termination(move |signal| {
        tracing::info!(signal, "stopping on a signal");
        for file in &files {
            let _ = std::fs::remove_file(file);
        }
        std::process::exit(0);
    })?;
    if let Some(control) = &args.control {
        ne_vfio_user::control::spawn(control, server.shared()).map_err(|e| {
            CliError::new(
                Code::ParentConnection,
                format!("cannot open the control socket {}: {e}", control.display()),
            )
        })?;
    }
    server
        .serve()
        .map_err(|e| CliError::new(Code::ParentConnection, ne_hypervisor::error_chain(&e)))
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

fn run_enclave(socket: &Path, start: &ParentStart, args: RunArgs) -> Result<Value> {
    // The CPU request itself is checked once, by the parent's launch (nitro-cli's checks).
    let cpus = match (args.cpu_count, args.cpu_ids) {
        (Some(count), _) => Cpus::Count(count),
        (None, Some(ids)) => Cpus::Ids(ids),
        (None, None) => {
            return Err(CliError::new(
                Code::InvalidArgument,
                "give --cpu-count or --cpu-ids",
            ))
        }
    };
    let cid = args.enclave_cid.unwrap_or(0);
    if is_reserved_cid(cid) {
        let why = if cid > LAST_ENCLAVE_CID {
            "is out of range"
        } else {
            "is reserved"
        };
        return Err(
            CliError::new(Code::InvalidArgument, format!("--enclave-cid {cid} {why}")).hint(
                format!(
                    "omit it to let the device pick, or choose a CID from 4 to {LAST_ENCLAVE_CID}"
                ),
            ),
        );
    }
    let given = args.eif_path.unwrap_or_default();
    let eif_path = std::fs::canonicalize(&given).map_err(|e| {
        CliError::new(
            Code::FileOperation,
            format!("cannot open {}: {e}", given.display()),
        )
        .hint("check the --eif-path")
    })?;
    let request = Request::Run {
        eif_path,
        memory_mib: args.memory.unwrap_or_default(),
        cpus,
        cid,
        debug: args.debug_mode,
        name: args.enclave_name,
    };
    call(socket, &request, Some(start))
}

/// Whether a parent answers on `socket` (a socket file left by a killed parent is not one).
fn parent_runs(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

fn describe_enclaves(socket: &Path, metadata: bool) -> Result<Value> {
    // No parent running means no enclaves, as nitro-cli prints [] with none.
    if !parent_runs(socket) {
        return Ok(json!([]));
    }
    call(socket, &Request::Describe { metadata }, None)
}

fn explain(code: &str) -> Result<Value> {
    let code = Code::from_id(code).ok_or_else(|| {
        CliError::new(
            Code::InvalidArgument,
            format!("unknown error code {code:?}"),
        )
        .hint(format!(
            "known codes: {}",
            Code::ALL.map(Code::id).join(", ")
        ))
    })?;
    Ok(json!({ "Code": code.id(), "Explanation": code.explanation() }))
}

/// The backend a parent started with `start` runs, its files beside `socket`.
fn backend_choice(socket: &Path, start: &ParentStart) -> BackendChoice {
    match start.backend.unwrap_or(BackendArg::Vm) {
        BackendArg::Sim => BackendChoice::Simulated,
        BackendArg::Vm => BackendChoice::Vm(vm_choice(
            start.accel,
            socket.parent().unwrap_or(Path::new(".")),
        )),
    }
}

fn parent(socket: &Path, start: &ParentStart, command: ParentCommand) -> Result<Option<Value>> {
    match command {
        ParentCommand::Run(args) => {
            if args.clusters > 1 && args.cpu_numbering == NumberingArg::X86 {
                return Err(CliError::new(
                    Code::InvalidArgument,
                    "--clusters describes arm64's numbering",
                )
                .hint("add --cpu-numbering arm64"));
            }
            init_logging();
            let mut config = ParentConfig {
                ram_mib: args.ram_mib,
                reserved_mib: args.reserved_mib,
                cores: args.cores,
                threads_per_core: args.threads,
                cpu_numbering: match args.cpu_numbering {
                    NumberingArg::X86 => ne_driver::CpuNumbering::SiblingsApart,
                    NumberingArg::Arm64 => ne_driver::CpuNumbering::SiblingsAdjacent {
                        clusters: args.clusters,
                    },
                },
                max_slots: args.max_enclaves,
                reply_timeout: Duration::from_secs(120),
                backend: backend_choice(socket, start),
                ..ParentConfig::default()
            };
            config.cpu_pool = Some(
                args.cpu_pool
                    .unwrap_or_else(|| config.topology().pool_without_cpu0()),
            );
            let spec = match &start.device {
                Some(path) => server::HostSpec::Kernel(path.to_owned()),
                None => server::HostSpec::Emulated(config),
            };
            server::serve(socket, spec).map(|()| None)
        }
        ParentCommand::Stop { .. } => {
            if !parent_runs(socket) {
                return Ok(Some(
                    json!({ "Stopped": false, "Reason": "no parent runs", "Socket": socket }),
                ));
            }
            call(socket, &Request::Stop, None).map(Some)
        }
        ParentCommand::Status { .. } => {
            if !parent_runs(socket) {
                return Ok(Some(json!({ "Running": false, "Socket": socket })));
            }
            call(socket, &Request::Status, None).map(Some)
        }
        ParentCommand::EndEnclave { enclave, crash, .. } => {
            call(socket, &Request::End { enclave, crash }, None).map(Some)
        }
    }
}
