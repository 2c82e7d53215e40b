// SPDX-License-Identifier: Apache-2.0
//! Every command's success, and every rejection path with its errno and no state change.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::uapi::LAST_ENCLAVE_CID;
    use ne_abi::{
        regs, CmdReply, EnclaveGetSlotReq, EnclaveState, EnclaveStopReq, MsixVector, NextSlotReq,
        SlotAddBulkVcpusReq, SlotCountReq,
    };
    use ne_device::error::errno::*;
    use ne_device::slots::FIRST_AUTO_CID;
    use ne_device::test_utils::{memcpy_toio, read_reply, request, ring};
    use ne_device::{DeviceConfig, SimulatedHypervisor, SlotState, StopReason};
    use zerocopy::little_endian::U64;

    /// Runs `command`, asserting it answers `-errno` with one vector 0 and changes nothing.
    fn assert_rejected(
        device: &mut TestDevice,
        irq: &ne_device::RecordingInterrupts,
        errno: i32,
        command: impl FnOnce(&mut TestDevice) -> CmdReply,
    ) {
        let slots = device.slots().clone();
        let enclaves = device.hypervisor().enclaves().clone();
        irq.take();
        let reply = command(device);
        assert_eq!(reply.rc.get(), -errno, "rc");
        assert_eq!(reply, CmdReply::failure(-errno), "nothing but rc");
        assert_eq!(device.slots(), &slots, "slot table changed");
        assert_eq!(
            device.hypervisor().enclaves(),
            &enclaves,
            "hypervisor changed"
        );
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
    }

    fn bulk(device: &mut TestDevice, uid: u64, count: u64) -> CmdReply {
        let req = SlotAddBulkVcpusReq {
            slot_uid: U64::new(uid),
            nr_vcpus: U64::new(count),
        };
        request(device, &req)
    }

    fn stop(device: &mut TestDevice, uid: u64) -> CmdReply {
        request(
            device,
            &EnclaveStopReq {
                slot_uid: U64::new(uid),
            },
        )
    }

    fn get_slot(device: &mut TestDevice, cid: u64) -> CmdReply {
        request(
            device,
            &EnclaveGetSlotReq {
                enclave_cid: U64::new(cid),
            },
        )
    }

    fn next_slot(device: &mut TestDevice, uid: u64) -> CmdReply {
        request(
            device,
            &NextSlotReq {
                slot_uid: U64::new(uid),
            },
        )
    }

    // SLOT_ALLOC

    #[test]
    fn test_slot_alloc_returns_nonzero_unique_uids_and_region_limit() {
        let (mut device, _) = probed();
        let first = alloc(&mut device);
        let second = alloc(&mut device);
        assert_eq!(first.rc.get(), 0);
        assert_ne!(first.slot_uid.get(), 0);
        assert_ne!(first.slot_uid.get(), second.slot_uid.get());
        assert_eq!(first.mem_regions.get(), 32_768);
    }

    #[test]
    fn test_slot_alloc_beyond_max_slots_replies_enospc() {
        let (mut device, irq) = probed();
        for _ in 0..4 {
            assert_eq!(alloc(&mut device).rc.get(), 0);
        }
        assert_rejected(&mut device, &irq, ENOSPC, alloc);
    }

    #[test]
    fn test_slot_alloc_reports_configured_region_limit() {
        let config = DeviceConfig {
            max_mem_regions: 300,
            ..DeviceConfig::default()
        };
        let (mut device, _) = probed_with(config, SimulatedHypervisor::new());
        assert_eq!(alloc(&mut device).mem_regions.get(), 300);
    }

    // SLOT_FREE

    #[test]
    fn test_slot_free_releases_memory_and_cpus_for_reuse() {
        let (mut device, _) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        assert_eq!(free(&mut device, uid).rc.get(), 0);
        assert!(device.slots().is_empty());
        let again = ready_slot(&mut device, 0, 1);
        assert_ne!(again, uid);
    }

    #[test]
    fn test_slot_free_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        alloc(&mut device);
        assert_rejected(&mut device, &irq, ENOENT, |d| free(d, 99));
    }

    #[test]
    fn test_slot_free_running_slot_replies_ebusy() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EBUSY, |d| free(d, uid));
    }

    #[test]
    fn test_slot_free_stopped_slot_succeeds() {
        let (mut device, _) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_eq!(stop(&mut device, uid).rc.get(), 0);
        assert_eq!(free(&mut device, uid).rc.get(), 0);
    }

    // SLOT_ADD_MEM

    #[test]
    fn test_slot_add_mem_keeps_regions_in_arrival_order() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        for paddr in [6 * MIB2, 0, 2 * MIB2] {
            assert_eq!(add_mem(&mut device, uid, paddr, MIB2).rc.get(), 0);
        }
        let slot = device.slots().get(uid).unwrap();
        let order: Vec<u64> = slot.regions().iter().map(|r| r.paddr).collect();
        assert_eq!(order, [6 * MIB2, 0, 2 * MIB2]);
        assert_eq!(slot.mem_size(), 3 * MIB2);
    }

    #[test]
    fn test_slot_add_mem_accepts_large_multiple_of_2mib() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_mem(&mut device, uid, 1 << 30, 1 << 30).rc.get(), 0);
    }

    #[test]
    fn test_slot_add_mem_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| add_mem(d, 7, 0, MIB2));
    }

    #[test]
    fn test_slot_add_mem_empty_region_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| add_mem(d, uid, 0, 0));
    }

    #[test]
    fn test_slot_add_mem_unaligned_address_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| add_mem(d, uid, 0x1000, MIB2));
    }

    #[test]
    fn test_slot_add_mem_unaligned_size_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| {
            add_mem(d, uid, 0, MIB2 + 4096)
        });
    }

    #[test]
    fn test_slot_add_mem_outside_parent_ram_replies_efault() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EFAULT, |d| {
            add_mem(d, uid, 4 << 30, MIB2)
        });
        assert_rejected(&mut device, &irq, EFAULT, |d| {
            add_mem(d, uid, (4 << 30) - MIB2, 2 * MIB2)
        });
    }

    #[test]
    fn test_slot_add_mem_spanning_two_ram_ranges_replies_efault() {
        let config = DeviceConfig {
            parent_ram: vec![0..4 * MIB2, 4 * MIB2..8 * MIB2],
            ..DeviceConfig::default()
        };
        let (mut device, irq) = probed_with(config, SimulatedHypervisor::new());
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EFAULT, |d| {
            add_mem(d, uid, 2 * MIB2, 4 * MIB2)
        });
    }

    #[test]
    fn test_slot_add_mem_wrapping_region_replies_efault() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        let top = u64::MAX - (MIB2 - 1);
        assert_rejected(&mut device, &irq, EFAULT, |d| {
            add_mem(d, uid, top, 2 * MIB2)
        });
    }

    #[test]
    fn test_slot_add_mem_overlap_in_same_slot_replies_ebusy() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_mem(&mut device, uid, 2 * MIB2, 2 * MIB2).rc.get(), 0);
        assert_rejected(&mut device, &irq, EBUSY, |d| {
            add_mem(d, uid, 2 * MIB2, MIB2)
        });
        assert_rejected(&mut device, &irq, EBUSY, |d| add_mem(d, uid, 0, 4 * MIB2));
        assert_rejected(&mut device, &irq, EBUSY, |d| {
            add_mem(d, uid, 3 * MIB2, 4 * MIB2)
        });
    }

    #[test]
    fn test_slot_add_mem_overlap_with_other_slot_replies_ebusy() {
        let (mut device, irq) = probed();
        let first = alloc(&mut device).slot_uid.get();
        let second = alloc(&mut device).slot_uid.get();
        assert_eq!(add_mem(&mut device, first, 0, 4 * MIB2).rc.get(), 0);
        assert_rejected(&mut device, &irq, EBUSY, |d| {
            add_mem(d, second, 2 * MIB2, MIB2)
        });
    }

    #[test]
    fn test_slot_add_mem_adjacent_regions_are_accepted() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_mem(&mut device, uid, 2 * MIB2, MIB2).rc.get(), 0);
        assert_eq!(add_mem(&mut device, uid, MIB2, MIB2).rc.get(), 0);
        assert_eq!(add_mem(&mut device, uid, 3 * MIB2, MIB2).rc.get(), 0);
    }

    #[test]
    fn test_slot_add_mem_beyond_region_limit_replies_enospc() {
        let config = DeviceConfig {
            max_mem_regions: 2,
            ..DeviceConfig::default()
        };
        let (mut device, irq) = probed_with(config, SimulatedHypervisor::new());
        let uid = alloc(&mut device).slot_uid.get();
        add_mem(&mut device, uid, 0, MIB2);
        add_mem(&mut device, uid, MIB2, MIB2);
        let slots = device.slots().clone();
        irq.take();
        let reply = add_mem(&mut device, uid, 2 * MIB2, MIB2);
        assert_eq!(reply.rc.get(), -ENOSPC);
        assert_eq!(device.slots(), &slots);
    }

    #[test]
    fn test_slot_add_mem_after_start_replies_ebusy() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EBUSY, |d| add_mem(d, uid, MIB64, MIB2));
    }

    // SLOT_ADD_VCPU

    #[test]
    fn test_slot_add_vcpu_records_cpu() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_vcpu(&mut device, uid, 3).rc.get(), 0);
        assert_eq!(device.slots().get(uid).unwrap().vcpus(), [3]);
    }

    #[test]
    fn test_slot_add_vcpu_out_of_range_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| add_vcpu(d, uid, 4));
        assert_rejected(&mut device, &irq, EINVAL, |d| add_vcpu(d, uid, u32::MAX));
    }

    #[test]
    fn test_slot_add_vcpu_boot_cpu_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| add_vcpu(d, uid, 0));
    }

    #[test]
    fn test_slot_add_vcpu_twice_in_same_slot_replies_ebusy() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_vcpu(&mut device, uid, 1);
        assert_rejected(&mut device, &irq, EBUSY, |d| add_vcpu(d, uid, 1));
    }

    #[test]
    fn test_slot_add_vcpu_owned_by_other_slot_replies_ebusy() {
        let (mut device, irq) = probed();
        let first = alloc(&mut device).slot_uid.get();
        let second = alloc(&mut device).slot_uid.get();
        add_vcpu(&mut device, first, 2);
        assert_rejected(&mut device, &irq, EBUSY, |d| add_vcpu(d, second, 2));
    }

    #[test]
    fn test_slot_add_vcpu_beyond_slot_limit_replies_enospc() {
        let config = DeviceConfig {
            max_vcpus_per_slot: 1,
            ..DeviceConfig::default()
        };
        let (mut device, _) = probed_with(config, SimulatedHypervisor::new());
        let uid = alloc(&mut device).slot_uid.get();
        add_vcpu(&mut device, uid, 1);
        let slots = device.slots().clone();
        assert_eq!(add_vcpu(&mut device, uid, 2).rc.get(), -ENOSPC);
        assert_eq!(device.slots(), &slots);
    }

    #[test]
    fn test_slot_add_vcpu_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| add_vcpu(d, 1, 1));
    }

    #[test]
    fn test_slot_add_vcpu_after_start_replies_ebusy() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EBUSY, |d| add_vcpu(d, uid, 2));
    }

    // SLOT_ADD_BULK_VCPUS

    #[test]
    fn test_bulk_vcpus_picks_lowest_free_cpus_above_zero() {
        let config = DeviceConfig {
            parent_cpus: 8,
            ..DeviceConfig::default()
        };
        let (mut device, _) = probed_with(config, SimulatedHypervisor::new());
        let other = alloc(&mut device).slot_uid.get();
        add_vcpu(&mut device, other, 2);
        let uid = alloc(&mut device).slot_uid.get();
        let reply = bulk(&mut device, uid, 3);
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.nr_vcpus.get(), 3);
        assert_eq!(device.slots().get(uid).unwrap().vcpus(), [1, 3, 4]);
    }

    #[test]
    fn test_bulk_vcpus_zero_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, EINVAL, |d| bulk(d, uid, 0));
    }

    #[test]
    fn test_bulk_vcpus_more_than_free_replies_enospc() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_rejected(&mut device, &irq, ENOSPC, |d| bulk(d, uid, 4));
        assert_rejected(&mut device, &irq, ENOSPC, |d| bulk(d, uid, u64::MAX));
    }

    #[test]
    fn test_bulk_vcpus_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| bulk(d, 5, 1));
    }

    // ENCLAVE_START

    #[test]
    fn test_enclave_start_auto_cid_is_assigned_and_unique() {
        let (mut device, _) = probed();
        let (_, first) = running_slot(&mut device, 0, 1);
        let (_, second) = running_slot(&mut device, MIB64, 2);
        assert_eq!(first, FIRST_AUTO_CID);
        assert_ne!(first, second);
        assert!(second > 3 && second < u64::from(u32::MAX));
    }

    #[test]
    fn test_enclave_start_explicit_cid_is_echoed_and_debug_flag_kept() {
        let (mut device, _) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        let reply = start(&mut device, uid, 1234, 1);
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.slot_uid.get(), uid);
        assert_eq!(reply.enclave_cid.get(), 1234);
        let state = device.slots().get(uid).unwrap().state();
        assert_eq!(
            state,
            SlotState::Running {
                cid: 1234,
                flags: 1
            }
        );
        assert_eq!(device.hypervisor().enclaves()[&uid].flags, 1);
    }

    #[test]
    fn test_enclave_start_hands_regions_in_order_to_hypervisor() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_mem(&mut device, uid, MIB64, MIB64);
        add_mem(&mut device, uid, 0, MIB2);
        add_vcpu(&mut device, uid, 3);
        assert_eq!(start(&mut device, uid, 0, 0).rc.get(), 0);
        let enclave = &device.hypervisor().enclaves()[&uid];
        let order: Vec<u64> = enclave.regions.iter().map(|r| r.paddr).collect();
        assert_eq!(order, [MIB64, 0]);
        assert_eq!(enclave.vcpus, [3]);
    }

    #[test]
    fn test_enclave_start_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| start(d, 42, 0, 0));
    }

    #[test]
    fn test_enclave_start_bad_flags_replies_einval() {
        let (mut device, irq) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EINVAL, |d| start(d, uid, 0, 2));
    }

    #[test]
    fn test_enclave_start_reserved_cids_reply_einval() {
        let (mut device, irq) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        for cid in [1, 2, 3, u64::from(u32::MAX), 1 << 32] {
            assert_rejected(&mut device, &irq, EINVAL, |d| start(d, uid, cid, 0));
        }
    }

    #[test]
    fn test_enclave_start_without_memory_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_vcpu(&mut device, uid, 1);
        assert_rejected(&mut device, &irq, EINVAL, |d| start(d, uid, 0, 0));
    }

    #[test]
    fn test_enclave_start_below_64mib_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_mem(&mut device, uid, 0, MIB64 - MIB2);
        add_vcpu(&mut device, uid, 1);
        assert_rejected(&mut device, &irq, EINVAL, |d| start(d, uid, 0, 0));
    }

    #[test]
    fn test_enclave_start_without_vcpus_replies_einval() {
        let (mut device, irq) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_mem(&mut device, uid, 0, MIB64);
        assert_rejected(&mut device, &irq, EINVAL, |d| start(d, uid, 0, 0));
    }

    #[test]
    fn test_enclave_start_cid_of_live_enclave_replies_eaddrinuse() {
        let (mut device, irq) = probed();
        let (_, cid) = running_slot(&mut device, 0, 1);
        let uid = ready_slot(&mut device, MIB64, 2);
        assert_rejected(&mut device, &irq, EADDRINUSE, |d| start(d, uid, cid, 0));
    }

    #[test]
    fn test_enclave_start_cid_of_stopped_enclave_is_free_again() {
        let (mut device, _) = probed();
        let (first, cid) = running_slot(&mut device, 0, 1);
        stop(&mut device, first);
        let uid = ready_slot(&mut device, MIB64, 2);
        assert_eq!(start(&mut device, uid, cid, 0).enclave_cid.get(), cid);
    }

    #[test]
    fn test_enclave_start_twice_replies_ebusy() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EBUSY, |d| start(d, uid, 0, 0));
    }

    #[test]
    fn test_enclave_start_refused_by_hypervisor_keeps_slot_in_init() {
        let (mut device, irq) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        device.hypervisor_mut().refuse_next_start(ENOMEM, "no room");
        assert_rejected(&mut device, &irq, ENOMEM, |d| start(d, uid, 0, 0));
        assert_eq!(start(&mut device, uid, 0, 0).rc.get(), 0, "retry works");
    }

    #[test]
    fn test_enclave_start_refusal_with_nonpositive_errno_still_fails() {
        let (mut device, _) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        device
            .hypervisor_mut()
            .refuse_next_start(0, "confused backend");
        assert_eq!(start(&mut device, uid, 0, 0).rc.get(), -EIO);
    }

    #[test]
    fn test_enclave_start_deferred_replies_when_hypervisor_completes() {
        let (mut device, irq) =
            probed_with(DeviceConfig::default(), SimulatedHypervisor::deferred());
        let uid = ready_slot(&mut device, 0, 1);
        irq.take();
        start(&mut device, uid, 0, 0);
        assert_eq!(
            irq.raised(),
            vec![],
            "no reply before the hypervisor is done"
        );
        assert!(device.is_busy());
        ring(&mut device, ne_abi::Command::SlotCount.number());
        assert_eq!(
            device.events().stats().ignored_doorbells,
            1,
            "doorbell while pending is ignored"
        );
        device.hypervisor_mut().complete_start(uid, Ok(()));
        device.process_hypervisor_events().unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        let reply = read_reply(&mut device);
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.enclave_cid.get(), FIRST_AUTO_CID);
        assert_eq!(
            info(&mut device, uid).state.get(),
            EnclaveState::Running.value()
        );
    }

    #[test]
    fn test_enclave_start_deferred_failure_returns_slot_to_init() {
        let (mut device, _) = probed_with(DeviceConfig::default(), SimulatedHypervisor::deferred());
        let uid = ready_slot(&mut device, 0, 1);
        start(&mut device, uid, 0, 0);
        let refusal = ne_device::StartRefused {
            errno: EIO,
            reason: "kernel did not boot".into(),
        };
        device.hypervisor_mut().complete_start(uid, Err(refusal));
        device.process_hypervisor_events().unwrap();
        assert_eq!(read_reply(&mut device).rc.get(), -EIO);
        assert_eq!(device.slots().get(uid).unwrap().state(), SlotState::Init);
    }

    // ENCLAVE_STOP

    #[test]
    fn test_enclave_stop_stops_running_enclave() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        irq.take();
        assert_eq!(stop(&mut device, uid).rc.get(), 0);
        assert!(device.hypervisor().enclaves().is_empty());
        assert_eq!(
            info(&mut device, uid).state.get(),
            EnclaveState::Stopped.value()
        );
        assert_eq!(
            irq.count(MsixVector::Event),
            0,
            "a requested stop is no event"
        );
    }

    #[test]
    fn test_enclave_stop_after_exit_succeeds_without_change() {
        let (mut device, _) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        device.hypervisor_mut().exit(uid);
        device.process_hypervisor_events().unwrap();
        let slots = device.slots().clone();
        assert_eq!(stop(&mut device, uid).rc.get(), 0);
        assert_eq!(device.slots(), &slots);
    }

    #[test]
    fn test_enclave_stop_never_started_replies_einval() {
        let (mut device, irq) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, EINVAL, |d| stop(d, uid));
    }

    #[test]
    fn test_enclave_stop_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| stop(d, 3));
    }

    // ENCLAVE_GET_SLOT, SLOT_COUNT, NEXT_SLOT, SLOT_INFO

    #[test]
    fn test_enclave_get_slot_finds_running_enclave_by_cid() {
        let (mut device, _) = probed();
        running_slot(&mut device, 0, 1);
        let (uid, cid) = running_slot(&mut device, MIB64, 2);
        let reply = get_slot(&mut device, cid);
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.slot_uid.get(), uid);
    }

    #[test]
    fn test_enclave_get_slot_unknown_cid_replies_enoent() {
        let (mut device, irq) = probed();
        let (uid, cid) = running_slot(&mut device, 0, 1);
        assert_rejected(&mut device, &irq, ENOENT, |d| get_slot(d, cid + 1));
        stop(&mut device, uid);
        assert_rejected(&mut device, &irq, ENOENT, |d| get_slot(d, cid));
    }

    #[test]
    fn test_slot_count_counts_live_slots() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        alloc(&mut device);
        free(&mut device, uid);
        let reply = request(&mut device, &SlotCountReq::default());
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.slot_count.get(), 1);
    }

    #[test]
    fn test_next_slot_iterates_in_uid_order_and_ends_with_enoent() {
        let (mut device, irq) = probed();
        let uids: Vec<u64> = (0..3).map(|_| alloc(&mut device).slot_uid.get()).collect();
        free(&mut device, uids[1]);
        let mut seen = vec![];
        let mut cursor = 0;
        // Two slots: the walk must end by the third step.
        for _ in 0..3 {
            let reply = next_slot(&mut device, cursor);
            if reply.rc.get() != 0 {
                assert_eq!(reply.rc.get(), -ENOENT);
                break;
            }
            cursor = reply.slot_uid.get();
            seen.push(cursor);
        }
        assert_eq!(seen, [uids[0], uids[2]]);
        assert_eq!(next_slot(&mut device, cursor).rc.get(), -ENOENT);
        assert_rejected(&mut device, &irq, ENOENT, |d| next_slot(d, u64::MAX));
    }

    #[test]
    fn test_slot_info_describes_running_slot() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        add_mem(&mut device, uid, 0, MIB64);
        add_mem(&mut device, uid, MIB64, MIB2);
        add_vcpu(&mut device, uid, 1);
        add_vcpu(&mut device, uid, 2);
        start(&mut device, uid, 77, 1);
        let reply = info(&mut device, uid);
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(reply.slot_uid.get(), uid);
        assert_eq!(reply.enclave_cid.get(), 77);
        assert_eq!(reply.mem_regions.get(), 2);
        assert_eq!(reply.mem_size.get(), MIB64 + MIB2);
        assert_eq!(reply.nr_vcpus.get(), 2);
        assert_eq!(reply.flags.get(), 1);
        assert_eq!(reply.state.get(), 2);
    }

    #[test]
    fn test_slot_info_of_new_slot_reports_init() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        let reply = info(&mut device, uid);
        assert_eq!(reply.state.get(), EnclaveState::Init.value());
        assert_eq!(reply.enclave_cid.get(), 0);
    }

    #[test]
    fn test_slot_info_unknown_slot_replies_enoent() {
        let (mut device, irq) = probed();
        assert_rejected(&mut device, &irq, ENOENT, |d| info(d, 1));
    }

    // Decoding

    #[test]
    fn test_command_decodes_only_its_own_bytes_despite_stale_send_data() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        // A 24-byte SLOT_ADD_MEM leaves paddr and size in SEND_DATA[8..24], and garbage after.
        add_mem(&mut device, uid, 0, MIB2);
        memcpy_toio(&mut device, regs::SEND_DATA + 24, &[0xEE; 200]);
        // SLOT_ADD_VCPU writes 16 bytes: its padding is zeros, the stale bytes after stay.
        let reply = add_vcpu(&mut device, uid, 2);
        assert_eq!(reply.rc.get(), 0);
        // SLOT_ALLOC writes one byte; the stale uid behind it must not matter.
        let reply = alloc(&mut device);
        assert_eq!(reply.rc.get(), 0);
        assert_ne!(reply.slot_uid.get(), uid);
        // SLOT_INFO reads 8 bytes; the stale vcpu_id behind them must not matter.
        assert_eq!(info(&mut device, uid).nr_vcpus.get(), 1);
    }

    #[test]
    fn test_slot_add_vcpu_ignores_padding_bytes() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&uid.to_le_bytes());
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..].copy_from_slice(&[0xFF; 4]);
        memcpy_toio(&mut device, regs::SEND_DATA, &bytes);
        ring(&mut device, ne_abi::Command::SlotAddVcpu.number());
        assert_eq!(read_reply(&mut device).rc.get(), 0);
        assert_eq!(device.slots().get(uid).unwrap().vcpus(), [1]);
    }

    #[test]
    fn test_rejection_is_remembered_with_reason() {
        let (mut device, _) = probed();
        free(&mut device, 9);
        let rejection = device.events().last_rejection().unwrap();
        assert_eq!(rejection.command, ne_abi::Command::SlotFree.number());
        assert_eq!(rejection.error.to_string(), "No slot has uid 9");
    }

    #[test]
    fn test_exit_marks_slot_stopped_with_reason() {
        let (mut device, _) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        device.hypervisor_mut().exit(uid);
        device.process_hypervisor_events().unwrap();
        let state = device.slots().get(uid).unwrap().state();
        assert!(matches!(
            state,
            SlotState::Stopped {
                reason: StopReason::Exited,
                ..
            }
        ));
    }

    /// Starts a 64 MiB enclave at `index` × 64 MiB on vCPU `index` with `cid`; (uid, CID).
    fn run(device: &mut TestDevice, index: u64, cid: u64) -> (u64, u64) {
        let vcpu = u32::try_from(index).unwrap();
        let uid = ready_slot(device, index * MIB64, vcpu);
        let reply = start(device, uid, cid, 0);
        assert_eq!(reply.rc.get(), 0, "start with CID {cid}");
        (uid, reply.enclave_cid.get())
    }

    /// Stops and frees the enclave of `uid`.
    fn end(device: &mut TestDevice, uid: u64) {
        assert_eq!(stop(device, uid).rc.get(), 0);
        assert_eq!(free(device, uid).rc.get(), 0);
    }

    #[test]
    fn test_auto_cids_follow_the_highest_explicit_one_wrap_and_skip_cids_in_use() {
        let config = DeviceConfig {
            parent_cpus: 8,
            ..DeviceConfig::default()
        };
        let (mut device, _) = probed_with(config, SimulatedHypervisor::new());
        assert_eq!(device.config().parent_cpus, 8);
        let (_, explicit) = run(&mut device, 1, 100);
        assert_eq!(explicit, 100);
        let (after, cid) = run(&mut device, 2, 0);
        assert_eq!(cid, 101, "after the highest explicit CID");
        end(&mut device, after);
        let (low, cid) = run(&mut device, 2, 5);
        assert_eq!(cid, 5);
        end(&mut device, low);
        let (next, cid) = run(&mut device, 2, 0);
        assert_eq!(cid, 102, "a lower explicit CID does not move the next one");
        end(&mut device, next);
        let (_, last) = run(&mut device, 3, LAST_ENCLAVE_CID);
        assert_eq!(last, LAST_ENCLAVE_CID);
        let (wrapped, cid) = run(&mut device, 4, 0);
        assert_eq!(
            cid, FIRST_AUTO_CID,
            "after the last CID, the first automatic one"
        );
        end(&mut device, wrapped);
        let (_, cid) = run(&mut device, 4, LAST_ENCLAVE_CID - 1);
        assert_eq!(cid, LAST_ENCLAVE_CID - 1);
        let (_, cid) = run(&mut device, 5, 0);
        assert_eq!(
            cid, FIRST_AUTO_CID,
            "the last CID is in use: skipped, and the search wraps"
        );
    }

    #[test]
    fn test_an_auto_cid_skips_one_in_use() {
        let (mut device, _) = probed();
        let (_, first) = run(&mut device, 1, 0);
        assert_eq!(first, FIRST_AUTO_CID);
        run(&mut device, 2, LAST_ENCLAVE_CID);
        let (_, cid) = run(&mut device, 3, 0);
        assert_eq!(
            cid,
            FIRST_AUTO_CID + 1,
            "the wrapped-to CID is in use: skipped"
        );
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a list of RAM ranges, of one range
    fn test_set_parent_ram_moves_where_memory_may_be_donated_and_keeps_donated_regions() {
        let (mut device, _) = probed();
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_mem(&mut device, uid, 0, MIB2).rc.get(), 0);
        device.set_parent_ram(vec![(8 << 30)..(9 << 30)]).unwrap();
        assert_eq!(
            add_mem(&mut device, uid, MIB2, MIB2).rc.get(),
            -EFAULT,
            "outside the new RAM"
        );
        assert_eq!(add_mem(&mut device, uid, 8 << 30, MIB2).rc.get(), 0);
        let regions = device.slots().get(uid).unwrap().regions().len();
        assert_eq!(regions, 2, "the region donated before is kept");
        assert!(device.set_parent_ram(vec![0..MIB2 + 1]).is_err());
        assert!(device.set_parent_ram(vec![MIB2..MIB2]).is_err(), "empty");
        assert_eq!(
            add_mem(&mut device, uid, (8 << 30) + MIB2, MIB2).rc.get(),
            0,
            "a refused change changes nothing"
        );
    }

    #[test]
    fn test_freeing_a_stopped_slot_keeps_its_old_cid_with_the_enclave_that_reused_it() {
        let (mut device, irq) = probed();
        let (first, _) = run(&mut device, 1, 100);
        assert_eq!(stop(&mut device, first).rc.get(), 0);
        let (_, reused) = run(&mut device, 2, 100);
        assert_eq!(reused, 100, "a stopped enclave's CID is free again");
        assert_eq!(free(&mut device, first).rc.get(), 0);
        let third = ready_slot(&mut device, 3 * MIB64, 3);
        assert_rejected(&mut device, &irq, EADDRINUSE, |d| start(d, third, 100, 0));
    }

    #[test]
    fn test_a_slot_reports_its_start_flags_and_its_state_in_words() {
        let (mut device, irq) = probed();
        assert!(device.slots().is_empty());
        let uid = ready_slot(&mut device, 0, 1);
        assert!(!device.slots().is_empty());
        assert_eq!(device.slots().get(uid).unwrap().state().flags(), 0);
        assert_eq!(start(&mut device, uid, 0, 1).rc.get(), 0);
        assert_eq!(device.slots().get(uid).unwrap().state().flags(), 1, "debug");
        assert_rejected(&mut device, &irq, EBUSY, |d| add_vcpu(d, uid, 2));
        let rejection = device.events().last_rejection().unwrap();
        assert_eq!(
            rejection.error.to_string(),
            format!("Slot {uid} is running")
        );
    }

    #[test]
    fn test_a_slot_takes_exactly_its_vcpu_limit() {
        let config = DeviceConfig {
            parent_cpus: 8,
            max_vcpus_per_slot: 2,
            ..DeviceConfig::default()
        };
        let (mut device, irq) = probed_with(config, SimulatedHypervisor::new());
        let uid = alloc(&mut device).slot_uid.get();
        assert_eq!(add_vcpu(&mut device, uid, 1).rc.get(), 0);
        assert_eq!(
            bulk(&mut device, uid, 1).rc.get(),
            0,
            "the second is the limit"
        );
        assert_rejected(&mut device, &irq, ENOSPC, |d| add_vcpu(d, uid, 3));
        assert_rejected(&mut device, &irq, ENOSPC, |d| bulk(d, uid, 1));
    }
}
