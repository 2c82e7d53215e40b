// SPDX-License-Identifier: Apache-2.0
//! Slow enclave starts, completed off the socket loop: a pump thread finishes each start
//! `delay` after it began (as a VM boot would), then lets the device reply on vector 0.
//! Meanwhile the socket loop keeps answering config and BAR messages, and doorbells get
//! the device's busy answer.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ne_device::SlotState;

use crate::backend::Shared;

/// How often the pump looks for starts to finish.
const TICK: Duration = Duration::from_millis(5);

/// Starts the pump thread.
pub fn spawn(shared: Arc<Shared>, delay: Duration) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("ne-starts".to_owned())
        .spawn(move || {
            let mut began: BTreeMap<u64, Instant> = BTreeMap::new();
            loop {
                thread::sleep(TICK);
                pump(&shared, delay, &mut began);
            }
        })
}

/// Finishes the starts that began `delay` ago and delivers their replies.
fn pump(shared: &Shared, delay: Duration, began: &mut BTreeMap<u64, Instant>) {
    let mut device = shared.device();
    let starting: Vec<u64> = device
        .slots()
        .iter()
        .filter(|slot| matches!(slot.state(), SlotState::Starting { .. }))
        .map(ne_device::Slot::uid)
        .collect();
    began.retain(|uid, _| starting.contains(uid));
    let now = Instant::now();
    for uid in starting {
        let since = *began.entry(uid).or_insert(now);
        if now.duration_since(since) >= delay {
            device.hypervisor_mut().complete_start(uid, Ok(()));
        }
    }
    if let Err(e) = device.process_hypervisor_events() {
        tracing::warn!("cannot deliver a finished start: {e}");
    }
}
