// SPDX-License-Identifier: Apache-2.0
//! Any sequence of BAR and config-space accesses and commands: the device never panics,
//! and its interrupt and counter invariants hold with MSI-X gating on
//! (`ne_device::test_utils::run_ops`): the driver may enable, mask and unmask vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ne_device::test_utils::{run_ops, BarOp};

fuzz_target!(|ops: Vec<BarOp>| {
    run_ops(&ops, true);
});
