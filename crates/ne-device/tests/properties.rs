// SPDX-License-Identifier: Apache-2.0
//! Property: for any sequence of raw BAR and config accesses, commands (well-formed or
//! not) and enclave exits, the device never panics and its invariants hold after every
//! step: uids non-zero and unique, live CIDs unique and never reserved, no two regions
//! overlap, limits respected, replies agree with the table, and exactly one vector-0 per
//! reply and one vector-1 per event; and a snapshot restores to the same state.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use ne_abi::uapi::is_reserved_cid;
    use ne_abi::{regs, Command, EnclaveState, MsixVector};
    use ne_device::test_utils::{read_reply, read_u32, BarOp};
    use ne_device::{
        DeviceConfig, DeviceLog, NePciDevice, NoEvents, RecordingInterrupts, SimulatedHypervisor,
    };
    use proptest::prelude::*;

    const MIB2: u64 = 2 << 20;

    fn config() -> DeviceConfig {
        DeviceConfig {
            max_slots: 4,
            max_mem_regions: 16,
            max_vcpus_per_slot: 3,
            parent_cpus: 6,
            parent_ram: vec![0..128 * MIB2, 256 * MIB2..320 * MIB2],
            msix_gating: false,
        }
    }

    type Device = NePciDevice<RecordingInterrupts, SimulatedHypervisor, Arc<DeviceLog>>;

    /// One step of a sequence.
    #[derive(Clone, Debug)]
    enum Step {
        /// One raw access or command.
        Op(BarOp),
        /// The hypervisor reports that the enclave of `uid` exited or crashed.
        Exit { uid: u64, crash: bool },
        /// What a driver does to launch an enclave: SLOT_ALLOC, then, on the uid it returned,
        /// SLOT_ADD_MEM of 64 MiB at `page`, SLOT_ADD_VCPU `vcpu`, ENCLAVE_START with `cid`.
        Launch { page: u64, vcpu: u64, cid: u64 },
    }

    fn uid() -> impl Strategy<Value = u64> {
        prop_oneof![8 => 1u64..5, 1 => 0u64..10, 1 => any::<u64>()]
    }

    fn paddr() -> impl Strategy<Value = u64> {
        prop_oneof![6 => (0u64..180).prop_map(|page| page * MIB2), 1 => any::<u64>()]
    }

    fn size() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => Just(MIB2),
            4 => Just(32 * MIB2),
            2 => (1u64..40).prop_map(|pages| pages * MIB2),
            1 => Just(0u64),
            1 => any::<u64>(),
        ]
    }

    fn cid() -> impl Strategy<Value = u64> {
        prop_oneof![4 => Just(0u64), 2 => 0u64..24, 1 => any::<u64>()]
    }

    fn le(fields: &[u64]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// A command with plausible (sometimes hostile) fields.
    fn command() -> impl Strategy<Value = BarOp> {
        prop_oneof![
            3 => Just(BarOp::command(Command::SlotAlloc, &[0])),
            2 => uid().prop_map(|u| BarOp::command(Command::SlotFree, &le(&[u]))),
            8 => (uid(), paddr(), size()).prop_map(|(u, p, s)| BarOp::command(Command::SlotAddMem, &le(&[u, p, s]))),
            4 => (uid(), 0u64..8).prop_map(|(u, v)| BarOp::command(Command::SlotAddVcpu, &le(&[u, v]))),
            2 => (uid(), 0u64..5).prop_map(|(u, n)| BarOp::command(Command::SlotAddBulkVcpus, &le(&[u, n]))),
            4 => (uid(), cid(), 0u64..3).prop_map(|(u, c, f)| BarOp::command(Command::EnclaveStart, &le(&[u, c, f]))),
            2 => uid().prop_map(|u| BarOp::command(Command::EnclaveStop, &le(&[u]))),
            2 => cid().prop_map(|c| BarOp::command(Command::EnclaveGetSlot, &le(&[c]))),
            2 => uid().prop_map(|u| BarOp::command(Command::SlotInfo, &le(&[u]))),
            1 => uid().prop_map(|u| BarOp::command(Command::NextSlot, &le(&[u]))),
            1 => Just(BarOp::command(Command::SlotCount, &[0])),
            1 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..32))
                .prop_map(|(command, payload)| BarOp::Command { command, payload }),
        ]
    }

    fn raw() -> impl Strategy<Value = BarOp> {
        let width = prop_oneof![Just(1u8), Just(2), Just(4), Just(8), 0u8..=16];
        prop_oneof![
            (0u16..0x2010, width.clone()).prop_map(|(offset, len)| BarOp::Read { offset, len }),
            (0u16..0x2010, proptest::collection::vec(any::<u8>(), 0..=8))
                .prop_filter("ENABLE writes are their own step", |(offset, data)| {
                    *offset != 0 || data.is_empty()
                })
                .prop_map(|(offset, data)| BarOp::Write { offset, data }),
            (0u16..0x110, width).prop_map(|(offset, len)| BarOp::ReadConfig { offset, len }),
            (0u16..0x110, proptest::collection::vec(any::<u8>(), 0..=8))
                .prop_map(|(offset, data)| BarOp::WriteConfig { offset, data }),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            40 => command().prop_map(Step::Op),
            10 => raw().prop_map(Step::Op),
            1 => (0u8..2).prop_map(|on| Step::Op(BarOp::Write { offset: 0, data: vec![on] })),
            4 => (1u64..5, any::<bool>()).prop_map(|(uid, crash)| Step::Exit { uid, crash }),
            4 => (0u64..160, 0u64..7, cid()).prop_map(|(page, vcpu, cid)| Step::Launch { page, vcpu, cid }),
        ]
    }

    fn enabled_device() -> (Device, RecordingInterrupts) {
        let irq = RecordingInterrupts::new();
        let log = Arc::new(DeviceLog::new());
        let mut device =
            NePciDevice::with_events(config(), irq.clone(), SimulatedHypervisor::new(), log)
                .unwrap();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        (device, irq)
    }

    fn apply(device: &mut Device, step: &Step) {
        match step {
            Step::Op(op) => op.apply(device).unwrap(),
            Step::Exit { uid, crash } => {
                if *crash {
                    device.hypervisor_mut().crash(*uid);
                } else {
                    device.hypervisor_mut().exit(*uid);
                }
                device.process_hypervisor_events().unwrap();
            }
            Step::Launch { page, vcpu, cid } => {
                BarOp::command(Command::SlotAlloc, &[0])
                    .apply(device)
                    .unwrap();
                let uid = read_reply(device).slot_uid.get();
                let mem = le(&[uid, page * MIB2, 32 * MIB2]);
                BarOp::command(Command::SlotAddMem, &mem)
                    .apply(device)
                    .unwrap();
                BarOp::command(Command::SlotAddVcpu, &le(&[uid, *vcpu]))
                    .apply(device)
                    .unwrap();
                let start = le(&[uid, *cid, 0]);
                BarOp::command(Command::EnclaveStart, &start)
                    .apply(device)
                    .unwrap();
            }
        }
    }

    /// The table's invariants.
    fn check_table(device: &Device) -> Result<(), TestCaseError> {
        let config = config();
        let slots = device.slots();
        prop_assert!(slots.len() <= config.max_slots);
        let mut regions = vec![];
        let mut vcpus = BTreeSet::new();
        let mut cids = BTreeSet::new();
        for slot in slots.iter() {
            prop_assert_ne!(slot.uid(), 0);
            prop_assert!(slot.regions().len() as u64 <= config.max_mem_regions);
            prop_assert!(slot.vcpus().len() as u64 <= u64::from(config.max_vcpus_per_slot));
            let sum: u64 = slot.regions().iter().map(|r| r.size).sum();
            prop_assert_eq!(sum, slot.mem_size());
            regions.extend(slot.regions().iter().copied());
            for &vcpu in slot.vcpus() {
                prop_assert!(vcpu > 0 && vcpu < config.parent_cpus);
                prop_assert!(vcpus.insert(vcpu), "vCPU {} held twice", vcpu);
            }
            let state = slot.state();
            if state.wire() == EnclaveState::Running {
                let cid = state.cid().unwrap_or(0);
                prop_assert!(cid != 0 && !is_reserved_cid(cid));
                prop_assert!(cids.insert(cid), "CID {} live twice", cid);
                prop_assert!(device.hypervisor().enclaves().contains_key(&slot.uid()));
            }
        }
        regions.sort_by_key(|r| r.paddr);
        for pair in regions.windows(2) {
            prop_assert!(
                pair[0].paddr + pair[0].size <= pair[1].paddr,
                "{:?} overlaps",
                pair
            );
        }
        for region in &regions {
            let end = region.paddr + region.size;
            let inside = config
                .parent_ram
                .iter()
                .any(|ram| ram.start <= region.paddr && end <= ram.end);
            prop_assert!(
                inside && region.size > 0 && region.size % MIB2 == 0 && region.paddr % MIB2 == 0
            );
        }
        Ok(())
    }

    /// The interrupt and counter invariants.
    fn check_signals(device: &mut Device, irq: &RecordingInterrupts) -> Result<(), TestCaseError> {
        let stats = device.events().stats();
        prop_assert_eq!(irq.count(MsixVector::Reply) as u64, stats.replies);
        prop_assert_eq!(irq.count(MsixVector::Event) as u64, stats.events);
        prop_assert_eq!(stats.replies, stats.doorbells - stats.ignored_doorbells);
        let evtcnt = read_u32(device, regs::EVTCNT);
        prop_assert_eq!(
            u64::from(regs::evtcnt_reply(evtcnt)),
            stats.replies % 0x1_0000
        );
        prop_assert_eq!(
            u64::from(regs::evtcnt_event(evtcnt)),
            stats.events % 0x1_0000
        );
        Ok(())
    }

    /// Snapshot and restore: a device rebuilt from the state reports the same state.
    fn check_state_round_trip(device: &Device) -> Result<(), TestCaseError> {
        let state = device.state();
        let restored = NePciDevice::from_state(
            config(),
            &state,
            RecordingInterrupts::new(),
            SimulatedHypervisor::new(),
            NoEvents,
        );
        prop_assert!(restored.is_ok(), "{:?}", restored.err());
        prop_assert_eq!(restored.map(|d| d.state()).ok(), Some(state));
        Ok(())
    }

    /// After a successful SLOT_INFO or SLOT_COUNT, the reply agrees with the table.
    fn check_reply(device: &mut Device, step: &Step) -> Result<(), TestCaseError> {
        let Step::Op(BarOp::Command { command, payload }) = step else {
            return Ok(());
        };
        let reply = read_reply(device);
        if reply.rc.get() != 0 || !device.is_enabled() {
            return Ok(());
        }
        if *command == Command::SlotCount.number() {
            prop_assert_eq!(reply.slot_count.get(), device.slots().len() as u64);
        }
        if *command == Command::SlotInfo.number() {
            let uid = u64::from_le_bytes(payload[..8].try_into().unwrap());
            let slot = device
                .slots()
                .get(uid)
                .expect("SLOT_INFO succeeded on a slot");
            prop_assert_eq!(reply.slot_uid.get(), uid);
            prop_assert_eq!(reply.mem_regions.get(), slot.regions().len() as u64);
            prop_assert_eq!(reply.mem_size.get(), slot.mem_size());
            prop_assert_eq!(reply.nr_vcpus.get(), slot.vcpus().len() as u64);
            prop_assert_eq!(reply.state.get(), slot.state().wire().value());
        }
        Ok(())
    }

    /// Found by the property test: a stopped enclave's CID, reused by a later start, must
    /// not stop the state from being restored.
    #[test]
    fn test_a_state_with_a_stopped_enclave_whose_cid_was_reused_restores() {
        let command =
            |command: Command, fields: &[u64]| Step::Op(BarOp::command(command, &le(fields)));
        let (mut device, _) = enabled_device();
        let steps = [
            command(Command::SlotAlloc, &[0]),
            Step::Launch {
                page: 0,
                vcpu: 2,
                cid: 0,
            },
            command(Command::EnclaveStop, &[2]),
            Step::Launch {
                page: 32,
                vcpu: 1,
                cid: 0,
            },
        ];
        for step in &steps {
            apply(&mut device, step);
        }
        let state = device.state();
        let cids: Vec<_> = state.slots.iter().map(|slot| slot.state.cid()).collect();
        assert_eq!(cids, [None, Some(16), Some(17)]);
        let uid = 1;
        let mem = le(&[uid, 64 * MIB2, 32 * MIB2]);
        BarOp::command(Command::SlotAddMem, &mem)
            .apply(&mut device)
            .unwrap();
        BarOp::command(Command::SlotAddVcpu, &le(&[uid, 3]))
            .apply(&mut device)
            .unwrap();
        BarOp::command(Command::EnclaveStart, &le(&[uid, 16, 0]))
            .apply(&mut device)
            .unwrap();
        assert_eq!(read_reply(&mut device).rc.get(), 0, "CID 16 is free again");
        check_state_round_trip(&device).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn test_device_invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..60)) {
            let (mut device, irq) = enabled_device();
            for step in &steps {
                apply(&mut device, step);
                check_table(&device)?;
                check_signals(&mut device, &irq)?;
                check_reply(&mut device, step)?;
                check_state_round_trip(&device)?;
            }
        }
    }
}
