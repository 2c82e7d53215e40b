// SPDX-License-Identifier: Apache-2.0
//! The command round trip in process: `SLOT_INFO` (and `SLOT_COUNT`, `NEXT_SLOT`, and
//! `SLOT_ALLOC` with its `SLOT_FREE`) from the driver through BAR 3 to the device model, its
//! reply and vector 0 — each against its floor, the same BAR accesses (recorded from one
//! real request) replayed on plain memory behind the same `Bar` trait, no device behind.
//!
//! `cargo bench -p ne-driver --bench request`; criterion prints the medians, and keeps them
//! in `target/criterion/`.
// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ne_abi::Command;
use ne_device::{DeviceConfig, SimulatedHypervisor};
use ne_driver::inproc::InProcBar;
use ne_driver::NeDriver;

mod common;

/// A driver probed on a device model in this process, and its recording BAR.
fn driver() -> (
    NeDriver<common::Recording<InProc>>,
    common::Recording<InProc>,
) {
    let (device, vectors) = common::device(DeviceConfig::default());
    let bar = common::Recording::new(device);
    let driver = common::probe(bar.clone(), vectors);
    (driver, bar)
}

type InProc = InProcBar<SimulatedHypervisor>;

fn slot_info(c: &mut Criterion) {
    let (driver, bar) = driver();
    let reply = driver
        .request(Command::SlotAlloc.number(), &[0; 4])
        .expect("SLOT_ALLOC");
    let uid = reply.slot_uid.get();
    let payload = uid.to_le_bytes();
    let accesses = bar.record_during(|| {
        driver
            .request(Command::SlotInfo.number(), &payload)
            .expect("SLOT_INFO");
    });

    let mut group = c.benchmark_group("slot_info");
    group.bench_function("driver_to_device_and_back", |b| {
        b.iter(|| driver.request(Command::SlotInfo.number(), black_box(&payload)));
    });
    let mut plain = common::PlainBar::new();
    group.bench_function("floor_same_bar_accesses_on_plain_memory", |b| {
        b.iter(|| plain.replay(&accesses));
    });
    group.finish();
}

/// The other command types, each against its own recorded floor: the read-only ones with a
/// slot in the table, and `SLOT_ALLOC` with the `SLOT_FREE` that undoes it as one pair.
fn other_commands(c: &mut Criterion) {
    let (driver, bar) = driver();
    driver
        .request(Command::SlotAlloc.number(), &[0; 4])
        .expect("SLOT_ALLOC");
    let alloc_free = || {
        let reply = driver
            .request(Command::SlotAlloc.number(), &[0; 4])
            .expect("SLOT_ALLOC");
        driver
            .request(
                Command::SlotFree.number(),
                &reply.slot_uid.get().to_le_bytes(),
            )
            .expect("SLOT_FREE");
    };
    let one = |command: Command, payload: &[u8]| {
        driver
            .request(command.number(), black_box(payload))
            .expect("command");
    };
    type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let cases: [Case<'_>; 3] = [
        ("slot_count", Box::new(|| one(Command::SlotCount, &[]))),
        // The slot after uid 0: the first one.
        (
            "next_slot",
            Box::new(|| one(Command::NextSlot, &0u64.to_le_bytes())),
        ),
        ("slot_alloc_then_free", Box::new(alloc_free)),
    ];
    for (name, work) in &cases {
        let accesses = bar.record_during(work);
        let mut group = c.benchmark_group(*name);
        group.bench_function("driver_to_device_and_back", |b| b.iter(work));
        let mut plain = common::PlainBar::new();
        group.bench_function("floor_same_bar_accesses_on_plain_memory", |b| {
            b.iter(|| plain.replay(&accesses));
        });
        group.finish();
    }
}

criterion_group!(benches, slot_info, other_commands);
criterion_main!(benches);
