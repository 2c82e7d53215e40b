// SPDX-License-Identifier: Apache-2.0
//! [`VmBackend`]: on `ENCLAVE_START`, the image the hypervisor checked boots as a QEMU VM
//! whose RAM is the donated memory, with a vsock device at the enclave's CID; the VM is
//! supervised, and its end is reported to the device.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ne_abi::errno::{EIO, ENOEXEC};
use ne_device::{HypervisorEvent, StartProgress, StartRefused};
use ne_hypervisor::{Backend, Console, Notifier, ParentMemory, StartRequest};
use ne_vsock::{Router, Served};

use crate::qemu::{Accel, Arch, Qemu, QemuError};
use crate::vm::{EnclaveRam, MemoryRun, Spawner, Vm, VmEnded, VmSpec};

/// How many console lines an unrequested end logs.
const CONSOLE_TAIL_LINES: usize = 15;
/// The most pieces of donated memory booted in place, one NUMA node each (QEMU allows 64;
/// vhost-user devices map each piece into a memory slot of their own).
const MAX_NUMA_NODES: usize = 32;
/// The smallest piece booted in place. A NUMA node of a few MiB is mostly its own memory map
/// and per-node structures: Linux's allocators fail on such nodes early in boot (x86 ignores
/// nodes under 4 MiB altogether), so smaller pieces give the enclave fresh RAM instead.
const MIN_NUMA_NODE_SIZE: u64 = 16 << 20;

/// How long a stopped VM has to end (SIGTERM) before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a user chooses of the VM backend; QEMU is found and the rest fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmChoice {
    /// KVM or TCG; `None` picks KVM where it really works.
    pub accel: Option<Accel>,
    /// Where the VMs' files go.
    pub state_dir: PathBuf,
    /// Where the parent's vsock Unix sockets go (`<port>.sock`, `enclave-<cid>.sock`).
    pub vsock_dir: Option<PathBuf>,
    /// Who the parent is to its enclaves' NSMs, and where their root CA lives.
    pub nsm: NsmChoice,
}

/// What an enclave's NSM says of its parent, and the root CA that vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsmChoice {
    /// The directory of the local root CA (`ne_nsm::ca`), made on first use.
    pub root_dir: PathBuf,
    /// The parent's instance id: PCR4, and the start of every enclave's module_id.
    pub instance_id: String,
    /// The parent's IAM role ARN, if it has one: PCR3 (zero without one).
    pub role_arn: Option<String>,
}

/// The NSM of every enclave the backend boots.
#[derive(Clone, Debug)]
pub struct NsmConfig {
    /// The root CA whose leaves sign the enclaves' documents.
    pub root: Arc<ne_nsm::RootCa>,
    /// The parent's instance id.
    pub instance_id: String,
    /// The parent's IAM role ARN.
    pub role_arn: Option<String>,
}

impl NsmConfig {
    /// The configuration `choice` describes, its root loaded or made.
    pub fn from_choice(choice: NsmChoice) -> Result<NsmConfig, ne_nsm::CaError> {
        Ok(NsmConfig {
            root: Arc::new(ne_nsm::RootCa::load_or_create(&choice.root_dir)?),
            instance_id: choice.instance_id,
            role_arn: choice.role_arn,
        })
    }

    /// The NSM of the enclave `request` starts: PCR0–2 (and 8) the image's, PCR3 the
    /// role's, PCR4 the instance's.
    fn module(&self, request: &StartRequest<'_>) -> ne_nsm::NsmModule {
        let image = &request.image.measurements;
        let mut measurements = vec![
            (0, image.pcr0.0),
            (1, image.pcr1.0),
            (2, image.pcr2.0),
            (4, ne_nsm::measure_text(&self.instance_id)),
        ];
        if let Some(role) = &self.role_arn {
            measurements.push((3, ne_nsm::measure_text(role)));
        }
        if let Some(pcr8) = &image.pcr8 {
            measurements.push((8, pcr8.0));
        }
        ne_nsm::NsmModule::new(ne_nsm::ModuleConfig {
            module_id: ne_nsm::enclave_id(&self.instance_id, request.enclave.slot_uid),
            measurements,
            debug: request.enclave.is_debug(),
            root: Arc::clone(&self.root),
        })
    }
}

