// SPDX-License-Identifier: Apache-2.0
//! How the device model scales with an enclave's regions: `SLOT_ADD_MEM` through BAR 3 (the
//! request written as `memcpy_toio` does, the doorbell, the 72-byte reply read back) when
//! one slot already holds 1 k, 10 k, 100 k and 1 M 2 MiB regions; the device's heap bytes
//! per region (the growth of this process's resident memory); and one `SLOT_FREE` of the 1 M-region
//! slot. Flat per-add cost is the goal. Prints JSON.
//!
//! `cargo bench -p ne-device --bench slot_scaling --features test-utils`
// A bench: the output is the point.
#![allow(missing_docs, clippy::print_stdout)]

use std::time::Instant;

use ne_abi::cmd::{SlotAddMemReq, SlotAllocReq, SlotFreeReq};
use ne_device::test_utils::{probe, request};
use ne_device::{DeviceConfig, NePciDevice, NoInterrupts};
use zerocopy::little_endian::U64;

/// This process's resident memory in bytes (`/proc/self/statm`, 4 KiB pages).
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

const HUGEPAGE: u64 = 2 << 20;
const BATCH: u64 = 100;
const BATCHES: u64 = 20;
/// Regions lie two pages apart, so that none is adjacent to another.
const STRIDE: u64 = 2 * HUGEPAGE;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let sizes = [1_000u64, 10_000, 100_000, 1_000_000];
    let most = sizes[sizes.len() - 1] + BATCH * BATCHES;
    let mut device = NePciDevice::new(
        DeviceConfig {
            max_mem_regions: most,
            parent_ram: std::iter::once(0..(most + 1) * STRIDE).collect(),
            ..DeviceConfig::default()
        },
        NoInterrupts,
    )
    .expect("device");
    probe(&mut device);
    let uid = request(&mut device, &SlotAllocReq::default())
        .slot_uid
        .get();
    let add = |device: &mut NePciDevice<NoInterrupts>, index: u64| {
        let reply = request(
            device,
            &SlotAddMemReq {
                slot_uid: U64::new(uid),
                paddr: U64::new(index * STRIDE),
                size: U64::new(HUGEPAGE),
            },
        );
        assert_eq!(reply.rc.get(), 0, "SLOT_ADD_MEM {index}");
    };
    let mut added = 0;
    let mut results = Vec::new();
    let held_before = resident_bytes();
    for size in sizes {
        while added < size {
            add(&mut device, added);
            added += 1;
        }
        let bytes_per_region = (resident_bytes() - held_before) as f64 / size as f64;
        let mut per_add = Vec::new();
        for _ in 0..BATCHES {
            let started = Instant::now();
            for _ in 0..BATCH {
                add(&mut device, added);
                added += 1;
            }
            per_add.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
        }
        results.push(format!(
            "{{\"Regions\": {size}, \"MedianNsPerAdd\": {:.0}, \"MinNsPerAdd\": {:.0}, \"DeviceBytesPerRegion\": {bytes_per_region:.1}}}",
            median(per_add.clone()),
            per_add.iter().copied().fold(f64::INFINITY, f64::min)
        ));
    }
    let started = Instant::now();
    let reply = request(
        &mut device,
        &SlotFreeReq {
            slot_uid: U64::new(uid),
        },
    );
    let free_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(reply.rc.get(), 0, "SLOT_FREE");
    println!(
        "{{\"Benchmark\": \"SLOT_ADD_MEM per add through BAR 3, by regions in the slot\", \"Batches\": {BATCHES}, \"AddsPerBatch\": {BATCH}, \"Results\": [{}], \"SlotFreeMs\": {{\"Regions\": {added}, \"Ms\": {free_ms:.1}}}}}",
        results.join(", ")
    );
}
