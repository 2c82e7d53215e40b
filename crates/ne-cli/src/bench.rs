// SPDX-License-Identifier: Apache-2.0
//! `nectl bench`: figures measured in one process, against their floor in the same run, as
//! JSON (medians, maxima and ratios), so machines can be compared.
//!
//! `bench boot`: `NE_START_ENCLAVE` → heartbeat on the emulated parent with the VM backend
//! (image check in the donated memory, the device, the VM on the donated pages, vsock),
//! against the floor: the same QEMU booting the same kernel and initrd directly, with the
//! same vCPUs and memory size and the same vsock device, from spawn to heartbeat. The two
//! alternate, so a noisy neighbour weighs on both.
//!
//! `bench heartbeat`: `NE_START_ENCLAVE` → heartbeat on the parent the command addresses (the
//! kernel's driver with `--device`, as in a guest of `nectl serve`; else the embedded
//! default), to compare one against the other.
//!
//! `bench vsock`: throughput to a running enclave's counting port (the hello image's 5006),
//! in writes of a fixed size, through the route the command addresses.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ne_hypervisor::EnclaveImage;
use ne_parent::{
    launch, BackendChoice, CpuRequest, HeartbeatListener, KernelParent, LaunchRequest, Parent,
    ParentConfig, ParentInstance,
};
use ne_vm::{Accel, EnclaveRam, Qemu, Spawner, Vm, VmChoice, VmSpec};
use ne_vsock::{Router, HEARTBEAT_PORT};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::files::{read_eif, MAX_EIF_BYTES};
use crate::vsock_connect::{connection_failed, Route};

/// How long one boot may take before the benchmark gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The CID the direct boots use.
const DIRECT_CID: u64 = 16;

/// What `bench boot` measures.
#[derive(Clone, Debug)]
pub struct BootBench {
    /// The image.
    pub eif: PathBuf,
    /// Boots of each kind.
    pub runs: usize,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

fn failed(what: &str) -> impl FnOnce(String) -> CliError + '_ {
    move |why| CliError::new(Code::EnclaveBoot, format!("{what}: {why}"))
}

