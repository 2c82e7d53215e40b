// SPDX-License-Identifier: Apache-2.0
//! [`Parent`]: an emulated parent instance — RAM, CPUs, hugepages, the NE device and the
//! driver bound to it — in one process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ne_device::{DeviceConfig, DeviceLog, SimulatedHypervisor};
use ne_driver::inproc::{pci_enable, InProcBar, InProcDevice};
use ne_driver::{CpuNumbering, DeviceFile, DriverConfig, Enclave, NeDriver, Topology, Vectors};
use ne_hypervisor::{spawn_pump, Backend, Console, EnclaveImage, NitroHypervisor, Notifier};
use ne_vm::{VmBackend, VmChoice};
use ne_vsock::{Router, HEARTBEAT_PORT};

use crate::address_space::AddressSpace;
use crate::donor::ProcessMemory;
use crate::error::{Error, Result};
use crate::heartbeat::HeartbeatListener;
use crate::hugepages::{HugepagePool, HUGEPAGE_BYTES};
use crate::instance::{ParentInstance, ParentStatus, Unsupported};
use crate::ram::ParentRam;

/// What runs the emulated parent's enclaves, chosen when the parent is built.
pub type ParentBackend = Box<dyn Backend>;
/// The device's hypervisor: the image check, then the backend.
pub type ParentHypervisor = NitroHypervisor<ParentBackend>;
/// The device model as the emulated parent runs it, reporting to a [`DeviceLog`].
pub type ParentDevice = InProcDevice<ParentHypervisor, Arc<DeviceLog>>;
/// BAR 3 of that device, as the driver reaches it.
pub type ParentBar = InProcBar<ParentHypervisor, Arc<DeviceLog>>;
/// The driver bound to it.
pub type ParentDriver = NeDriver<ParentBar>;
/// The driver as one process opened it (its enclave API).
pub type ParentDeviceFile = DeviceFile<ParentBar, Mutex<AddressSpace>>;
/// An enclave made through the driver.
pub type ParentEnclave = Enclave<ParentBar>;

const MIB: u64 = 1 << 20;

/// The emulated parent's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentConfig {
    /// RAM in MiB (only touched pages use host memory).
    pub ram_mib: u64,
    /// RAM in MiB the parent keeps for itself; the rest is reserved as 2 MiB hugepages.
    pub reserved_mib: u64,
    /// CPU cores.
    pub cores: u32,
    /// Threads per core.
    pub threads_per_core: u32,
    /// How the CPUs are numbered: as on x86 (default) or as on arm64.
    pub cpu_numbering: CpuNumbering,
    /// NUMA nodes (cores and RAM are split evenly).
    pub numa_nodes: u32,
    /// The `ne_cpus` CPU list set at start; `None` leaves the pool unset.
    pub cpu_pool: Option<String>,
    /// Device limits: most slots at once.
    pub max_slots: usize,
    /// Device limits: most memory regions per slot.
    pub max_mem_regions: u64,
    /// How long the driver waits for a reply.
    pub reply_timeout: Duration,
    /// What runs the enclaves.
    pub backend: BackendChoice,
}

/// What runs the emulated parent's enclaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// Nothing boots: images are checked and measured, enclaves "run" until stopped.
    #[default]
    Simulated,
    /// Each enclave boots as a QEMU VM, reachable over vsock.
    Vm(VmChoice),
}

impl Default for ParentConfig {
    /// 4 GiB of RAM (512 MiB kept, the rest hugepages), 4 cores of 2 threads on one node,
    /// and a pool of every core but CPU 0's: CPUs `1-3,5-7`.
    fn default() -> Self {
        let cores = 4;
        let threads = 2;
        ParentConfig {
            ram_mib: 4096,
            reserved_mib: 512,
            cores,
            threads_per_core: threads,
            cpu_numbering: CpuNumbering::SiblingsApart,
            numa_nodes: 1,
            cpu_pool: Some(default_pool(cores, threads)),
            max_slots: ne_device::config::DEFAULT_MAX_SLOTS,
            max_mem_regions: ne_device::config::DEFAULT_MAX_MEM_REGIONS,
            reply_timeout: DriverConfig::default().reply_timeout,
            backend: BackendChoice::Simulated,
        }
    }
}

impl ParentConfig {
    /// The parent's CPUs as its shape and numbering make them.
    pub fn topology(&self) -> Topology {
        Topology::numbered(
            self.cores,
            self.threads_per_core,
            self.numa_nodes,
            self.cpu_numbering,
        )
    }
}

