// SPDX-License-Identifier: Apache-2.0
//! An enclave's end reaching its waiter: four enclaves run; the backend reports one of them
//! crashed; the device raises vector 1; the driver's event worker finds which slot changed
//! (Linux's `NEXT_SLOT`/`SLOT_INFO` walk) and wakes the thread polling that enclave. Timed
//! from the backend's report to the waiter running again. Floor: one thread waking another
//! through a mutex and condition variable, the least any such hand-off costs.
//!
//! `cargo bench -p ne-driver --bench events --features inproc`
// criterion's macros define undocumented functions.
#![allow(missing_docs)]

use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ne_device::DeviceConfig;

mod common;

use common::{region, Scattered};

const ENCLAVES: u64 = 4;
const WAITER: usize = 2;
/// How long the waiter has to park before the report.
const PARK: Duration = Duration::from_millis(2);

fn crash_among_four(c: &mut Criterion) {
    let (bar, vectors, device) = common::device_and_bar(DeviceConfig {
        parent_ram: common::scattered_ram(ENCLAVES * 32),
        ..DeviceConfig::default()
    });
    // Five cores of two threads: the pool's four cores hold one enclave each.
    let driver = common::probe_shaped(bar, vectors, 5, "1-4,6-9");
    let mut group = c.benchmark_group("crash_among_four");
    group.bench_function("backend_report_to_waiter_woken", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let enclaves: Vec<_> = (0..ENCLAVES)
                    .map(|e| {
                        let enclave = driver.create_vm().expect("NE_CREATE_VM");
                        for index in e * 32..(e + 1) * 32 {
                            enclave
                                .set_user_memory_region(region(index), &Scattered)
                                .expect("region");
                        }
                        enclave.add_vcpu(0).expect("vCPU");
                        enclave.add_vcpu(0).expect("vCPU");
                        enclave.start(0, 0).expect("start");
                        Arc::new(enclave)
                    })
                    .collect();
                let waiter = Arc::clone(&enclaves[WAITER]);
                let (woken_tx, woken_rx) = channel();
                let waiting = thread::spawn(move || {
                    assert!(waiter.wait_event(Duration::from_secs(10)), "no event");
                    woken_tx.send(Instant::now()).expect("send");
                });
                thread::sleep(PARK);
                let uid = enclaves[WAITER].slot_uid();
                let reported = Instant::now();
                {
                    let mut device = device.lock().unwrap_or_else(PoisonError::into_inner);
                    assert!(device.hypervisor_mut().crash(uid));
                    device.process_hypervisor_events().expect("vector 1");
                }
                let woken = woken_rx.recv().expect("woken");
                total += woken - reported;
                waiting.join().expect("waiter");
                drop(enclaves);
            }
            total
        });
    });

    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    group.bench_function("floor_condvar_wakes_a_thread", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                *pair.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
                let waiter = Arc::clone(&pair);
                let (woken_tx, woken_rx) = channel();
                let waiting = thread::spawn(move || {
                    let (flag, signal) = &*waiter;
                    let mut set = flag.lock().unwrap_or_else(PoisonError::into_inner);
                    while !*set {
                        set = signal.wait(set).unwrap_or_else(PoisonError::into_inner);
                    }
                    woken_tx.send(Instant::now()).expect("send");
                });
                thread::sleep(PARK);
                let reported = Instant::now();
                *pair.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
                pair.1.notify_all();
                total += woken_rx.recv().expect("woken") - reported;
                waiting.join().expect("waiter");
            }
            total
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = crash_among_four
}
criterion_main!(benches);
