// SPDX-License-Identifier: Apache-2.0
//! The command round trip in process: `SLOT_INFO` from the driver through BAR 3 to the device
//! model, its reply and vector 0 — against its floor, the same BAR accesses (recorded from
//! one real request) replayed on plain memory behind the same `Bar` trait, no device behind.
//!
//! `cargo bench -p ne-driver --bench request`; criterion prints the medians, and keeps them
//! in `target/criterion/`.
// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use criterion::{criterion_group, criterion_main, Criterion};
use ne_abi::Command;
use ne_device::{DeviceConfig, SimulatedHypervisor};
use ne_driver::inproc::InProcBar;
use ne_driver::{Bar, NeDriver};

mod common;

/// One BAR access: a write or a read, where and how long.
#[derive(Clone, Copy, Debug)]
struct Access {
    write: bool,
    offset: u64,
    len: usize,
}

type InProc = InProcBar<SimulatedHypervisor>;

/// A BAR that passes everything to the device and records the accesses while asked to
/// (a flag checked without a lock, so measuring costs nothing). Clones share all.
#[derive(Clone)]
struct Recording {
    inner: Arc<InProc>,
    recording: Arc<AtomicBool>,
    accesses: Arc<Mutex<Vec<Access>>>,
}

impl Bar for Recording {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.record(false, offset, data.len());
        self.inner.read(offset, data);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        self.record(true, offset, data.len());
        self.inner.write(offset, data);
    }
}

impl Recording {
    fn record(&self, write: bool, offset: u64, len: usize) {
        if self.recording.load(Ordering::Relaxed) {
            let mut accesses = self.accesses.lock().unwrap_or_else(PoisonError::into_inner);
            accesses.push(Access { write, offset, len });
        }
    }
}

/// The floor: BAR 3 as plain memory.
struct PlainBar(Mutex<Vec<u8>>);

impl Bar for PlainBar {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = usize::try_from(offset).unwrap_or(0);
        data.copy_from_slice(&memory[at..at + data.len()]);
    }
    fn write(&self, offset: u64, data: &[u8]) {
        let mut memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = usize::try_from(offset).unwrap_or(0);
        memory[at..at + data.len()].copy_from_slice(data);
    }
}

/// A driver probed on a device model in this process, and its recording BAR.
fn driver() -> (NeDriver<Recording>, Recording) {
    let (device, vectors) = common::device(DeviceConfig::default());
    let bar = Recording {
        inner: Arc::new(device),
        recording: Arc::new(AtomicBool::new(false)),
        accesses: Arc::new(Mutex::new(Vec::new())),
    };
    let driver = common::probe(bar.clone(), vectors);
    (driver, bar)
}

fn slot_info(c: &mut Criterion) {
    let (driver, bar) = driver();
    let reply = driver
        .request(Command::SlotAlloc.number(), &[0; 4])
        .expect("SLOT_ALLOC");
    let uid = reply.slot_uid.get();
    let payload = uid.to_le_bytes();
    bar.recording.store(true, Ordering::Relaxed);
    driver
        .request(Command::SlotInfo.number(), &payload)
        .expect("SLOT_INFO");
    bar.recording.store(false, Ordering::Relaxed);
    let accesses =
        std::mem::take(&mut *bar.accesses.lock().unwrap_or_else(PoisonError::into_inner));

    let mut group = c.benchmark_group("slot_info");
    group.bench_function("driver_to_device_and_back", |b| {
        b.iter(|| driver.request(Command::SlotInfo.number(), black_box(&payload)));
    });
    let plain = PlainBar(Mutex::new(vec![0; 4096]));
    let mut buffer = vec![0u8; 4096];
    group.bench_function("floor_same_bar_accesses_on_plain_memory", |b| {
        b.iter(|| {
            for access in &accesses {
                let data = &mut buffer[..access.len];
                if access.write {
                    plain.write(access.offset, black_box(data));
                } else {
                    plain.read(access.offset, data);
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, slot_info);
criterion_main!(benches);
