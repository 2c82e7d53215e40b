// SPDX-License-Identifier: Apache-2.0
//! The benches' rig: a device model in this process and the driver probed on it.

use std::sync::{Arc, Mutex};

use ne_device::{DeviceConfig, NoEvents, SimulatedHypervisor};
use ne_driver::inproc::{pci_enable, InProcBar, InProcDevice};
use ne_driver::{Bar, DriverConfig, NeDriver, Topology, Vectors};

/// BAR 3 of a device model in this process, enabled as the PCI core leaves it, for a
/// parent of 8 CPUs and `config`'s other settings; and the vectors it raises.
pub(crate) fn device(config: DeviceConfig) -> (InProcBar<SimulatedHypervisor>, Arc<Vectors>) {
    let vectors = Arc::new(Vectors::new());
    let mut device: InProcDevice<SimulatedHypervisor> = InProcDevice::with_events(
        DeviceConfig {
            parent_cpus: 8,
            ..config
        },
        Arc::clone(&vectors),
        SimulatedHypervisor::new(),
        NoEvents,
    )
    .expect("device");
    pci_enable(&mut device);
    (InProcBar::new(Arc::new(Mutex::new(device))), vectors)
}

/// The driver probed over `bar` on a parent of 4 cores of 2 threads, pool `1-3,5-7`.
pub(crate) fn probe<B: Bar + 'static>(bar: B, vectors: Arc<Vectors>) -> NeDriver<B> {
    let driver = NeDriver::probe(
        bar,
        vectors,
        Topology::uniform(4, 2, 1),
        DriverConfig::default(),
    )
    .expect("probe");
    driver.set_cpu_pool("1-3,5-7").expect("pool");
    driver
}
