// SPDX-License-Identifier: Apache-2.0
//! The benches' rig: a device model in this process and the driver probed on it; a BAR
//! that records the accesses made through it; plain memory behind the same `Bar` trait
//! (the floor); user memory of scattered hugepages.
// Each bench uses part of the rig.
#![allow(dead_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ne_abi::NeUserMemoryRegion;
use ne_device::{DeviceConfig, NoEvents, SimulatedHypervisor};
use ne_driver::inproc::{pci_enable, InProcBar, InProcDevice};
use ne_driver::{errno, Bar, DriverConfig, NeDriver, Page, Topology, UserMemory, Vectors};

/// The device model the benches run, shared with its BAR.
pub(crate) type Device = Arc<Mutex<InProcDevice<SimulatedHypervisor>>>;

/// BAR 3 of a device model in this process, enabled as the PCI core leaves it, for a
/// parent of 16 CPUs and `config`'s other settings; the vectors it raises; the device.
pub(crate) fn device_and_bar(
    config: DeviceConfig,
) -> (InProcBar<SimulatedHypervisor>, Arc<Vectors>, Device) {
    let vectors = Arc::new(Vectors::new());
    let mut device: InProcDevice<SimulatedHypervisor> = InProcDevice::with_events(
        DeviceConfig {
            parent_cpus: 16,
            ..config
        },
        Arc::clone(&vectors),
        SimulatedHypervisor::new(),
        NoEvents,
    )
    .expect("device");
    pci_enable(&mut device);
    let device = Arc::new(Mutex::new(device));
    (InProcBar::new(Arc::clone(&device)), vectors, device)
}

/// BAR 3 of a device model in this process, and the vectors it raises.
pub(crate) fn device(config: DeviceConfig) -> (InProcBar<SimulatedHypervisor>, Arc<Vectors>) {
    let (bar, vectors, _) = device_and_bar(config);
    (bar, vectors)
}

/// The driver probed over `bar` on a parent of 4 cores of 2 threads, pool `1-3,5-7`.
pub(crate) fn probe<B: Bar + 'static>(bar: B, vectors: Arc<Vectors>) -> NeDriver<B> {
    probe_shaped(bar, vectors, 4, "1-3,5-7")
}

/// The driver probed over `bar` on a parent of `cores` cores of 2 threads, with `pool`.
pub(crate) fn probe_shaped<B: Bar + 'static>(
    bar: B,
    vectors: Arc<Vectors>,
    cores: u32,
    pool: &str,
) -> NeDriver<B> {
    let driver = NeDriver::probe(
        bar,
        vectors,
        Topology::uniform(cores, 2, 1),
        DriverConfig::default(),
    )
    .expect("probe");
    driver.set_cpu_pool(pool).expect("pool");
    driver
}

/// One BAR access: a write or a read, where and how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access {
    write: bool,
    offset: u64,
    len: usize,
}

/// A BAR that passes everything to `inner` and records the accesses while asked to (a flag
/// checked without a lock, so measuring costs nothing). Clones share all.
pub(crate) struct Recording<B> {
    inner: Arc<B>,
    recording: Arc<AtomicBool>,
    accesses: Arc<Mutex<Vec<Access>>>,
}

impl<B> Clone for Recording<B> {
    fn clone(&self) -> Self {
        Recording {
            inner: Arc::clone(&self.inner),
            recording: Arc::clone(&self.recording),
            accesses: Arc::clone(&self.accesses),
        }
    }
}

impl<B: Bar> Bar for Recording<B> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.record(false, offset, data.len());
        self.inner.read(offset, data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.record(true, offset, data.len());
        self.inner.write(offset, data);
    }
}

impl<B> Recording<B> {
    pub(crate) fn new(inner: B) -> Self {
        Recording {
            inner: Arc::new(inner),
            recording: Arc::new(AtomicBool::new(false)),
            accesses: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn record(&self, write: bool, offset: u64, len: usize) {
        if self.recording.load(Ordering::Relaxed) {
            let mut accesses = self.accesses.lock().unwrap_or_else(PoisonError::into_inner);
            accesses.push(Access { write, offset, len });
        }
    }

    /// The accesses `work` makes.
    pub(crate) fn record_during(&self, work: impl FnOnce()) -> Vec<Access> {
        self.recording.store(true, Ordering::Relaxed);
        work();
        self.recording.store(false, Ordering::Relaxed);
        std::mem::take(&mut *self.accesses.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The floor: BAR 3 as plain memory, replaying recorded accesses.
pub(crate) struct PlainBar {
    memory: Mutex<Vec<u8>>,
    buffer: Vec<u8>,
}

impl Bar for PlainBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let at = usize::try_from(offset).unwrap_or(0);
        data.copy_from_slice(&memory[at..at + data.len()]);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let at = usize::try_from(offset).unwrap_or(0);
        memory[at..at + data.len()].copy_from_slice(data);
    }
}

impl PlainBar {
    pub(crate) fn new() -> Self {
        PlainBar {
            memory: Mutex::new(vec![0; 8192]),
            buffer: vec![0; 8192],
        }
    }

    /// Makes `accesses` on plain memory.
    pub(crate) fn replay(&mut self, accesses: &[Access]) {
        let mut buffer = std::mem::take(&mut self.buffer);
        for access in accesses {
            let data = &mut buffer[..access.len];
            if access.write {
                self.write(access.offset, black_box(data));
            } else {
                self.read(access.offset, data);
            }
        }
        self.buffer = buffer;
    }
}

pub(crate) const HUGEPAGE: u64 = 2 << 20;
pub(crate) const USER_BASE: u64 = 0x7f00_0000_0000;
pub(crate) const PHYS_BASE: u64 = 1 << 30;

/// User memory where every 2 MiB page is a hugepage, physically two pages apart from its
/// neighbour so that no two regions merge into one run.
pub(crate) struct Scattered;

impl UserMemory for Scattered {
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        addr >= USER_BASE && addr.checked_add(size).is_some()
    }

    fn page(&self, addr: u64) -> Result<Page, i32> {
        let index = addr.checked_sub(USER_BASE).ok_or(errno::EFAULT)? / HUGEPAGE;
        Ok(Page {
            phys: PHYS_BASE + index * 2 * HUGEPAGE + addr % HUGEPAGE,
            size: HUGEPAGE,
            hugetlb: true,
            numa_node: 0,
        })
    }
}

/// The `index`th 2 MiB region of [`Scattered`] memory.
pub(crate) fn region(index: u64) -> NeUserMemoryRegion {
    NeUserMemoryRegion {
        flags: 0,
        memory_size: HUGEPAGE,
        userspace_addr: USER_BASE + index * HUGEPAGE,
    }
}

/// Parent RAM holding the first `regions` regions of [`Scattered`] memory.
pub(crate) fn scattered_ram(regions: u64) -> Vec<std::ops::Range<u64>> {
    std::iter::once(0..PHYS_BASE + 2 * regions * HUGEPAGE).collect()
}