/// Every core but core 0, as a CPU list (`1-3,5-7` for 4 x86 cores of 2 threads).
pub fn default_pool(cores: u32, threads: u32) -> String {
    Topology::uniform(cores, threads, 1).pool_without_cpu0()
}

/// An emulated parent instance.
pub struct Parent {
    ram: Arc<ParentRam>,
    hugepages: Arc<Mutex<HugepagePool>>,
    device: Arc<Mutex<ParentDevice>>,
    log: Arc<DeviceLog>,
    driver: ParentDriver,
    notifier: Notifier,
    vsock: Option<Arc<Router>>,
    config: ParentConfig,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Parent {
    /// Builds the parent with the backend its configuration chooses.
    pub fn new(config: ParentConfig) -> Result<Parent> {
        let choice = config.backend.clone();
        Self::with_backend(config, |_, notifier| match choice {
            BackendChoice::Simulated => Ok((Box::new(SimulatedHypervisor::new()), None)),
            BackendChoice::Vm(vm) => {
                let backend = VmBackend::from_choice(vm, notifier)?;
                let router = Arc::clone(backend.router());
                Ok((Box::new(backend), Some(router)))
            }
        })
    }

    /// Builds the parent: maps RAM, reserves hugepages, creates the device with the
    /// backend `backend` makes (given the parent's RAM and the notifier to signal when it
    /// has news; with the vsock router of its enclaves, if they have vsock), runs the PCI
    /// core's set-up and the driver's probe, and sets the CPU pool.
    pub fn with_backend(
        config: ParentConfig,
        backend: impl FnOnce(&ParentRam, Notifier) -> Result<(ParentBackend, Option<Arc<Router>>)>,
    ) -> Result<Parent> {
        if config.reserved_mib >= config.ram_mib
            || !config.ram_mib.is_multiple_of(2)
            || !config.reserved_mib.is_multiple_of(2)
        {
            return Err(Error::Config {
                ram_mib: config.ram_mib,
                reserved_mib: config.reserved_mib,
            });
        }
        let ram_bytes = config.ram_mib.checked_mul(MIB).ok_or(Error::Config {
            ram_mib: config.ram_mib,
            reserved_mib: config.reserved_mib,
        })?;
        let ram = Arc::new(ParentRam::new(ram_bytes, config.numa_nodes)?);
        let hugepages = Arc::new(Mutex::new(HugepagePool::reserve(
            &ram,
            config.reserved_mib * MIB,
        )));
        let topology = config.topology();
        let device_config = DeviceConfig {
            max_slots: config.max_slots,
            max_mem_regions: config.max_mem_regions,
            parent_cpus: topology.nr_cpu_ids(),
            parent_ram: ram.memory_ranges(),
            ..DeviceConfig::default()
        };
        let notifier = Notifier::new();
        let (backend, vsock) = backend(&ram, notifier.clone())?;
        let hypervisor = NitroHypervisor::new(Arc::clone(ram.memory()), backend);
        let vectors = Arc::new(Vectors::new());
        let log = Arc::new(DeviceLog::new());
        let mut device = ParentDevice::with_events(
            device_config,
            Arc::clone(&vectors),
            hypervisor,
            Arc::clone(&log),
        )?;
        pci_enable(&mut device);
        let device = Arc::new(Mutex::new(device));
        spawn_events_pump(&device, &notifier)?;
        let driver_config = DriverConfig {
            reply_timeout: config.reply_timeout,
            ..DriverConfig::default()
        };
        let driver = NeDriver::probe(
            InProcBar::new(Arc::clone(&device)),
            vectors,
            topology,
            driver_config,
        )?;
        if let Some(pool) = &config.cpu_pool {
            driver.set_cpu_pool(pool)?;
        }
        Ok(Parent {
            ram,
            hugepages,
            device,
            log,
            driver,
            notifier,
            vsock,
            config,
        })
    }

    /// The configuration the parent was built with.
    pub fn config(&self) -> &ParentConfig {
        &self.config
    }

    /// The driver: the equivalent of the kernel's `nitro_enclaves` module.
    pub fn driver(&self) -> &ParentDriver {
        &self.driver
    }

    /// The device model, locked: to inspect slots or inject faults. Do not hold it across a
    /// driver call.
    pub fn device(&self) -> MutexGuard<'_, ParentDevice> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the device reported: counters, history, the last rejection.
    pub fn log(&self) -> &DeviceLog {
        &self.log
    }

    /// A new, empty process address space.
    pub fn address_space(&self) -> AddressSpace {
        AddressSpace::new(Arc::clone(&self.ram), Arc::clone(&self.hugepages))
    }

    /// The parent's RAM.
    pub fn ram(&self) -> &ParentRam {
        &self.ram
    }

    /// The vsock router of its enclaves, when they boot.
    pub fn vsock(&self) -> Option<&Arc<Router>> {
        self.vsock.as_ref()
    }

    /// Hugepages free on `node`.
    pub fn free_hugepages(&self, node: u32) -> u64 {
        self.hugepages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free_on(&self.ram, node)
    }

    /// Total hugepages reserved.
    pub fn total_hugepages(&self) -> u64 {
        self.hugepages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total()
    }

    /// The image the hypervisor loaded for slot `slot_uid`, while it runs.
    pub fn image(&self, slot_uid: u64) -> Option<Arc<EnclaveImage>> {
        self.device().hypervisor().image(slot_uid).cloned()
    }

    /// Makes the enclave of `slot_uid` exit by itself (or crash); the device reports it on
    /// vector 1 before this returns. False if no enclave runs there.
    pub fn end(&self, slot_uid: u64, crash: bool) -> bool {
        let mut device = self.device();
        let ended = device.hypervisor_mut().backend_mut().end(slot_uid, crash);
        // The latch behind the interrupts cannot fail.
        let _ = device.process_hypervisor_events();
        ended
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.notifier.close();
    }
}

/// Lets the device collect the backend's news whenever the backend signals or asks for a
/// wake-up.
fn spawn_events_pump(device: &Arc<Mutex<ParentDevice>>, notifier: &Notifier) -> Result<()> {
    let device = Arc::clone(device);
    spawn_pump("ne-parent-events", notifier.clone(), move || {
        let mut device = device.lock().unwrap_or_else(PoisonError::into_inner);
        // The latch behind the interrupts cannot fail.
        let _ = device.process_hypervisor_events();
        device.hypervisor().next_wakeup()
    })
    .map(drop)
    .map_err(|source| Error::Thread {
        name: "ne-parent-events",
        source,
    })
}

impl ParentInstance for Parent {
    type Device = ParentDeviceFile;
    type Memory = ProcessMemory;

