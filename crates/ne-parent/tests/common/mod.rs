// SPDX-License-Identifier: Apache-2.0
//! Shared set-up: small parents and sample images.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use ne_eif::{EifBuilder, Metadata};
use ne_parent::{AddressSpace, Parent, ParentConfig, ParentEnclave, HUGEPAGE_BYTES};

pub const MIB: u64 = 1 << 20;

/// A parent of `cores` cores × `threads` threads with 1 GiB of hugepages.
pub fn parent_with(cores: u32, threads: u32) -> Parent {
    Parent::new(ParentConfig {
        ram_mib: 1536,
        reserved_mib: 512,
        cores,
        threads_per_core: threads,
        cpu_pool: Some(ne_parent::default_pool(cores, threads)),
        reply_timeout: Duration::from_secs(10),
        ..ParentConfig::default()
    })
    .unwrap()
}

/// The default shape: 4 cores × 2 threads, pool `1-3,5-7`.
pub fn parent() -> Parent {
    parent_with(4, 2)
}

/// How many commands the device has seen.
pub fn doorbells(parent: &Parent) -> u64 {
    parent.log().stats().doorbells
}

/// A small valid image.
pub fn sample_eif() -> (Vec<u8>, ne_eif::Measurements) {
    EifBuilder {
        kernel: (0..100_000u32).map(|i| (i % 253) as u8).collect(),
        cmdline: "console=ttyS0".to_owned(),
        ramdisks: vec![vec![7; 50_000], vec![9; 20_000]],
        metadata: Metadata::new("sample", "1", "2026-11-26T00:00:00Z"),
        flags: 0,
    }
    .build()
    .unwrap()
}

/// Adds `mib` MiB of hugepages to `enclave`, one region per page, from `memory`.
pub fn add_memory(enclave: &ParentEnclave, memory: &mut AddressSpace, mib: u64) {
    for _ in 0..mib * MIB / HUGEPAGE_BYTES {
        let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
        enclave
            .set_user_memory_region(region(addr, HUGEPAGE_BYTES), memory)
            .unwrap();
    }
}

/// A default-flag user memory region.
pub fn region(addr: u64, size: u64) -> ne_abi::NeUserMemoryRegion {
    ne_abi::NeUserMemoryRegion {
        flags: 0,
        memory_size: size,
        userspace_addr: addr,
    }
}
