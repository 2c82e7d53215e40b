// SPDX-License-Identifier: Apache-2.0
//! The driver's test rig: the driver probed against a device model in this process, a
//! parent of 4 cores × 2 threads with the pool `1-3,5-7`, hugepage-backed user memory, and
//! a BAR that can record accesses and play a device that misbehaves.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ne_abi::{regs, NeUserMemoryRegion};
use ne_device::{DeviceConfig, DeviceLog, SimulatedHypervisor};
use ne_driver::inproc::{pci_enable, InProcBar, InProcDevice};
use ne_driver::{errno, Bar, DriverConfig, Enclave, NeDriver, Page, Topology, UserMemory, Vectors};

/// 2 MiB: a hugepage.
pub const HUGEPAGE: u64 = 2 << 20;
/// 64 MiB: the least an enclave starts with.
pub const MIB64: u64 = 64 << 20;
/// Where the rig's user memory starts.
pub const USER_BASE: u64 = 0x7f00_0000_0000;
/// Where user space ends (`access_ok` refuses beyond).
pub const USER_END: u64 = 0x8000_0000_0000;
/// The pool: every core but CPU 0's, both threads.
pub const POOL: &str = "1-3,5-7";

/// The device model under the driver.
pub type Device = InProcDevice<SimulatedHypervisor, Arc<DeviceLog>>;
/// The driver under test, over a [`SpyBar`].
pub type Driver = NeDriver<SpyBar>;

/// A probed driver and the device behind it.
pub struct Rig {
    pub device: Arc<Mutex<Device>>,
    pub log: Arc<DeviceLog>,
    pub bar: SpyBar,
    pub driver: Driver,
}

impl Rig {
    /// The device, locked.
    pub fn device(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap()
    }

    /// How many doorbells the device has seen.
    pub fn doorbells(&self) -> u64 {
        self.log.stats().doorbells
    }

    /// The command numbers the device completed, oldest first.
    pub fn commands(&self) -> Vec<u32> {
        self.log
            .history()
            .iter()
            .map(|record| record.command)
            .collect()
    }
}

/// The parent's CPUs: 4 cores of 2 threads, CPU `t * 4 + c` being thread `t` of core `c`.
pub fn topology() -> Topology {
    Topology::uniform(4, 2, 1)
}

/// The device model for an 8-CPU parent with 4 GiB of RAM.
pub fn device_config() -> DeviceConfig {
    DeviceConfig {
        parent_cpus: 8,
        ..DeviceConfig::default()
    }
}

/// Short waits, so a missing reply fails a test in a second rather than two minutes.
pub fn short_waits() -> DriverConfig {
    DriverConfig {
        reply_timeout: Duration::from_millis(300),
        disable_timeout: Duration::from_millis(300),
    }
}

/// A device model, enabled by the PCI core as Linux's probe finds it.
pub fn device(config: DeviceConfig) -> (Arc<Mutex<Device>>, Arc<DeviceLog>, Arc<Vectors>) {
    let vectors = Arc::new(Vectors::new());
    let log = Arc::new(DeviceLog::new());
    let mut device = Device::with_events(
        config,
        Arc::clone(&vectors),
        SimulatedHypervisor::new(),
        Arc::clone(&log),
    )
    .unwrap();
    pci_enable(&mut device);
    (Arc::new(Mutex::new(device)), log, vectors)
}

/// The driver probed on a default device, with the pool set.
pub fn rig() -> Rig {
    rig_with(device_config(), short_waits())
}

/// The driver probed on a device with `config`, waiting as `waits` says, with the pool set.
pub fn rig_with(config: DeviceConfig, waits: DriverConfig) -> Rig {
    let (device, log, vectors) = device(config);
    let bar = SpyBar::new(InProcBar::new(Arc::clone(&device)));
    let driver = NeDriver::probe(bar.clone(), vectors, topology(), waits).unwrap();
    driver.set_cpu_pool(POOL).unwrap();
    Rig {
        device,
        log,
        bar,
        driver,
    }
}

/// One BAR access the driver made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub offset: u64,
    pub len: usize,
}

#[derive(Default)]
struct Spy {
    accesses: Mutex<Vec<Access>>,
    /// The next this many reads of `NE_ENABLE` read 1, whatever the device holds.
    enable_stuck_reads: AtomicU32,
    /// What `NE_VERSION` reads instead of the device's value.
    version: Mutex<Option<u16>>,
    /// What `NE_ENABLE` reads after it is written 1, instead of the device's value.
    enable: Mutex<Option<u8>>,
}

/// A BAR over the device model that records every access and can play a device that is
/// slow to disable, or does not echo VERSION or ENABLE. Clones share everything.
#[derive(Clone)]
pub struct SpyBar {
    inner: Arc<InProcBar<SimulatedHypervisor, Arc<DeviceLog>>>,
    spy: Arc<Spy>,
}