/// Why the VM backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable QEMU.
    #[error("The VM backend needs QEMU")]
    Qemu(#[from] crate::QemuError),
    /// Its directory or its process spawner could not be made.
    #[error("Cannot start the VM backend")]
    Io(#[from] std::io::Error),
    /// The NSM's root CA could not be loaded or made.
    #[error("The enclaves' NSM has no root CA")]
    Attestation(#[from] ne_nsm::CaError),
}

/// How the VM backend runs enclaves.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The QEMU to run.
    pub qemu: Qemu,
    /// How vCPUs run.
    pub accel: Accel,
    /// Where each VM's files go (kernel, initrd, sockets, QEMU's log).
    pub state_dir: PathBuf,
    /// How long a stopped VM has to end before it is killed.
    pub stop_grace: Duration,
    /// The enclaves' NSM; without it they have none.
    pub nsm: Option<NsmConfig>,
}

#[derive(Debug)]
struct Running {
    vm: Vm,
    cid: u64,
    accel: Accel,
    vsock: Served,
    mux: Arc<ne_vsock::Mux>,
    nsm: Option<ne_nsm::Served>,
}

impl Running {
    /// Ends the VM's devices once the VM is gone.
    fn shutdown_devices(self) {
        self.vsock.shutdown();
        if let Some(nsm) = self.nsm {
            nsm.shutdown();
        }
    }
}

/// Boots enclaves as QEMU VMs.
#[derive(Debug)]
pub struct VmBackend {
    config: VmConfig,
    /// The QEMU of arm64 enclaves, found at the first one.
    qemu_aarch64: Option<Qemu>,
    router: Arc<Router>,
    notifier: Notifier,
    spawner: Spawner,
    running: BTreeMap<u64, Running>,
    events: Arc<Mutex<VecDeque<HypervisorEvent>>>,
    serial: AtomicU64,
}

fn refused(errno: i32, reason: String) -> StartRefused {
    tracing::warn!("cannot boot the enclave: {reason}");
    StartRefused { errno, reason }
}

impl VmBackend {
    /// A backend booting enclaves with `config`, their vsock routed by `router`, signalling
    /// `notifier` when a VM ends.
    pub fn new(config: VmConfig, router: Arc<Router>, notifier: Notifier) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)?;
        Ok(VmBackend {
            config,
            qemu_aarch64: None,
            router,
            notifier,
            spawner: Spawner::new()?,
            running: BTreeMap::new(),
            events: Arc::new(Mutex::new(VecDeque::new())),
            serial: AtomicU64::new(0),
        })
    }

    /// The backend `choice` describes, with QEMU found (`Qemu::find`), the accelerator
    /// detected unless chosen, and a router of its own (its directory made), signalling
    /// `notifier`.
    pub fn from_choice(choice: VmChoice, notifier: Notifier) -> Result<Self, StartError> {
        if let Some(dir) = &choice.vsock_dir {
            // Listeners of the parent's ports may bind there before the first enclave.
            std::fs::create_dir_all(dir)?;
        }
        let config = VmConfig {
            qemu: Qemu::find()?,
            accel: choice.accel.unwrap_or_else(Accel::detect),
            state_dir: choice.state_dir,
            stop_grace: STOP_GRACE,
            nsm: Some(NsmConfig::from_choice(choice.nsm)?),
        };
        Ok(VmBackend::new(
            config,
            Router::new(choice.vsock_dir),
            notifier,
        )?)
    }

    /// The router of the enclaves' vsock.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The QEMU process of the enclave of `slot_uid`.
    pub fn pid(&self, slot_uid: u64) -> Option<u32> {
        self.running.get(&slot_uid).map(|r| r.vm.pid())
    }

    /// The QEMU of `arch`'s enclaves and how it runs them: x86-64 with the configured
    /// accelerator; arm64 with `qemu-system-aarch64`, found at the first arm64 enclave, and
    /// under TCG unless this host is arm64 itself.
    fn qemu_for(&mut self, arch: Arch) -> Result<(Qemu, Accel), QemuError> {
        match arch {
            Arch::X86_64 => Ok((self.config.qemu.clone(), self.config.accel)),
            Arch::Aarch64 => {
                let qemu = match &self.qemu_aarch64 {
                    Some(qemu) => qemu.clone(),
                    None => {
                        let qemu = Qemu::find_for(Arch::Aarch64)?;
                        self.qemu_aarch64 = Some(qemu.clone());
                        qemu
                    }
                };
                let native = cfg!(target_arch = "aarch64");
                let accel = if native {
                    self.config.accel
                } else {
                    Accel::Tcg
                };
                Ok((qemu, accel))
            }
        }
    }

    fn boot(&mut self, request: &StartRequest<'_>) -> Result<(), StartRefused> {
        let enclave = request.enclave;
        let arch = if request.image.arm64 {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        let (qemu, accel) = self
            .qemu_for(arch)
            .map_err(|e| refused(ENOEXEC, format!("an {arch:?} enclave: {e}")))?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .config
            .state_dir
            .join(format!("enclave-{}-{serial}", enclave.slot_uid));
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| refused(EIO, format!("{what}: {e}"))
        };
        std::fs::create_dir_all(&dir).map_err(io("creating the VM's directory"))?;
        let kernel = dir.join("kernel");
        let initrd = dir.join("initrd");
        std::fs::write(&kernel, request.image.kernel()).map_err(io("writing the kernel"))?;
        let mut file = File::create(&initrd).map_err(io("writing the initrd"))?;
        for ramdisk in request.image.ramdisks() {
            file.write_all(ramdisk).map_err(io("writing the initrd"))?;
        }
        drop(file);
        let ram = self.enclave_ram(request, &qemu);
        let mux = self
            .router
            .add_enclave(enclave.cid)
            .map_err(|e| refused(EIO, format!("vsock for CID {}: {e}", enclave.cid)))?;
        let vsock = ne_vsock::serve(&dir.join("vsock.sock"), Arc::clone(&mux)).map_err(|e| {
            self.router.remove_enclave(enclave.cid, &mux);
            refused(EIO, format!("the vsock device: {e}"))
        })?;
        let nsm = match &self.config.nsm {
            Some(config) => {
                let name = format!("ne-nsm-{}", enclave.cid);
                match ne_nsm::serve(&dir.join("nsm.sock"), config.module(request), &name) {
                    Ok(served) => Some(served),
                    Err(e) => {
                        vsock.shutdown();
                        self.router.remove_enclave(enclave.cid, &mux);
                        return Err(refused(EIO, format!("the NSM device: {e}")));
                    }
                }
            }
            None => None,
        };
        let spec = VmSpec {
            cid: enclave.cid,
            vcpus: enclave.vcpus.len(),
            ram,
            kernel,
            initrd,
            cmdline: String::from_utf8_lossy(request.image.cmdline()).into_owned(),
            vsock: Some(vsock.socket().to_owned()),
            nsm: nsm.as_ref().map(|served| served.socket().to_owned()),
            qmp: dir.join("qmp.sock"),
            accel,
            arch,
        };
        let log = self
            .log_file(enclave.slot_uid)
            .map_err(io("opening QEMU's log"))?;
        let ended = self.on_end(enclave.slot_uid, enclave.cid, Arc::clone(&mux));
        let vm = Vm::spawn(&qemu, &self.spawner, &spec, dir, log, ended).map_err(|e| {
            vsock_down(&self.router, enclave.cid, &mux);
            refused(EIO, format!("starting QEMU: {e}"))
        })?;
        if enclave.is_debug() {
            let console = vm.console().clone();
            let source: ne_vsock::ConsoleSource = Arc::new(move || console_stream(&console));
            self.router.add_console(enclave.cid, source);
        }
        tracing::info!(
            slot = enclave.slot_uid,
            cid = enclave.cid,
            pid = vm.pid(),
            vcpus = spec.vcpus,
            memory_mib = spec.ram.size() >> 20,
            accel = accel.name(),
            arch = ?arch,
            "enclave VM started"
        );
        self.running.insert(
            enclave.slot_uid,
            Running {
                vm,
                cid: enclave.cid,
                accel,
                vsock,
                mux,
                nsm,
            },
        );
        Ok(())
    }

    /// QEMU's log for the enclave of `slot_uid`, kept after the VM ends.
    fn log_file(&self, slot_uid: u64) -> std::io::Result<File> {
        File::create(
            self.config
                .state_dir
                .join(format!("enclave-{slot_uid}.log")),
        )
    }

    /// The enclave's RAM: the donated regions in place, one run per contiguous stretch of
    /// one file — or fresh RAM of the same size when they cannot be mapped.
    fn enclave_ram(&self, request: &StartRequest<'_>, qemu: &Qemu) -> EnclaveRam {
        let size = request.enclave.mem_size();
        if !qemu.has_file_offset() {
            tracing::warn!(
                version = ?qemu.version,
                "this QEMU lacks memory-backend-file offset=: the enclave gets fresh RAM of the same size, not the donated pages"
            );
            return EnclaveRam::Fresh { size };
        }
        let Some(runs) = donated_runs(request.memory, request.enclave.regions) else {
            tracing::warn!("some donated memory has no file to map: the enclave gets fresh RAM");
            return EnclaveRam::Fresh { size };
        };
        match unbootable_layout(&runs) {
            None => EnclaveRam::Donated(runs),
            Some(why) => {
                tracing::warn!(
                    runs = runs.len(),
                    "{why}: the enclave gets fresh RAM of the same size"
                );
                EnclaveRam::Fresh { size }
            }
        }
    }

    /// What runs when the VM of `slot_uid` ends: unless the device stopped it, the device
    /// hears that it exited or crashed.
    fn on_end(
        &self,
        slot_uid: u64,
        cid: u64,
        mux: Arc<ne_vsock::Mux>,
    ) -> impl FnOnce(VmEnded) + Send + 'static {
        let events = Arc::clone(&self.events);
        let notifier = self.notifier.clone();
        let router = Arc::clone(&self.router);
        let console_file = self
            .config
            .state_dir
            .join(format!("enclave-{slot_uid}.console"));
        move |ended: VmEnded| {
            vsock_down(&router, cid, &mux);
            if ended.requested {
                return;
            }
            // Kept for whoever investigates why it ended, beside QEMU's own log.
            let _ = std::fs::write(&console_file, ended.console.history());
            tracing::info!(
                slot = slot_uid,
                cid,
                reason = ?ended.reason,
                "enclave VM ended; its console ended with:\n{}",
                ended.console.tail(CONSOLE_TAIL_LINES)
            );
            events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(HypervisorEvent::Stopped {
                    slot_uid,
                    reason: ended.reason,
                });
            notifier.notify();
        }
    }
}

