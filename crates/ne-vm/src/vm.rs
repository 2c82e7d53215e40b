// SPDX-License-Identifier: Apache-2.0
//! One enclave VM: its QEMU command line, its process (spawned so that it never outlives
//! this one), its console, and how it ended.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use ne_device::StopReason;
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::qemu::{Accel, Arch, Qemu};
use ne_hypervisor::Console;

/// One contiguous run of the enclave's memory: `size` bytes of `file` from `offset`.
#[derive(Clone, Debug)]
pub struct MemoryRun {
    /// The file holding the donated pages.
    pub file: Arc<File>,
    /// Where the run starts in it.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

/// Where the enclave's RAM comes from.
#[derive(Clone, Debug)]
pub enum EnclaveRam {
    /// The donated pages themselves, one NUMA node per contiguous run, in order.
    Donated(Vec<MemoryRun>),
    /// A fresh shared backend of `size` bytes (when the donated pages cannot be mapped).
    Fresh {
        /// The enclave's memory size.
        size: u64,
    },
}

impl EnclaveRam {
    /// The enclave's memory size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            EnclaveRam::Donated(runs) => runs.iter().map(|run| run.size).sum(),
            EnclaveRam::Fresh { size } => *size,
        }
    }
}

/// Everything one enclave VM is made of.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The enclave's CID (the VM's name says it).
    pub cid: u64,
    /// How many vCPUs.
    pub vcpus: usize,
    /// Its RAM.
    pub ram: EnclaveRam,
    /// The kernel file.
    pub kernel: PathBuf,
    /// The initrd file (the image's ramdisks, concatenated).
    pub initrd: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The vhost-user socket of its vsock device.
    pub vsock: Option<PathBuf>,
    /// The vhost-user socket of its NSM device.
    pub nsm: Option<PathBuf>,
    /// The QMP socket QEMU waits on at start: how the supervisor learns why the VM ended.
    pub qmp: PathBuf,
    /// How its vCPUs run.
    pub accel: Accel,
    /// Its kernel's architecture: which machine QEMU emulates.
    pub arch: Arch,
}

const MIB: u64 = 1 << 20;

/// QEMU's arguments for `spec`, after the binary and its firmware directories.
pub fn arguments(qemu: &Qemu, spec: &VmSpec) -> Vec<OsString> {
    let (machine, cpu) = match (spec.arch, spec.accel) {
        (Arch::X86_64, Accel::Kvm) => ("q35", "host"),
        (Arch::X86_64, Accel::Tcg) => ("q35", "max"),
        (Arch::Aarch64, Accel::Kvm) => ("virt,gic-version=max", "host"),
        // Pointer authentication with QEMU's own algorithm: much faster to emulate.
        (Arch::Aarch64, Accel::Tcg) => ("virt,gic-version=max", "max,pauth-impdef=on"),
    };
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!("ne-enclave-{}", spec.cid),
        "-M".into(),
        machine.into(),
        "-accel".into(),
        spec.accel.name().into(),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{}M", spec.ram.size().div_ceil(MIB)),
    ];
    match &spec.ram {
        EnclaveRam::Donated(runs) => {
            let pid = std::process::id();
            for (node, run) in runs.iter().enumerate() {
                args.push("-object".into());
                args.push(format!(
                    "memory-backend-file,id=ram{node},mem-path=/proc/{pid}/fd/{},offset={},size={},share=on",
                    run.file.as_raw_fd(),
                    run.offset,
                    run.size
                ));
                args.push("-numa".into());
                args.push(format!("node,nodeid={node},memdev=ram{node}"));
            }
        }
        EnclaveRam::Fresh { size } => {
            args.push("-object".into());
            args.push(format!("memory-backend-memfd,id=ram0,size={size},share=on"));
            args.push("-machine".into());
            args.push("memory-backend=ram0".into());
        }
    }
    args.extend([
        "-kernel".into(),
        path_str(&spec.kernel),
        "-initrd".into(),
        path_str(&spec.initrd),
        "-append".into(),
        spec.cmdline.clone(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-monitor".into(),
        "none".into(),
        "-no-reboot".into(),
    ]);
    args.extend([
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=on",
            path_str(&spec.qmp)
        ),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
    ]);
    if qemu.has_exit_with_parent() {
        args.extend(["-run-with".into(), "exit-with-parent=on".into()]);
    }
    if let Some(socket) = &spec.vsock {
        args.extend([
            "-chardev".into(),
            format!("socket,id=vsock,path={}", path_str(socket)),
            "-device".into(),
            "vhost-user-vsock-pci,chardev=vsock".into(),
        ]);
    }
    if let Some(socket) = &spec.nsm {
        args.extend([
            "-chardev".into(),
            format!("socket,id=nsm,path={}", path_str(socket)),
            "-device".into(),
            format!(
                "vhost-user-test-device-pci,virtio-id={},num_vqs=1,chardev=nsm",
                ne_nsm::device::VIRTIO_ID_NSM
            ),
        ]);
    }
    args.into_iter().map(OsString::from).collect()
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Spawns processes from one long-lived thread. QEMU's `exit-with-parent` (like
/// `PR_SET_PDEATHSIG`) fires when the *thread* that forked it ends, so VMs must not be
/// forked from request threads that come and go.
#[derive(Debug)]
pub struct Spawner {
    requests: Mutex<Sender<(Command, Sender<std::io::Result<Child>>)>>,
}

