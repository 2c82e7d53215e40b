// SPDX-License-Identifier: Apache-2.0
//! The command sequence the kernel's `ne_ioctl_sample` drives through the Linux driver,
//! played on BAR 3, with an injected crash where the sample would see POLLHUP.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::{EnclaveState, MsixVector};
    use ne_device::{SlotState, StopReason};

    const REGIONS: u64 = 256;

    #[test]
    fn test_linux_sample_sequence_with_crash() {
        let (mut device, irq) = probed();

        // NE_CREATE_VM -> SLOT_ALLOC.
        let reply = alloc(&mut device);
        assert_eq!(reply.rc.get(), 0);
        let uid = reply.slot_uid.get();
        assert_ne!(uid, 0);
        assert!(
            reply.mem_regions.get() >= REGIONS,
            "the sample needs 256 regions"
        );

        // 256 x NE_SET_USER_MEMORY_REGION of one 2 MiB hugepage each, scattered in RAM.
        for page in 0..REGIONS {
            let paddr = (1 << 30) + (REGIONS - 1 - page) * 2 * MIB2;
            assert_eq!(
                add_mem(&mut device, uid, paddr, MIB2).rc.get(),
                0,
                "page {page}"
            );
        }

        // 2 x NE_ADD_VCPU(0): the driver picks pool CPUs 1 and 2.
        assert_eq!(add_vcpu(&mut device, uid, 1).rc.get(), 0);
        assert_eq!(add_vcpu(&mut device, uid, 2).rc.get(), 0);

        // NE_START_ENCLAVE { cid 0 } -> a CID comes back.
        let reply = start(&mut device, uid, 0, 0);
        assert_eq!(reply.rc.get(), 0);
        let cid = reply.enclave_cid.get();
        assert!(cid > 3 && cid < u64::from(u32::MAX));
        let commands = usize::try_from(1 + REGIONS + 2 + 1).unwrap();
        assert_eq!(
            irq.take(),
            vec![MsixVector::Reply; commands],
            "one vector 0 per reply"
        );

        // The enclave crashes: exactly one vector 1.
        assert!(device.hypervisor_mut().crash(uid));
        device.process_hypervisor_events().unwrap();
        assert_eq!(irq.take(), vec![MsixVector::Event]);

        // The driver's event work: SLOT_INFO for each running enclave sees STOPPED.
        let reply = info(&mut device, uid);
        assert_eq!(reply.state.get(), EnclaveState::Stopped.value());
        assert_eq!(reply.mem_regions.get(), REGIONS);
        assert_eq!(reply.mem_size.get(), REGIONS * MIB2);
        assert_eq!(reply.nr_vcpus.get(), 2);
        assert!(matches!(
            device.slots().get(uid).unwrap().state(),
            SlotState::Stopped {
                reason: StopReason::Crashed,
                ..
            }
        ));

        // Release: the state is STOPPED, so only SLOT_FREE is sent.
        assert_eq!(free(&mut device, uid).rc.get(), 0);
        assert!(device.slots().is_empty());
        assert_eq!(irq.take(), vec![MsixVector::Reply; 2]);
        assert_eq!(device.events().stats().events, 1);
    }

    #[test]
    fn test_four_enclaves_run_at_once_and_events_name_only_the_stopped_one() {
        let (mut device, irq) = probed_with(
            ne_device::DeviceConfig {
                parent_cpus: 8,
                ..ne_device::DeviceConfig::default()
            },
            ne_device::SimulatedHypervisor::new(),
        );
        let slots: Vec<(u64, u64)> = (0..4)
            .map(|i| running_slot(&mut device, i * MIB64, u32::try_from(i).unwrap() + 1))
            .collect();
        irq.take();
        device.hypervisor_mut().exit(slots[2].0);
        device.process_hypervisor_events().unwrap();
        assert_eq!(irq.take(), vec![MsixVector::Event]);
        let states: Vec<u16> = slots
            .iter()
            .map(|&(uid, _)| info(&mut device, uid).state.get())
            .collect();
        assert_eq!(states, [2, 2, 0xFFFF, 2]);
    }
}
