// SPDX-License-Identifier: Apache-2.0
//! The Linux sample's lifecycle in process, through the enclave API: `NE_CREATE_VM`,
//! `NE_GET_IMAGE_LOAD_INFO`, 256 × `NE_SET_USER_MEMORY_REGION` of 2 MiB, 2 × `NE_ADD_VCPU`,
//! `NE_START_ENCLAVE`, then the release (`ENCLAVE_STOP`, `SLOT_FREE`) — 262 commands on the
//! device model with the simulated backend. Floor: the same BAR accesses, recorded from
//! one lifecycle, replayed on plain memory behind the same `Bar` trait.
//!
//! `cargo bench -p ne-driver --bench lifecycle --features inproc`
// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use ne_device::DeviceConfig;
use ne_driver::{Bar, NeDriver};

mod common;

use common::{region, Scattered};

/// Regions the sample donates.
const REGIONS: u64 = 256;

/// One lifecycle, as the kernel's sample runs it.
fn lifecycle<B: Bar + 'static>(driver: &NeDriver<B>) {
    let enclave = driver.create_vm().expect("NE_CREATE_VM");
    enclave
        .image_load_info(ne_abi::uapi::EIF_IMAGE)
        .expect("NE_GET_IMAGE_LOAD_INFO");
    for index in 0..REGIONS {
        enclave
            .set_user_memory_region(region(index), &Scattered)
            .expect("NE_SET_USER_MEMORY_REGION");
    }
    enclave.add_vcpu(0).expect("NE_ADD_VCPU");
    enclave.add_vcpu(0).expect("NE_ADD_VCPU");
    enclave.start(0, 0).expect("NE_START_ENCLAVE");
    enclave.release().expect("release");
}

fn sample_lifecycle(c: &mut Criterion) {
    let (device, vectors) = common::device(DeviceConfig {
        parent_ram: common::scattered_ram(REGIONS),
        ..DeviceConfig::default()
    });
    let bar = common::Recording::new(device);
    let driver = common::probe(bar.clone(), vectors);
    let accesses = bar.record_during(|| lifecycle(&driver));

    let mut group = c.benchmark_group("sample_lifecycle");
    group.bench_function("enclave_api_in_process", |b| b.iter(|| lifecycle(&driver)));
    let mut plain = common::PlainBar::new();
    group.bench_function("floor_same_bar_accesses_on_plain_memory", |b| {
        b.iter(|| plain.replay(&accesses));
    });
    group.finish();
}

criterion_group!(benches, sample_lifecycle);
criterion_main!(benches);