/// Median and maximum of `samples`, in milliseconds.
fn summary(samples: &[Duration]) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = median(&ms);
    json!({
        "MedianMs": round(median),
        "MaxMs": round(ms.last().copied().unwrap_or_default()),
        "MinMs": round(ms.first().copied().unwrap_or_default()),
        "Runs": ms.len(),
    })
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted.get(n / 2).copied().unwrap_or_default(),
        n => {
            let a = sorted.get(n / 2 - 1).copied().unwrap_or_default();
            let b = sorted.get(n / 2).copied().unwrap_or_default();
            (a + b) / 2.0
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Runs `bench boot`.
pub fn boot(bench: &BootBench) -> Result<Value> {
    let eif = read_eif(&bench.eif, MAX_EIF_BYTES)?;
    let image = EnclaveImage::parse(eif.clone())
        .map_err(|e| CliError::new(Code::EifParsing, format!("the image is not valid: {e}")))?;
    let work = work_dir()?;
    let parent = embedded_parent(work.path(), bench.cpus, bench.memory_mib)?;
    let direct = Direct::new(work.path(), &image, bench)?;
    let request = launch_request(eif, bench.cpus, bench.memory_mib);
    let mut through = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..bench.runs {
        through.push(start_to_heartbeat(&parent, &request)?);
        floor.push(direct.boot()?);
    }
    let ratio = median_ms(&through) / median_ms(&floor).max(f64::MIN_POSITIVE);
    Ok(json!({
        "Benchmark": "boot: NE_START_ENCLAVE to heartbeat, against QEMU booting the same kernel and initrd directly",
        "Image": bench.eif,
        "ImageBytes": image.size(),
        "CPUs": bench.cpus,
        "MemoryMiB": bench.memory_mib,
        "Accel": Accel::detect().name(),
        "QEMU": format!("{}.{}", direct.qemu.version.0, direct.qemu.version.1),
        "ThroughTheDevice": summary(&through),
        "DirectQemuFloor": summary(&floor),
        "RatioOfMedians": (ratio * 1000.0).round() / 1000.0,
    }))
}

/// What `bench heartbeat` measures.
#[derive(Clone, Debug)]
pub struct HeartbeatBench {
    /// The image.
    pub eif: PathBuf,
    /// Boots.
    pub runs: usize,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The kernel's NE device to launch through; `None`: the embedded default.
    pub device: Option<PathBuf>,
}

/// Runs `bench heartbeat`.
pub fn heartbeat(bench: &HeartbeatBench) -> Result<Value> {
    let eif = read_eif(&bench.eif, MAX_EIF_BYTES)?;
    let bytes = eif.len();
    let request = launch_request(eif, bench.cpus, bench.memory_mib);
    let (parent, samples) = match &bench.device {
        Some(device) => {
            let parent = KernelParent::open(device)
                .map_err(|e| failed("opening the device")(format!("{}: {e}", device.display())))?;
            (
                format!("the kernel's driver at {}", device.display()),
                boots(&parent, &request, bench.runs)?,
            )
        }
        None => {
            let work = work_dir()?;
            let parent = embedded_parent(work.path(), bench.cpus, bench.memory_mib)?;
            (
                "the embedded default (the emulated parent, the VM backend)".to_owned(),
                boots(&parent, &request, bench.runs)?,
            )
        }
    };
    Ok(json!({
        "Benchmark": "heartbeat: NE_START_ENCLAVE to the heartbeat on vsock port 9000",
        "Parent": parent,
        "Image": bench.eif,
        "ImageBytes": bytes,
        "CPUs": bench.cpus,
        "MemoryMiB": bench.memory_mib,
        "StartToHeartbeat": summary(&samples),
    }))
}

/// What `bench vsock` measures.
#[derive(Clone, Debug)]
pub struct VsockBench {
    /// How the enclave is reached.
    pub route: Route,
    /// The enclave's CID.
    pub cid: u64,
    /// Its counting port: reads until the sender closes, answers the count as a line.
    pub port: u32,
    /// MiB sent per run.
    pub mib: u64,
    /// The size of each write in KiB.
    pub write_kib: usize,
    /// Runs.
    pub runs: usize,
}

/// Runs `bench vsock`.
pub fn vsock(bench: &VsockBench) -> Result<Value> {
    let total = bench.mib << 20;
    let chunk = vec![0x5a_u8; bench.write_kib << 10];
    let mut rates = Vec::with_capacity(bench.runs);
    for _ in 0..bench.runs {
        let elapsed = send_counted(bench, total, &chunk)?;
        rates.push(u64_f64(total) / elapsed.as_secs_f64().max(f64::MIN_POSITIVE) / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    Ok(json!({
        "Benchmark": "vsock: parent to enclave throughput, to a port that counts what it gets",
        "Route": match &bench.route {
            Route::Vsock => "this machine's vsock (the kernel's driver)".to_owned(),
            Route::Hybrid(dir) => format!("the emulated parent's hybrid vsock in {}", dir.display()),
        },
        "EnclaveCID": bench.cid,
        "Port": bench.port,
        "WriteBytes": chunk.len(),
        "BytesPerRun": total,
        "MedianMBps": round(median(&rates)),
        "MaxMBps": round(rates.last().copied().unwrap_or_default()),
        "MinMBps": round(rates.first().copied().unwrap_or_default()),
        "Runs": rates.len(),
    }))
}

/// Sends `total` bytes in writes of `chunk`, closes, and waits for the enclave's count;
/// returns the time from the first write to the count.
fn send_counted(bench: &VsockBench, total: u64, chunk: &[u8]) -> Result<Duration> {
    let failed = connection_failed(bench.cid, bench.port);
    let mut stream = bench.route.open(bench.cid, bench.port)?;
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        stream
            .to_enclave
            .write_all(chunk.get(..n).unwrap_or(chunk))
            .map_err(&failed)?;
        left -= u64::try_from(n).unwrap_or(left);
    }
    stream.to_enclave.close_write().map_err(&failed)?;
    let mut answer = String::new();
    stream
        .from_enclave
        .by_ref()
        .take(64)
        .read_line(&mut answer)
        .map_err(&failed)?;
    let elapsed = started.elapsed();
    match answer.trim().parse::<u64>() {
        Ok(counted) if counted == total => Ok(elapsed),
        Ok(counted) => Err(CliError::new(
            Code::ParentConnection,
            format!("the enclave counted {counted} of the {total} bytes sent"),
        )),
        Err(_) => Err(CliError::new(
            Code::ParentConnection,
            format!(
                "port {} of enclave {} answered {answer:?}, not a byte count",
                bench.port, bench.cid
            ),
        )
        .hint("the hello image counts on port 5006; another application must answer the same way")),
    }
}

#[allow(clippy::cast_precision_loss)] // a byte count well below 2^52
fn u64_f64(value: u64) -> f64 {
    value as f64
}

/// A launch of `eif` with `cpus` vCPUs and `memory_mib`, production mode, any CID.
fn launch_request(eif: Vec<u8>, cpus: u32, memory_mib: u64) -> LaunchRequest {
    LaunchRequest {
        eif,
        memory_mib,
        cpus: CpuRequest::Count(cpus),
        cid: 0,
        debug: false,
    }
}

/// `runs` launches on `parent`, one after the other.
fn boots<P: ParentInstance>(
    parent: &P,
    request: &LaunchRequest,
    runs: usize,
) -> Result<Vec<Duration>> {
    (0..runs)
        .map(|_| start_to_heartbeat(parent, request))
        .collect()
}

/// One launch on `parent`: `NE_START_ENCLAVE` → heartbeat; the enclave is then terminated.
fn start_to_heartbeat<P: ParentInstance>(parent: &P, request: &LaunchRequest) -> Result<Duration> {
    let launched = launch(parent, request)
        .map_err(|e| failed("an enclave boot")(ne_hypervisor::error_chain(&e)))?;
    let boot_time = launched
        .boot_time
        .ok_or_else(|| failed("an enclave boot")("no heartbeat timing".to_owned()))?;
    launched
        .release()
        .map_err(|e| failed("terminating the enclave")(e.to_string()))?;
    Ok(boot_time)
}

fn work_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("nectl-bench-")
        .tempdir()
        .map_err(|e| CliError::new(Code::FileOperation, e.to_string()))
}

/// The embedded default for `cpus` and `memory_mib`: an emulated parent with the VM backend.
fn embedded_parent(work: &Path, cpus: u32, memory_mib: u64) -> Result<Parent> {
    let parent = Parent::new(ParentConfig {
        ram_mib: (memory_mib + 512).next_multiple_of(2),
        reserved_mib: 256,
        cores: cpus.max(1) + 1,
        threads_per_core: 1,
        cpu_pool: None,
        backend: BackendChoice::Vm(VmChoice {
            accel: None,
            state_dir: work.join("vms"),
            vsock_dir: None,
            nsm: crate::attestation::nsm_choice(),
        }),
        ..ParentConfig::default()
    })
    .map_err(|e| failed("building the parent")(ne_hypervisor::error_chain(&e)))?;
    let pool = format!("1-{}", cpus.max(1));
    parent
        .driver()
        .set_cpu_pool(&pool)
        .map_err(|e| failed("setting the CPU pool")(e.to_string()))?;
    Ok(parent)
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    median(&ms)
}

/// The floor: QEMU booting the image's kernel and initrd itself, with the same vsock device.
struct Direct {
    qemu: Qemu,
    spawner: Spawner,
    router: Arc<Router>,
    dir: PathBuf,
    spec: VmSpec,
}

impl Direct {
    fn new(work: &Path, image: &EnclaveImage, bench: &BootBench) -> Result<Direct> {
        let io = |e: std::io::Error| CliError::new(Code::FileOperation, e.to_string());
        let dir = work.join("direct");
        std::fs::create_dir_all(&dir).map_err(io)?;
        let kernel = dir.join("kernel");
        let initrd = dir.join("initrd");
        std::fs::write(&kernel, image.kernel()).map_err(io)?;
        std::fs::write(
            &initrd,
            image.ramdisks().flatten().copied().collect::<Vec<u8>>(),
        )
        .map_err(io)?;
        let qemu = Qemu::find().map_err(|e| failed("finding QEMU")(e.to_string()))?;
        let spec = VmSpec {
            cid: DIRECT_CID,
            vcpus: usize::try_from(bench.cpus).unwrap_or(1),
            ram: EnclaveRam::Fresh {
                size: bench.memory_mib << 20,
            },
            kernel,
            initrd,
            cmdline: String::from_utf8_lossy(image.cmdline()).into_owned(),
            vsock: Some(dir.join("vsock.sock")),
            nsm: None,
            qmp: dir.join("vm").join("qmp.sock"),
            accel: Accel::detect(),
            arch: ne_vm::Arch::X86_64,
        };
        Ok(Direct {
            qemu,
            spawner: Spawner::new().map_err(io)?,
            router: Router::new(None),
            dir,
            spec,
        })
    }

    /// One boot, from spawning QEMU to the heartbeat.
    fn boot(&self) -> Result<Duration> {
        let io = |e: std::io::Error| failed("a direct boot")(e.to_string());
        let mux = self
            .router
            .add_enclave(DIRECT_CID)
            .map_err(|e| failed("a direct boot")(e.to_string()))?;
        let served = ne_vsock::serve(&self.dir.join("vsock.sock"), Arc::clone(&mux)).map_err(io)?;
        let listener = HeartbeatListener::Router(
            self.router
                .listen(HEARTBEAT_PORT)
                .map_err(|e| failed("a direct boot")(e.to_string()))?,
        );
        let vm_dir = self.dir.join("vm");
        std::fs::create_dir_all(&vm_dir).map_err(io)?;
        let log = std::fs::File::create(self.dir.join("qemu.log")).map_err(io)?;
        let (ended_tx, ended_rx) = channel();
        let started = Instant::now();
        let vm = Vm::spawn(
            &self.qemu,
            &self.spawner,
            &self.spec,
            vm_dir,
            log,
            move |ended| {
                let _ = ended_tx.send(ended);
            },
        )
        .map_err(io)?;
        let heard = listener.wait(BOOT_TIMEOUT);
        let elapsed = started.elapsed();
        vm.stop(Duration::from_secs(5));
        let _ = ended_rx.recv_timeout(Duration::from_secs(30));
        self.router.remove_enclave(DIRECT_CID, &mux);
        served.shutdown();
        heard.map_err(|e| failed("a direct boot")(e.to_string()))?;
        Ok(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::os::unix::net::UnixListener;

    /// A stand-in for the emulated parent's hybrid vsock of enclave 16 whose port counts
    /// what it gets, then answers the count plus `skew`.
    fn counting_enclave(dir: &Path, skew: u64) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(dir.join("enclave-16.sock")).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut connect = String::new();
                reader.read_line(&mut connect).unwrap();
                assert_eq!(connect, "CONNECT 5006\n");
                let mut writer = stream;
                writer.write_all(b"OK 1024\n").unwrap();
                let counted = std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
                let _ = writeln!(writer, "{}", counted + skew);
            }
        })
    }

    fn bench(dir: &Path) -> VsockBench {
        VsockBench {
            route: Route::Hybrid(dir.to_owned()),
            cid: 16,
            port: 5006,
            mib: 1,
            write_kib: 64,
            runs: 3,
        }
    }

    #[test]
    fn test_vsock_bench_sends_every_byte_and_reports_a_rate_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let _enclave = counting_enclave(dir.path(), 0);
        let figures = vsock(&bench(dir.path())).unwrap();
        assert_eq!(figures["BytesPerRun"], 1 << 20);
        assert_eq!(figures["WriteBytes"], 64 << 10);
        assert_eq!(figures["Runs"], 3);
        assert!(figures["MedianMBps"].as_f64().unwrap() > 0.0, "{figures}");
        assert!(figures["MinMBps"].as_f64() <= figures["MaxMBps"].as_f64());
    }

    #[test]
    fn test_vsock_bench_refuses_a_count_that_differs_from_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let _enclave = counting_enclave(dir.path(), 1);
        let error = vsock(&bench(dir.path())).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("counted 1048577 of the 1048576 bytes"),
            "{error}"
        );
    }
}