    fn process(&self) -> (Self::Device, Self::Memory) {
        let space = Arc::new(Mutex::new(self.address_space()));
        let node = self.driver.cpu_pool().map_or(0, |pool| pool.numa_node());
        (
            self.driver.open(Arc::clone(&space)),
            ProcessMemory::new(space, node),
        )
    }

    fn status(&self) -> ParentStatus {
        let hugepage_mib = HUGEPAGE_BYTES / MIB;
        ParentStatus {
            backend: "emulated".to_owned(),
            cpus: Some(self.config.cores * self.config.threads_per_core),
            cpu_pool: self
                .driver
                .cpu_pool()
                .map(|pool| pool.cpus().into_iter().collect())
                .unwrap_or_default(),
            cores: cores_of(self.driver.topology()),
            memory_mib: Some(self.config.ram_mib),
            hugepages_total_mib: Some(self.total_hugepages() * hugepage_mib),
            hugepages_free_mib: Some(self.free_hugepages(0) * hugepage_mib),
            max_enclaves: Some(self.config.max_slots),
        }
    }

    fn end_enclave(&self, slot_uid: u64, crash: bool) -> Result<bool, Unsupported> {
        Ok(self.end(slot_uid, crash))
    }

    fn heartbeat(&self) -> std::io::Result<Option<HeartbeatListener>> {
        let Some(router) = &self.vsock else {
            // Simulated enclaves boot nothing and send no heartbeat.
            return Ok(None);
        };
        router
            .listen(HEARTBEAT_PORT)
            .map(|listener| Some(HeartbeatListener::Router(listener)))
            .map_err(std::io::Error::other)
    }

    fn console(&self, slot_uid: u64, _cid: u64) -> Option<Console> {
        self.device().hypervisor().backend().console(slot_uid)
    }

    fn enclave_details(&self, slot_uid: u64) -> Vec<(&'static str, String)> {
        self.device().hypervisor().backend().describe(slot_uid)
    }
}

/// The cores of `topology`, each as its CPU ids, in order of their first CPU.
fn cores_of(topology: &ne_driver::Topology) -> Vec<Vec<u32>> {
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for cpu in topology.cpus() {
        let siblings: Vec<u32> = topology.siblings(cpu).into_iter().collect();
        if !cores.contains(&siblings) {
            cores.push(siblings);
        }
    }
    cores
}