/// How far a running enclave VM has come: `booting` until the enclave sends its first
/// vsock packet (its init connects for the heartbeat), then `vsock up`.
fn boot_state(mux: &ne_vsock::Mux) -> &'static str {
    if mux.has_spoken() {
        "vsock up"
    } else {
        "booting"
    }
}

/// Tears an enclave's vsock down (only its own: a new enclave may have its CID already).
fn vsock_down(router: &Router, cid: u64, mux: &Arc<ne_vsock::Mux>) {
    router.remove_enclave(cid, mux);
}

/// A stream carrying `console`: what it printed so far, then its live output until the VM
/// ends or the reader goes away.
fn console_stream(console: &Console) -> Option<std::os::unix::net::UnixStream> {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().ok()?;
    let reader = console.attach();
    std::thread::Builder::new()
        .name("ne-vm-console".to_owned())
        .spawn(move || {
            if theirs.write_all(&reader.history).is_err() {
                return;
            }
            for chunk in reader.live {
                if theirs.write_all(&chunk).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(ours)
}

/// The donated regions as runs of files: adjacent regions that continue the same file
/// merge. `None` if a region has no file behind it.
pub fn donated_runs(
    memory: &ParentMemory,
    regions: &[ne_device::MemRegion],
) -> Option<Vec<MemoryRun>> {
    let mut runs: Vec<MemoryRun> = Vec::new();
    for region in regions {
        let mut at = region.paddr;
        let end = region.end();
        while at < end {
            let (backing, room) = memory.backing(at)?;
            let file = backing.file?;
            let size = room.min(end - at);
            match runs.last_mut() {
                Some(last)
                    if Arc::ptr_eq(&last.file, &file)
                        && last.offset + last.size == backing.offset =>
                {
                    last.size += size;
                }
                _ => runs.push(MemoryRun {
                    file,
                    offset: backing.offset,
                    size,
                }),
            }
            at += size;
        }
    }
    Some(runs)
}

/// Why the donated runs cannot be the enclave's NUMA nodes as they are, if they cannot.
fn unbootable_layout(runs: &[MemoryRun]) -> Option<&'static str> {
    if runs.len() > MAX_NUMA_NODES {
        Some("the donated memory is in too many pieces to be NUMA nodes")
    } else if runs.iter().any(|run| run.size < MIN_NUMA_NODE_SIZE) {
        Some("a piece of the donated memory is too small to be a NUMA node")
    } else {
        None
    }
}

impl Backend for VmBackend {
    fn start(&mut self, request: &StartRequest<'_>) -> Result<StartProgress, StartRefused> {
        self.boot(request)?;
        Ok(StartProgress::Started)
    }

    fn stop(&mut self, slot_uid: u64) {
        if let Some(running) = self.running.remove(&slot_uid) {
            tracing::info!(
                slot = slot_uid,
                cid = running.cid,
                "stopping the enclave VM"
            );
            running.vm.stop(self.config.stop_grace);
            vsock_down(&self.router, running.cid, &running.mux);
            running.shutdown_devices();
        }
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        let event = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()?;
        if let HypervisorEvent::Stopped { slot_uid, .. } = &event {
            if let Some(running) = self.running.remove(slot_uid) {
                running.shutdown_devices();
            }
        }
        Some(event)
    }

    fn end(&mut self, slot_uid: u64, crash: bool) -> bool {
        let Some(running) = self.running.get(&slot_uid) else {
            return false;
        };
        if crash {
            running.vm.kill();
        } else {
            running.vm.terminate();
        }
        true
    }

    fn console(&self, slot_uid: u64) -> Option<Console> {
        self.running.get(&slot_uid).map(|r| r.vm.console().clone())
    }

    fn describe(&self, slot_uid: u64) -> Vec<(&'static str, String)> {
        self.running
            .get(&slot_uid)
            .map(|running| {
                vec![
                    ("Backend", "vm".to_owned()),
                    ("Pid", running.vm.pid().to_string()),
                    ("Accel", running.accel.name().to_owned()),
                    ("Boot", boot_state(&running.mux).to_owned()),
                ]
            })
            .unwrap_or_default()
    }
}

impl Drop for VmBackend {
    fn drop(&mut self) {
        let slots: Vec<u64> = self.running.keys().copied().collect();
        for slot in slots {
            self.stop(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(sizes: &[u64]) -> Vec<MemoryRun> {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let mut offset = 0;
        sizes
            .iter()
            .map(|&size| {
                offset += 2 * size;
                MemoryRun {
                    file: Arc::clone(&file),
                    offset,
                    size,
                }
            })
            .collect()
    }

    #[test]
    fn test_a_few_large_runs_boot_in_place() {
        assert_eq!(
            unbootable_layout(&runs(&[256 << 20, 16 << 20, 32 << 20])),
            None
        );
    }

    #[test]
    fn test_a_run_smaller_than_a_sane_numa_node_needs_fresh_ram() {
        // As the virtee crate donates: one 2 MiB hugepage per region, scattered.
        let why = unbootable_layout(&runs(&[2 << 20; 4])).unwrap();
        assert!(why.contains("too small"), "{why}");
    }

    #[test]
    fn test_more_runs_than_numa_nodes_need_fresh_ram() {
        let why = unbootable_layout(&runs(&[16 << 20; MAX_NUMA_NODES + 1])).unwrap();
        assert!(why.contains("too many"), "{why}");
        assert_eq!(unbootable_layout(&runs(&[16 << 20; MAX_NUMA_NODES])), None);
    }
}