impl Spawner {
    /// Starts the spawning thread.
    pub fn new() -> std::io::Result<Spawner> {
        let (tx, rx) = channel::<(Command, Sender<std::io::Result<Child>>)>();
        thread::Builder::new()
            .name("ne-vm-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner {
            requests: Mutex::new(tx),
        })
    }

    /// Spawns `command` from the spawning thread.
    pub fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (tx, rx) = channel();
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((command, tx))
            .map_err(|_| std::io::Error::other("the VM spawner thread is gone"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the VM spawner thread is gone"))?
    }
}

/// How a VM ended, as the device reports it: a clean exit after a power-off (or a host
/// request) is an exit; a guest reset (a triple fault, a reboot after a panic), a panic
/// seen on the console, a signal or a failing QEMU is a crash.
pub fn stop_reason(status: ExitStatus, panicked: bool, shutdown: Option<&str>) -> StopReason {
    let clean_cause = matches!(
        shutdown,
        Some("guest-shutdown" | "host-signal" | "host-qmp-quit") | None
    );
    if status.success() && !panicked && clean_cause {
        StopReason::Exited
    } else {
        StopReason::Crashed
    }
}

/// A running VM process.
#[derive(Debug)]
pub struct Vm {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    console: Console,
    stopping: Arc<AtomicBool>,
    /// The VM's own directory (kernel, initrd, sockets), removed when it ends.
    pub dir: PathBuf,
}

/// What a VM reports when it ends: whether it was asked to, and how it ended.
#[derive(Debug)]
pub struct VmEnded {
    /// The stop was requested (`ENCLAVE_STOP`, a disable): nothing to report.
    pub requested: bool,
    /// How it ended.
    pub reason: StopReason,
    /// Its console, closed: what it printed last says why.
    pub console: Console,
}

