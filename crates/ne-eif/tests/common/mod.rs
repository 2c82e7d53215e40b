// SPDX-License-Identifier: Apache-2.0
//! Sample images for the EIF tests.
#![allow(dead_code, unreachable_pub)]

use ne_eif::{EifBuilder, Metadata};

/// Bytes that differ per `seed` and `len`.
pub fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(u8::try_from(i % 251).unwrap())
        })
        .collect()
}

/// A builder with `ramdisks` ramdisks of distinct contents.
pub fn builder(ramdisks: usize) -> EifBuilder {
    EifBuilder {
        kernel: blob(1, 5000),
        cmdline: "console=ttyS0 reboot=k panic=30".to_owned(),
        ramdisks: (0..ramdisks)
            .map(|i| blob(10 + u8::try_from(i).unwrap(), 3000 + i * 17))
            .collect(),
        metadata: Metadata::new("sample", "1.0", "2026-11-26T00:00:00+00:00"),
        flags: 0,
    }
}