impl SpyBar {
    pub fn new(inner: InProcBar<SimulatedHypervisor, Arc<DeviceLog>>) -> SpyBar {
        SpyBar {
            inner: Arc::new(inner),
            spy: Arc::default(),
        }
    }

    /// Every access so far, oldest first.
    pub fn accesses(&self) -> Vec<Access> {
        self.spy.accesses.lock().unwrap().clone()
    }

    /// Forgets the accesses so far.
    pub fn clear(&self) {
        self.spy.accesses.lock().unwrap().clear();
    }

    /// The next `reads` reads of `NE_ENABLE` read 1.
    pub fn stick_enable(&self, reads: u32) {
        self.spy.enable_stuck_reads.store(reads, Ordering::SeqCst);
    }

    /// `NE_VERSION` reads `value`.
    pub fn fake_version(&self, value: u16) {
        *self.spy.version.lock().unwrap() = Some(value);
    }

    /// `NE_ENABLE` reads `value` (unless stuck).
    pub fn fake_enable(&self, value: u8) {
        *self.spy.enable.lock().unwrap() = Some(value);
    }

    /// How many reads of `NE_ENABLE` are still to read 1.
    pub fn stuck_reads_left(&self) -> u32 {
        self.spy.enable_stuck_reads.load(Ordering::SeqCst)
    }
}

impl Bar for SpyBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.spy.accesses.lock().unwrap().push(Access {
            write: false,
            offset,
            len: data.len(),
        });
        self.inner.read(offset, data);
        if offset == regs::ENABLE && data.len() == 1 {
            let stuck = self.spy.enable_stuck_reads.fetch_update(
                Ordering::SeqCst,
                Ordering::SeqCst,
                |left| left.checked_sub(1),
            );
            if stuck.is_ok() {
                data[0] = 1;
            } else if let Some(value) = *self.spy.enable.lock().unwrap() {
                data[0] = value;
            }
        }
        if offset == regs::VERSION && data.len() == 2 {
            if let Some(value) = *self.spy.version.lock().unwrap() {
                data.copy_from_slice(&value.to_le_bytes());
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.spy.accesses.lock().unwrap().push(Access {
            write: true,
            offset,
            len: data.len(),
        });
        self.inner.write(offset, data);
    }
}

/// User memory: hugepages mapped at user addresses, each to a guest-physical address.
#[derive(Clone, Debug, Default)]
pub struct Hugepages {
    /// Pages by user address of their start.
    pub pages: BTreeMap<u64, Page>,
}

impl Hugepages {
    /// `count` 2 MiB hugepages at `user`, physically contiguous from `phys`, on node 0.
    pub fn contiguous(user: u64, phys: u64, count: u64) -> Hugepages {
        let mut memory = Hugepages::default();
        memory.map(user, phys, count);
        memory
    }

    /// Maps `count` more 2 MiB hugepages at `user`, physically contiguous from `phys`.
    pub fn map(&mut self, user: u64, phys: u64, count: u64) {
        for i in 0..count {
            self.insert(
                user + i * HUGEPAGE,
                Page {
                    phys: phys + i * HUGEPAGE,
                    size: HUGEPAGE,
                    hugetlb: true,
                    numa_node: 0,
                },
            );
        }
    }

    /// Maps `page` at `user`.
    pub fn insert(&mut self, user: u64, page: Page) {
        self.pages.insert(user, page);
    }
}

impl UserMemory for Hugepages {
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        addr.checked_add(size).is_some_and(|end| end <= USER_END)
    }

    fn page(&self, addr: u64) -> Result<Page, i32> {
        let (&start, page) = self.pages.range(..=addr).next_back().ok_or(errno::EFAULT)?;
        let offset = addr - start;
        if offset >= page.size.max(1) {
            return Err(errno::EFAULT);
        }
        Ok(Page {
            phys: page.phys + offset,
            ..*page
        })
    }
}

/// The region of `size` bytes at `user`.
pub fn region(user: u64, size: u64) -> NeUserMemoryRegion {
    NeUserMemoryRegion {
        flags: 0,
        memory_size: size,
        userspace_addr: user,
    }
}

/// An enclave with 64 MiB (32 contiguous hugepages at 1 GiB) and the full core of CPUs 1
/// and 5, ready to start.
pub fn ready_enclave(rig: &Rig) -> Enclave<SpyBar> {
    let enclave = rig.driver.create_vm().unwrap();
    let memory = Hugepages::contiguous(USER_BASE, 1 << 30, 32);
    enclave
        .set_user_memory_region(region(USER_BASE, MIB64), &memory)
        .unwrap();
    assert_eq!(enclave.add_vcpu(1).unwrap(), 1);
    assert_eq!(enclave.add_vcpu(5).unwrap(), 5);
    enclave
}
