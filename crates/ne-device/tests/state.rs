// SPDX-License-Identifier: Apache-2.0
//! Snapshot and restore of the whole device, and its reset: what a VMM needs to save a
//! parent with running enclaves, and what a PCI function reset must keep.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::{regs, MsixVector};
    use ne_device::{
        DeviceConfig, DeviceState, NePciDevice, NoEvents, PendingState, RecordingInterrupts,
        SimulatedHypervisor, StateError,
    };

    fn restore(state: &DeviceState) -> Result<NePciDevice<RecordingInterrupts>, StateError> {
        NePciDevice::from_state(
            DeviceConfig::default(),
            state,
            RecordingInterrupts::new(),
            SimulatedHypervisor::new(),
            NoEvents,
        )
    }

    #[test]
    fn test_save_mutate_restore_gives_back_the_saved_device() {
        let (mut device, _) = probed();
        let (uid, cid) = running_slot(&mut device, 0, 1);
        let _ = ready_slot(&mut device, 64 << 20, 2);
        let saved = device.state();

        let extra = alloc(&mut device).slot_uid.get();
        free(&mut device, extra);
        let _ = running_slot(&mut device, 256 << 20, 3);
        assert_ne!(device.state(), saved, "the mutation changed the state");

        let restored = restore(&saved).unwrap();
        assert_eq!(restored.state(), saved);
        let slot = restored.slots().get(uid).unwrap();
        assert_eq!(slot.state().cid(), Some(cid));
    }

    #[test]
    fn test_power_on_state_is_the_default_and_restores() {
        let state = DeviceState::default();
        let device = restore(&state).unwrap();
        assert_eq!(device.state(), state);
        assert!(!device.is_enabled());
    }

    #[test]
    fn test_restore_refuses_changed_read_only_config_bytes() {
        let mut state = DeviceState::default();
        state.config_space[0] ^= 0xFF;
        assert_eq!(
            restore(&state).err(),
            Some(StateError::ReadOnlyConfig { offset: 0 })
        );
    }

    #[test]
    fn test_restore_refuses_wrong_lengths() {
        let mut state = DeviceState::default();
        state.send_data.pop();
        assert!(matches!(restore(&state), Err(StateError::Length { .. })));
    }

    #[test]
    fn test_restore_refuses_overlapping_slots() {
        let (mut device, _) = probed();
        let _ = ready_slot(&mut device, 0, 1);
        let mut state = device.state();
        let mut twin = state.slots[0].clone();
        twin.uid += 1;
        twin.vcpus = vec![2];
        state.slots.push(twin);
        state.next_slot_uid += 1;
        assert!(matches!(
            restore(&state),
            Err(StateError::Slot { uid: 2, .. })
        ));
    }

    #[test]
    fn test_restore_refuses_a_start_in_flight_for_a_slot_that_is_not_starting() {
        let (mut device, _) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        let mut state = device.state();
        state.pending = PendingState::Starting {
            slot_uid: uid,
            cid: 16,
            fate: ne_device::ReplyFate::Publish,
        };
        assert_eq!(
            restore(&state).err(),
            Some(StateError::Pending { slot_uid: uid })
        );
    }

    #[test]
    fn test_restore_re_raises_a_pending_vector_that_can_now_be_delivered() {
        let mut state = DeviceState::default();
        let open = {
            let (device, _) = probed();
            device.state()
        };
        state.config_space = open.config_space;
        state.msix_table = open.msix_table;
        state.msix_pending = [true, false];
        let irq = RecordingInterrupts::new();
        let device = NePciDevice::from_state(
            DeviceConfig::default(),
            &state,
            irq.clone(),
            SimulatedHypervisor::new(),
            NoEvents,
        )
        .unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        assert_eq!(device.state().msix_pending, [false, false]);
    }

    #[test]
    fn test_reset_stops_running_and_starting_enclaves_and_keeps_the_backend_and_ram() {
        let ram = 0..1 << 30;
        let config = DeviceConfig {
            parent_ram: std::iter::once(ram.clone()).collect(),
            ..DeviceConfig::default()
        };
        let (mut device, _) = probed_with(config, SimulatedHypervisor::deferred());
        let uid = ready_slot(&mut device, 0, 1);
        start(&mut device, uid, 0, 0);
        assert!(device.is_busy(), "the start is in progress");
        device.reset();
        assert!(device.slots().is_empty());
        assert!(
            device.hypervisor().enclaves().is_empty(),
            "the starting enclave was stopped"
        );
        assert!(!device.is_busy());
        assert_eq!(device.slots().parent_ram(), std::slice::from_ref(&ram));
        ne_device::test_utils::probe(&mut device);
        let uid = ready_slot(&mut device, 0, 1);
        start(&mut device, uid, 0, 0);
        assert!(device.is_busy(), "the backend is still the deferred one");
    }

    #[test]
    fn test_disable_during_a_start_stops_the_starting_enclave() {
        let (mut device, _) = probed_with(DeviceConfig::default(), SimulatedHypervisor::deferred());
        let uid = ready_slot(&mut device, 0, 1);
        start(&mut device, uid, 0, 0);
        device.write_bar(regs::ENABLE, &[0]).unwrap();
        assert!(device.hypervisor().enclaves().is_empty());
        assert!(
            !device.hypervisor_mut().complete_start(uid, Ok(())),
            "nothing is left to complete"
        );
    }

    #[test]
    fn test_restore_refuses_counters_that_contradict_the_slots() {
        let (mut device, _) = probed();
        let uid = ready_slot(&mut device, 0, 1);
        let saved = device.state();
        assert_eq!(saved.next_slot_uid, uid + 1);
        restore(&saved).unwrap();
        let counters = |next_slot_uid, next_auto_cid| DeviceState {
            next_slot_uid,
            next_auto_cid,
            ..saved.clone()
        };
        for (next, cid, why) in [
            (uid, saved.next_auto_cid, "a uid not above the last slot's"),
            (0, saved.next_auto_cid, "uid 0"),
            (uid + 1, 15, "a CID below the automatic range"),
            (
                uid + 1,
                u64::from(u32::MAX),
                "a CID above the enclave range",
            ),
        ] {
            assert!(
                matches!(
                    restore(&counters(next, cid)),
                    Err(StateError::Counters { .. })
                ),
                "{why}"
            );
        }
        let empty = DeviceState {
            next_slot_uid: 0,
            ..DeviceState::default()
        };
        assert!(
            matches!(restore(&empty), Err(StateError::Counters { .. })),
            "uid 0, no slot"
        );
        restore(&counters(uid + 5, 4_000)).expect("any counters above and inside hold");
    }
}