impl Vm {
    /// Spawns QEMU for `spec` through `spawner`; its serial output goes to a new console.
    /// `ended` is called once, from a supervising thread, when the process is gone.
    pub fn spawn(
        qemu: &Qemu,
        spawner: &Spawner,
        spec: &VmSpec,
        dir: PathBuf,
        log: File,
        ended: impl FnOnce(VmEnded) + Send + 'static,
    ) -> std::io::Result<Vm> {
        let mut command = qemu.command();
        command
            .args(arguments(qemu, spec))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        let mut child = spawner.spawn(command)?;
        let pid = child.id();
        let pidfd = Arc::new(
            Pid::from_raw(i32::try_from(pid).unwrap_or(0))
                .ok_or_else(|| std::io::Error::other("QEMU has no pid"))
                .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).map_err(Into::into))
                .inspect_err(|_| {
                    let _ = child.kill();
                    let _ = child.wait();
                })?,
        );
        let console = Console::new();
        let stopping = Arc::new(AtomicBool::new(false));
        let reader = match child.stdout.take() {
            Some(stdout) => Some(spawn_console_reader(
                stdout,
                console.clone(),
                Arc::clone(&pidfd),
            )?),
            None => None,
        };
        let supervised_console = console.clone();
        let supervised_stop = Arc::clone(&stopping);
        let supervised_dir = dir.clone();
        let qmp_path = spec.qmp.clone();
        let qmp_pidfd = Arc::clone(&pidfd);
        thread::Builder::new()
            .name(format!("ne-vm-{pid}"))
            .spawn(move || {
                let shutdown = crate::qmp::watch(&qmp_path, &qmp_pidfd);
                let status = child.wait();
                // The console has everything QEMU printed once its pipe ends: a panic
                // printed just before the exit is seen.
                if let Some(reader) = reader {
                    let _ = reader.join();
                }
                supervised_console.close();
                let _ = std::fs::remove_dir_all(&supervised_dir);
                let shutdown = shutdown.join().ok().flatten();
                let reason = match status {
                    Ok(status) => {
                        stop_reason(status, supervised_console.panicked(), shutdown.as_deref())
                    }
                    Err(_) => StopReason::Crashed,
                };
                ended(VmEnded {
                    requested: supervised_stop.load(Ordering::SeqCst),
                    reason,
                    console: supervised_console,
                });
            })?;
        Ok(Vm {
            pid,
            pidfd,
            console,
            stopping,
            dir,
        })
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The VM's console.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// Ends the VM: SIGTERM (QEMU shuts down cleanly), then SIGKILL after `grace` if it
    /// is still there. Returns at once; the supervisor reaps it.
    pub fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = pidfd_send_signal(&*self.pidfd, Signal::TERM);
        let pidfd = Arc::clone(&self.pidfd);
        let killer = thread::Builder::new()
            .name("ne-vm-killer".to_owned())
            .spawn(move || {
                thread::sleep(grace);
                // A pidfd names this process only: once reaped, the signal fails harmlessly.
                let _ = pidfd_send_signal(&*pidfd, Signal::KILL);
            });
        if killer.is_err() {
            let _ = pidfd_send_signal(&*self.pidfd, Signal::KILL);
        }
    }

    /// Kills the VM at once, as a crash would end it.
    pub fn kill(&self) {
        let _ = pidfd_send_signal(&*self.pidfd, Signal::KILL);
    }

    /// Asks QEMU to end as if the guest powered off (SIGTERM, not marked as requested).
    pub fn terminate(&self) {
        let _ = pidfd_send_signal(&*self.pidfd, Signal::TERM);
    }
}

