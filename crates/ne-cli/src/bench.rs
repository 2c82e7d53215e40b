// SPDX-License-Identifier: Apache-2.0
//! `nectl bench`: figures measured in one process, against their floor in the same run, as
//! JSON (medians, maxima and ratios), so machines can be compared.
//!
//! `bench boot`: `NE_START_ENCLAVE` → heartbeat on the emulated parent with the VM backend
//! (image check in the donated memory, the device, the VM on the donated pages, vsock),
//! against the floor: the same QEMU booting the same kernel and initrd directly, with the
//! same vCPUs and memory size and the same vsock device, from spawn to heartbeat. The two
//! alternate, so a noisy neighbour weighs on both.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ne_hypervisor::EnclaveImage;
use ne_parent::{
    launch, BackendChoice, CpuRequest, HeartbeatListener, LaunchRequest, Parent, ParentConfig,
};
use ne_vm::{Accel, EnclaveRam, Qemu, Spawner, Vm, VmChoice, VmSpec};
use ne_vsock::{Router, HEARTBEAT_PORT};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::files::{read_eif, MAX_EIF_BYTES};

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
    let work = tempfile::Builder::new()
        .prefix("nectl-bench-")
        .tempdir()
        .map_err(|e| CliError::new(Code::FileOperation, e.to_string()))?;
    let parent = Parent::new(ParentConfig {
        ram_mib: (bench.memory_mib + 512).next_multiple_of(2),
        reserved_mib: 256,
        cores: bench.cpus.max(1) + 1,
        threads_per_core: 1,
        cpu_pool: None,
        backend: BackendChoice::Vm(VmChoice {
            accel: None,
            state_dir: work.path().join("vms"),
            vsock_dir: None,
        }),
        ..ParentConfig::default()
    })
    .map_err(|e| failed("building the parent")(ne_hypervisor::error_chain(&e)))?;
    let pool = format!("1-{}", bench.cpus.max(1));
    parent
        .driver()
        .set_cpu_pool(&pool)
        .map_err(|e| failed("setting the CPU pool")(e.to_string()))?;
    let direct = Direct::new(work.path(), &image, bench)?;
    let request = LaunchRequest {
        eif,
        memory_mib: bench.memory_mib,
        cpus: CpuRequest::Count(bench.cpus),
        cid: 0,
        debug: false,
    };
    let mut through = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..bench.runs {
        let launched = launch(&parent, &request)
            .map_err(|e| failed("an enclave boot")(ne_hypervisor::error_chain(&e)))?;
        through.push(
            launched
                .boot_time
                .ok_or_else(|| failed("an enclave boot")("no heartbeat timing".to_owned()))?,
        );
        launched
            .release()
            .map_err(|e| failed("terminating the enclave")(e.to_string()))?;
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
            qmp: dir.join("vm").join("qmp.sock"),
            accel: Accel::detect(),
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
