// SPDX-License-Identifier: Apache-2.0
//! Any bytes as an EIF: parsing and measuring never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(eif) = ne_eif::Eif::parse(bytes) {
        let _ = eif.measurements();
        let _ = eif.metadata();
    }
});