/// Copies QEMU's serial output into the console; kills the VM when the kernel panics
/// (the Debian kernel would otherwise wait forever with its CPUs spinning).
fn spawn_console_reader(
    mut stdout: impl Read + Send + 'static,
    console: Console,
    pidfd: Arc<OwnedFd>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("ne-vm-console".to_owned())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        console.push(buf.get(..n).unwrap_or_default());
                        if console.panicked() {
                            let _ = pidfd_send_signal(&*pidfd, Signal::KILL);
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> Qemu {
        Qemu {
            program: PathBuf::from("qemu-system-x86_64"),
            prefix: Vec::new(),
            env: Vec::new(),
            data_dirs: Vec::new(),
            version: (11, 1),
        }
    }

    fn memfd() -> Arc<File> {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        Arc::new(File::from(fd))
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// An x86-64 enclave of 2 vCPUs on `ram`, under TCG, with a vsock device.
    fn spec(ram: EnclaveRam) -> VmSpec {
        VmSpec {
            cid: 16,
            vcpus: 2,
            ram,
            kernel: PathBuf::from("/k"),
            initrd: PathBuf::from("/i"),
            cmdline: "console=ttyS0".to_owned(),
            vsock: Some(PathBuf::from("/v.sock")),
            nsm: None,
            qmp: PathBuf::from("/q.sock"),
            accel: Accel::Tcg,
            arch: Arch::X86_64,
        }
    }

    #[test]
    fn test_donated_runs_become_numa_nodes_on_the_files_at_their_offsets() {
        let file = memfd();
        let spec = spec(EnclaveRam::Donated(vec![
            MemoryRun {
                file: Arc::clone(&file),
                offset: 512 * MIB,
                size: 64 * MIB,
            },
            MemoryRun {
                file: Arc::clone(&file),
                offset: 1024 * MIB,
                size: 64 * MIB,
            },
        ]));
        let args = joined(&arguments(&qemu(), &spec));
        let fd = file.as_raw_fd();
        let pid = std::process::id();
        assert!(args.contains(&format!(
            "memory-backend-file,id=ram1,mem-path=/proc/{pid}/fd/{fd},offset={},size={},share=on",
            1024 * MIB,
            64 * MIB
        )));
        assert!(args.contains("-numa node,nodeid=1,memdev=ram1"));
        assert!(args.contains("-m 128M"));
        assert!(args.contains("-M q35 -accel tcg -cpu max -smp 2"));
        assert!(args.contains("-run-with exit-with-parent=on"));
        assert!(args.contains("vhost-user-vsock-pci,chardev=vsock"));
        assert!(args.contains("-append console=ttyS0"));
    }

    #[test]
    fn test_an_arm64_enclave_is_a_virt_machine() {
        let spec = VmSpec {
            kernel: PathBuf::from("/Image"),
            cmdline: "console=ttyAMA0".to_owned(),
            nsm: Some(PathBuf::from("/n.sock")),
            arch: Arch::Aarch64,
            ..spec(EnclaveRam::Fresh { size: 512 * MIB })
        };
        let args = joined(&arguments(&qemu(), &spec));
        assert!(args.contains("-M virt,gic-version=max -accel tcg -cpu max,pauth-impdef=on -smp 2"));
        assert!(args.contains("vhost-user-vsock-pci,chardev=vsock"));
        assert!(args.contains("vhost-user-test-device-pci,virtio-id=33,num_vqs=1,chardev=nsm"));
    }

    #[test]
    fn test_fresh_ram_is_one_shared_memfd_of_the_same_size() {
        let spec = VmSpec {
            accel: Accel::Kvm,
            ..spec(EnclaveRam::Fresh { size: 64 * MIB })
        };
        let old = Qemu {
            version: (7, 2),
            ..qemu()
        };
        let args = joined(&arguments(&old, &spec));
        assert!(args.contains("memory-backend-memfd,id=ram0,size=67108864,share=on"));
        assert!(args.contains("-cpu host"));
        assert!(!args.contains("exit-with-parent"));
    }

    #[test]
    fn test_a_power_off_is_an_exit_and_a_reset_panic_signal_or_failure_a_crash() {
        use std::os::unix::process::ExitStatusExt;
        let clean = ExitStatus::from_raw(0);
        let power_off = Some("guest-shutdown");
        assert_eq!(stop_reason(clean, false, power_off), StopReason::Exited);
        assert_eq!(
            stop_reason(clean, false, Some("host-signal")),
            StopReason::Exited
        );
        assert_eq!(
            stop_reason(clean, false, Some("guest-reset")),
            StopReason::Crashed
        );
        assert_eq!(stop_reason(clean, true, power_off), StopReason::Crashed);
        let killed = ExitStatus::from_raw(9);
        assert_eq!(stop_reason(killed, false, power_off), StopReason::Crashed);
        let failed = ExitStatus::from_raw(1 << 8);
        assert_eq!(stop_reason(failed, false, None), StopReason::Crashed);
    }
}
