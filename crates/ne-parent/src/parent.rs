// SPDX-License-Identifier: Apache-2.0
//! [`Parent`]: an emulated parent instance — RAM, CPUs, hugepages, the NE device and the
//! driver bound to it — in one process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ne_device::DeviceConfig;
use ne_driver::inproc::{pci_enable, InProcBar, InProcDevice};
use ne_driver::{DriverConfig, Enclave, NeDevice, Topology, Vectors};

use crate::address_space::AddressSpace;
use crate::error::{Error, Result};
use crate::hugepages::{HugepagePool, HUGEPAGE_BYTES};
use crate::hypervisor::{EifHypervisor, LoadedImage};
use crate::ram::ParentRam;

/// The device model as the emulated parent runs it.
pub type ParentDevice = InProcDevice<EifHypervisor>;
/// The driver bound to it.
pub type ParentDriver = NeDevice<InProcBar<EifHypervisor>>;
/// An enclave made through that driver.
pub type ParentEnclave = Enclave<InProcBar<EifHypervisor>>;

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
            numa_nodes: 1,
            cpu_pool: Some(default_pool(cores, threads)),
            max_slots: ne_device::config::DEFAULT_MAX_SLOTS,
            max_mem_regions: ne_device::config::DEFAULT_MAX_MEM_REGIONS,
            reply_timeout: DriverConfig::default().reply_timeout,
        }
    }
}

/// Every core but core 0, as a CPU list (`1-3,5-7` for 4 cores of 2 threads).
pub fn default_pool(cores: u32, threads: u32) -> String {
    (0..threads)
        .filter(|_| cores > 1)
        .map(|thread| {
            let first = thread * cores + 1;
            let last = thread * cores + cores - 1;
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An emulated parent instance.
pub struct Parent {
    ram: Arc<ParentRam>,
    hugepages: Arc<Mutex<HugepagePool>>,
    device: Arc<Mutex<ParentDevice>>,
    driver: ParentDriver,
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
    /// Builds the parent: maps RAM, reserves hugepages, creates the device, runs the PCI
    /// core's set-up and the driver's probe, and sets the CPU pool.
    pub fn new(config: ParentConfig) -> Result<Parent> {
        if config.reserved_mib >= config.ram_mib
            || !config.ram_mib.is_multiple_of(2)
            || !config.reserved_mib.is_multiple_of(2)
        {
            return Err(Error::Config(format!(
                "RAM ({} MiB) must be even and larger than the parent's reserve ({} MiB)",
                config.ram_mib, config.reserved_mib
            )));
        }
        let ram = Arc::new(ParentRam::new(config.ram_mib * MIB, config.numa_nodes)?);
        let hugepages = Arc::new(Mutex::new(HugepagePool::reserve(
            &ram,
            config.reserved_mib * MIB,
        )));
        let topology = Topology::uniform(config.cores, config.threads_per_core, config.numa_nodes);
        let device_config = DeviceConfig {
            max_slots: config.max_slots,
            max_mem_regions: config.max_mem_regions,
            parent_cpus: topology.nr_cpu_ids(),
            parent_ram: vec![std::ops::Range {
                start: 0,
                end: ram.size(),
            }],
            ..DeviceConfig::default()
        };
        let vectors = Arc::new(Vectors::new());
        let hypervisor = EifHypervisor::new(Arc::clone(&ram));
        let mut device =
            ParentDevice::with_hypervisor(device_config, Arc::clone(&vectors), hypervisor)
                .map_err(|e| Error::Config(e.to_string()))?;
        pci_enable(&mut device);
        let device = Arc::new(Mutex::new(device));
        let driver_config = DriverConfig {
            reply_timeout: config.reply_timeout,
            ..DriverConfig::default()
        };
        let driver = NeDevice::probe(
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
            driver,
            config,
        })
    }

    /// The configuration the parent was built with.
    pub fn config(&self) -> &ParentConfig {
        &self.config
    }

    /// The driver: the equivalent of `/dev/nitro_enclaves`.
    pub fn driver(&self) -> &ParentDriver {
        &self.driver
    }

    /// The device model, locked: to inspect slots or inject faults. Do not hold it across a
    /// driver call.
    pub fn device(&self) -> MutexGuard<'_, ParentDevice> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new, empty process address space.
    pub fn address_space(&self) -> AddressSpace {
        AddressSpace::new(Arc::clone(&self.ram), Arc::clone(&self.hugepages))
    }

    /// The parent's RAM.
    pub fn ram(&self) -> &ParentRam {
        &self.ram
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

    /// Bytes of one hugepage.
    pub fn hugepage_bytes(&self) -> u64 {
        HUGEPAGE_BYTES
    }

    /// The image the hypervisor loaded for slot `slot_uid`.
    pub fn image(&self, slot_uid: u64) -> Option<LoadedImage> {
        self.device().hypervisor().image(slot_uid).cloned()
    }

    /// Makes the enclave of `slot_uid` crash; the device reports it on vector 1.
    pub fn crash(&self, slot_uid: u64) -> bool {
        self.end(slot_uid, true)
    }

    /// Makes the enclave of `slot_uid` exit by itself; the device reports it on vector 1.
    pub fn exit(&self, slot_uid: u64) -> bool {
        self.end(slot_uid, false)
    }

    fn end(&self, slot_uid: u64, crash: bool) -> bool {
        let mut device = self.device();
        let simulated = device.hypervisor_mut().simulated_mut();
        let ended = if crash {
            simulated.crash(slot_uid)
        } else {
            simulated.exit(slot_uid)
        };
        // The latch behind the interrupts cannot fail.
        let _ = device.process_hypervisor_events();
        ended
    }
}
