// SPDX-License-Identifier: Apache-2.0
//! How `NE_SET_USER_MEMORY_REGION` scales: the cost of adding one more 2 MiB region to an
//! enclave that already has 1 k, 10 k and 100 k, through the driver's checks and the
//! device model in process. Flat is the goal: a table that grows must not make each add
//! dearer. Prints JSON: per size, the median of 20 batches of 100 adds, per add.
//!
//! `cargo bench -p ne-driver --bench regions --features inproc`
// A bench: the output is the point.
#![allow(missing_docs, clippy::print_stdout)]

use std::time::Instant;

use ne_abi::NeUserMemoryRegion;
use ne_device::DeviceConfig;
use ne_driver::{errno, Page, UserMemory};

mod common;

const HUGEPAGE: u64 = 2 << 20;
const USER_BASE: u64 = 0x7f00_0000_0000;
const PHYS_BASE: u64 = 1 << 30;
const BATCH: u64 = 100;
const BATCHES: u64 = 20;

/// User memory where every 2 MiB page is a hugepage, physically two pages apart from its
/// neighbour so that no two regions merge into one run.
struct Scattered;

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

fn region(index: u64) -> NeUserMemoryRegion {
    NeUserMemoryRegion {
        flags: 0,
        memory_size: HUGEPAGE,
        userspace_addr: USER_BASE + index * HUGEPAGE,
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let sizes = [1_000u64, 10_000, 100_000];
    let most = sizes[sizes.len() - 1] + BATCH * BATCHES;
    let (bar, vectors) = common::device(DeviceConfig {
        max_mem_regions: most,
        parent_ram: std::iter::once(0..PHYS_BASE + 2 * most * HUGEPAGE).collect(),
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
