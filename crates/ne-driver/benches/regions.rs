// SPDX-License-Identifier: Apache-2.0
//! How `NE_SET_USER_MEMORY_REGION` scales: the cost of adding one more 2 MiB region to an
//! enclave that already has 1 k, 10 k, 100 k and 1 M, through the driver's checks and the
//! device model in process. Flat is the goal: a table that grows must not make each add
//! dearer. Prints JSON: per size, the median of 20 batches of 100 adds, per add.
//!
//! `cargo bench -p ne-driver --bench regions --features inproc`
// A bench: the output is the point.
#![allow(missing_docs, clippy::print_stdout)]

use std::time::Instant;

use ne_device::DeviceConfig;

mod common;

use common::{region, Scattered};

const BATCH: u64 = 100;
const BATCHES: u64 = 20;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let sizes = [1_000u64, 10_000, 100_000, 1_000_000];
    let most = sizes[sizes.len() - 1] + BATCH * BATCHES;
    let (bar, vectors) = common::device(DeviceConfig {
        max_mem_regions: most,
        parent_ram: common::scattered_ram(most),
        ..DeviceConfig::default()
    });
    let driver = common::probe(bar, vectors);
    let mut results = Vec::new();
    for size in sizes {
        // A fresh enclave per size: `size` regions, then the measured batches.
        let enclave = driver.create_vm().expect("NE_CREATE_VM");
        for index in 0..size {
            enclave
                .set_user_memory_region(region(index), &Scattered)
                .expect("prefill");
        }
        let mut per_add = Vec::new();
        for batch in 0..BATCHES {
            let first = size + batch * BATCH;
            let started = Instant::now();
            for index in first..first + BATCH {
                enclave
                    .set_user_memory_region(region(index), &Scattered)
                    .expect("add");
            }
            per_add.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
        }
        results.push(format!(
            "{{\"Regions\": {size}, \"MedianNsPerAdd\": {:.0}, \"MinNsPerAdd\": {:.0}}}",
            median(per_add.clone()),
            per_add.iter().copied().fold(f64::INFINITY, f64::min)
        ));
        drop(enclave);
    }
    println!(
        "{{\"Benchmark\": \"NE_SET_USER_MEMORY_REGION per add, by regions already added\", \"Batches\": {BATCHES}, \"AddsPerBatch\": {BATCH}, \"Results\": [{}]}}",
        results.join(", ")
    );
}
