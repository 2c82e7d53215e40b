// SPDX-License-Identifier: Apache-2.0
//! BAR 3 register semantics, the Linux probe, interrupt discipline and MSI-X gating.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::{regs, Command, MsixVector, SlotAllocReq};
    use ne_device::config_space::{BAR_SIZE, MSIX_CONTROL, MSIX_ENABLE, MSIX_FUNCTION_MASK};
    use ne_device::error::errno;
    use ne_device::test_utils::{
        read_reply, read_u16, read_u32, read_u8, request, ring, setup_msix,
    };
    use ne_device::{msix, DeviceConfig, NePciDevice, RecordingInterrupts};

    /// A device at power-on, not probed, with its interrupts recorded and events logged.
    fn fresh() -> (TestDevice, RecordingInterrupts) {
        let irq = RecordingInterrupts::new();
        let device = NePciDevice::with_events(
            DeviceConfig::default(),
            irq.clone(),
            ne_device::SimulatedHypervisor::new(),
            std::sync::Arc::new(ne_device::DeviceLog::new()),
        )
        .unwrap();
        (device, irq)
    }

    #[test]
    fn test_linux_probe_sequence_succeeds_without_any_vector() {
        let (mut device, irq) = fresh();
        ne_device::test_utils::probe(&mut device);
        assert!(device.is_enabled());
        assert_eq!(irq.raised(), vec![]);
    }

    #[test]
    fn test_enable_reads_back_written_zero_and_one() {
        let (mut device, _) = fresh();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 0, "reset value");
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 1);
        device.write_bar(regs::ENABLE, &[0]).unwrap();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 0);
    }

    #[test]
    fn test_enable_other_values_are_ignored() {
        let (mut device, _) = fresh();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        device.write_bar(regs::ENABLE, &[0x80]).unwrap();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 1);
    }

    #[test]
    fn test_version_one_is_echoed_others_read_zero() {
        let (mut device, _) = fresh();
        assert_eq!(read_u16(&mut device, regs::VERSION), 0, "reset value");
        device
            .write_bar(regs::VERSION, &1u16.to_le_bytes())
            .unwrap();
        assert_eq!(read_u16(&mut device, regs::VERSION), 1);
        device
            .write_bar(regs::VERSION, &2u16.to_le_bytes())
            .unwrap();
        assert_eq!(read_u16(&mut device, regs::VERSION), 0);
        device
            .write_bar(regs::VERSION, &0x0101u16.to_le_bytes())
            .unwrap();
        assert_eq!(read_u16(&mut device, regs::VERSION), 0);
    }

    #[test]
    fn test_version_byte_write_selects_version_one() {
        let (mut device, _) = fresh();
        device.write_bar(regs::VERSION, &[1]).unwrap();
        assert_eq!(read_u16(&mut device, regs::VERSION), 1);
    }

    #[test]
    fn test_command_is_write_only_and_reads_zero() {
        let (mut device, _) = probed();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(read_u32(&mut device, regs::COMMAND), 0);
    }

    #[test]
    fn test_evtcnt_counts_replies_and_is_read_only() {
        let (mut device, _) = probed();
        assert_eq!(read_u32(&mut device, regs::EVTCNT), 0);
        ring(&mut device, Command::SlotCount.number());
        ring(&mut device, Command::SlotCount.number());
        device
            .write_bar(regs::EVTCNT, &u32::MAX.to_le_bytes())
            .unwrap();
        assert_eq!(read_u32(&mut device, regs::EVTCNT), regs::evtcnt(2, 0));
    }

    #[test]
    fn test_evtcnt_reply_counter_wraps_at_16_bits() {
        let (mut device, _) = probed();
        for _ in 0..0x1_0001 {
            ring(&mut device, Command::SlotCount.number());
        }
        assert_eq!(regs::evtcnt_reply(read_u32(&mut device, regs::EVTCNT)), 1);
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)] // values are taken mod 251
    fn test_send_data_reads_back_every_width_at_every_offset() {
        let (mut device, _) = fresh();
        for width in [1usize, 2, 4, 8] {
            for at in 0..=(regs::SEND_DATA_SIZE - width) {
                let offset = regs::SEND_DATA + at as u64;
                let value: Vec<u8> = (0..width).map(|i| ((at + i + width) % 251) as u8).collect();
                device.write_bar(offset, &value).unwrap();
                let mut back = vec![0; width];
                device.read_bar(offset, &mut back);
                assert_eq!(back, value, "width {width} at {offset:#x}");
            }
        }
    }

    #[test]
    fn test_recv_data_is_read_only() {
        let (mut device, _) = probed();
        ring(&mut device, Command::SlotCount.number());
        let before = read_reply(&mut device);
        device.write_bar(regs::RECV_DATA, &[0xAA; 8]).unwrap();
        assert_eq!(read_reply(&mut device), before);
    }

    #[test]
    fn test_reserved_bytes_read_zero_and_ignore_writes() {
        let (mut device, _) = fresh();
        for offset in [
            0x001u64, 0x008, 0x009, 0x00A, 0x00B, 0x1F0, 0x800, 0xFFF, 0x1FFF,
        ] {
            device.write_bar(offset, &[0xFF]).unwrap();
            assert_eq!(read_u8(&mut device, offset), 0, "{offset:#x}");
        }
        assert!(device.events().stats().invalid_accesses >= 9);
    }

    #[test]
    fn test_access_past_bar_end_reads_zero_and_is_ignored() {
        let (mut device, _) = fresh();
        let mut data = [0xAA; 8];
        device.read_bar(BAR_SIZE - 4, &mut data);
        assert_eq!(data, [0; 8]);
        device.write_bar(u64::MAX - 1, &[1; 4]).unwrap();
        assert_eq!(device.events().stats().invalid_accesses, 2);
    }

    #[test]
    fn test_eight_byte_write_over_enable_version_command_acts_on_each() {
        let (mut device, _) = fresh();
        setup_msix(&mut device);
        let mut bytes = [0u8; 8];
        bytes[0] = regs::ENABLE_ON;
        bytes[2..4].copy_from_slice(&1u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&Command::SlotCount.number().to_le_bytes());
        device.write_bar(regs::ENABLE, &bytes).unwrap();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 1);
        assert_eq!(read_u16(&mut device, regs::VERSION), 1);
        assert_eq!(
            device.events().stats().replies,
            1,
            "the doorbell rang after ENABLE"
        );
        assert_eq!(read_reply(&mut device).rc.get(), 0);
    }

    #[test]
    fn test_every_width_at_every_bar_offset_never_panics() {
        let (mut device, _) = probed();
        for offset in 0..BAR_SIZE + 16 {
            for width in [1usize, 2, 4, 8] {
                let mut bytes = [0x5A; 8];
                device.read_bar(offset, &mut bytes[..width]);
                if offset != regs::ENABLE {
                    device.write_bar(offset, &bytes[..width]).unwrap();
                }
            }
        }
        assert!(device.is_enabled());
    }

    #[test]
    fn test_doorbell_while_disabled_answers_enodev() {
        let (mut device, irq) = fresh();
        setup_msix(&mut device);
        let reply = request(&mut device, &SlotAllocReq::default());
        assert_eq!(reply.rc.get(), -errno::ENODEV);
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        assert!(device.slots().is_empty());
    }

    #[test]
    fn test_unknown_commands_answer_einval_with_one_vector() {
        let (mut device, irq) = probed();
        for command in [0u32, 12, 0xFFFF_FFFF] {
            ring(&mut device, command);
            assert_eq!(
                read_reply(&mut device).rc.get(),
                -errno::EINVAL,
                "{command}"
            );
        }
        assert_eq!(irq.count(MsixVector::Reply), 3);
    }

    #[test]
    fn test_reply_zeroes_recv_data_past_72_bytes() {
        let (mut device, _) = probed();
        ring(&mut device, Command::SlotCount.number());
        let mut window = [0xAA; regs::RECV_DATA_SIZE];
        device.read_bar(regs::RECV_DATA, &mut window);
        assert!(window.iter().all(|&b| b == 0));
    }

    #[test]
    fn test_msix_table_reads_back_and_pba_is_read_only() {
        let (mut device, _) = fresh();
        let entry = [0x11u8; 12];
        device.write_bar(msix::TABLE_OFFSET, &entry).unwrap();
        let mut back = [0; 12];
        device.read_bar(msix::TABLE_OFFSET, &mut back);
        assert_eq!(back, entry);
        device.write_bar(msix::PBA_OFFSET, &[0xFF; 8]).unwrap();
        assert_eq!(read_u32(&mut device, msix::PBA_OFFSET), 0);
    }

    #[test]
    fn test_masked_vector_waits_in_pba_until_unmasked() {
        let (mut device, irq) = probed();
        let reply_control = msix::TABLE_OFFSET + 12;
        device
            .write_bar(reply_control, &1u32.to_le_bytes())
            .unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(irq.raised(), vec![]);
        assert_eq!(read_u32(&mut device, msix::PBA_OFFSET), 1);
        device
            .write_bar(reply_control, &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        assert_eq!(read_u32(&mut device, msix::PBA_OFFSET), 0);
    }

    #[test]
    fn test_function_mask_holds_vectors_until_cleared() {
        let (mut device, irq) = probed();
        let control = MSIX_CONTROL as u64;
        device
            .write_config(control, &(MSIX_ENABLE | MSIX_FUNCTION_MASK).to_le_bytes())
            .unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(irq.raised(), vec![]);
        device
            .write_config(control, &MSIX_ENABLE.to_le_bytes())
            .unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
    }

    #[test]
    fn test_msix_disabled_holds_vectors() {
        let (mut device, irq) = fresh();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(irq.raised(), vec![]);
        setup_msix(&mut device);
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
    }

    #[test]
    fn test_without_gating_vectors_go_straight_to_the_sink() {
        let irq = RecordingInterrupts::new();
        let config = DeviceConfig {
            msix_gating: false,
            ..DeviceConfig::default()
        };
        let mut device = NePciDevice::new(config, irq.clone()).unwrap();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
    }

    #[test]
    fn test_disable_tears_down_every_slot_and_stops_enclaves() {
        let (mut device, irq) = probed();
        let (running, _) = running_slot(&mut device, 0, 1);
        let _init = alloc(&mut device).slot_uid.get();
        irq.take();
        device.write_bar(regs::ENABLE, &[regs::ENABLE_OFF]).unwrap();
        assert_eq!(read_u8(&mut device, regs::ENABLE), 0);
        assert!(device.slots().is_empty());
        assert!(!device.hypervisor().enclaves().contains_key(&running));
        assert_eq!(irq.raised(), vec![], "teardown raises nothing");
    }

    #[test]
    fn test_reenabled_device_accepts_same_memory_and_cpus_again() {
        let (mut device, _) = probed();
        running_slot(&mut device, 0, 1);
        device.write_bar(regs::ENABLE, &[0]).unwrap();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        let (uid, _) = running_slot(&mut device, 0, 1);
        assert_eq!(uid, 2, "uids are not reused after a teardown");
    }

    /// The invalid accesses the device has counted.
    fn invalid(device: &TestDevice) -> u64 {
        device.events().stats().invalid_accesses
    }

    #[test]
    fn test_only_accesses_that_touch_nothing_usable_count_as_invalid() {
        let (mut device, _) = fresh();
        let mut byte = [0u8; 1];
        let mut word = [0u8; 4];
        device.read_bar(regs::ENABLE, &mut byte);
        device.write_bar(regs::ENABLE, &[0]).unwrap();
        device
            .write_bar(regs::VERSION, &1u16.to_le_bytes())
            .unwrap();
        device.write_bar(regs::SEND_DATA, &[1; 4]).unwrap();
        device.read_bar(regs::RECV_DATA, &mut word);
        device.read_bar(msix::TABLE_OFFSET + 28, &mut word);
        device
            .write_bar(msix::TABLE_OFFSET + 28, &[1, 0, 0, 0])
            .unwrap();
        device.read_bar(msix::PBA_OFFSET + 4, &mut word);
        assert_eq!(invalid(&device), 0, "each of these touched a register");
        let unused = [
            msix::TABLE_OFFSET + msix::TABLE_BYTES as u64,
            msix::PBA_OFFSET - 4,
            msix::PBA_OFFSET + msix::PBA_BYTES as u64,
            regs::REGISTERS_END,
        ];
        for (n, offset) in (1..).zip(unused) {
            device.read_bar(offset, &mut word);
            assert_eq!(word, [0; 4], "{offset:#x}");
            assert_eq!(invalid(&device), 2 * n - 1, "read at {offset:#x}");
            device.write_bar(offset, &[0xff; 4]).unwrap();
            assert_eq!(invalid(&device), 2 * n, "write at {offset:#x}");
        }
    }

    #[test]
    fn test_writes_to_read_only_registers_count_as_invalid_and_change_nothing() {
        let (mut device, _) = probed();
        let before = read_u32(&mut device, regs::EVTCNT);
        device.write_bar(regs::EVTCNT, &[0xff; 4]).unwrap();
        device.write_bar(regs::RECV_DATA, &[0xff; 4]).unwrap();
        device.write_bar(msix::PBA_OFFSET, &[0xff; 4]).unwrap();
        assert_eq!(invalid(&device), 3);
        assert_eq!(read_u32(&mut device, regs::EVTCNT), before);
        assert_eq!(read_u32(&mut device, regs::RECV_DATA), 0);
        assert_eq!(read_u32(&mut device, msix::PBA_OFFSET), 0);
    }

    #[test]
    fn test_zero_length_accesses_do_nothing_and_count_as_invalid() {
        let (mut device, irq) = probed();
        device.read_bar(regs::ENABLE, &mut []);
        device.write_bar(regs::COMMAND, &[]).unwrap();
        device.write_bar(regs::ENABLE, &[]).unwrap();
        assert_eq!(invalid(&device), 3);
        assert_eq!(device.events().stats().doorbells, 0, "no doorbell");
        assert!(device.is_enabled());
        assert_eq!(irq.raised(), vec![]);
    }

    #[test]
    fn test_an_access_that_straddles_the_bar_end_is_refused_whole() {
        let (mut device, _) = fresh();
        let pba_and_beyond = BAR_SIZE - msix::PBA_OFFSET + 1;
        let mut data = vec![0xAA; usize::try_from(pba_and_beyond).unwrap()];
        // Mask vector 0 and leave a pending bit, so that the PBA would read non-zero.
        setup_msix(&mut device);
        device
            .write_bar(msix::TABLE_OFFSET + 12, &1u32.to_le_bytes())
            .unwrap();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(
            read_u8(&mut device, msix::PBA_OFFSET),
            1,
            "vector 0 pending"
        );
        let before = invalid(&device);
        device.read_bar(msix::PBA_OFFSET, &mut data);
        assert!(data.iter().all(|&b| b == 0), "nothing is read");
        device.write_bar(BAR_SIZE - 1, &[0; 2]).unwrap();
        assert_eq!(invalid(&device), before + 2);
        let mut last = [0xAA; 1];
        device.read_bar(BAR_SIZE - 1, &mut last);
        assert_eq!(last, [0], "the last byte itself is inside");
        assert_eq!(invalid(&device), before + 3, "and reserved");
    }

    #[test]
    fn test_interrupts_stay_quiet_while_msix_is_disabled_even_when_vectors_are_unmasked() {
        let (mut device, irq) = fresh();
        setup_msix(&mut device);
        let control = MSIX_CONTROL as u64;
        device.write_config(control, &0u16.to_le_bytes()).unwrap();
        device.write_bar(regs::ENABLE, &[1]).unwrap();
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(irq.raised(), vec![], "MSI-X off: nothing is sent");
        assert_eq!(
            read_u8(&mut device, msix::PBA_OFFSET),
            1,
            "but it is pending"
        );
        device
            .write_config(control, &MSIX_ENABLE.to_le_bytes())
            .unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply]);
        assert_eq!(read_u8(&mut device, msix::PBA_OFFSET), 0);
    }

    #[test]
    fn test_vector_1_has_its_own_mask_and_pending_bit() {
        let (mut device, irq) = probed();
        let (uid, _) = running_slot(&mut device, 0, 1);
        irq.take();
        let vector_1_control = msix::TABLE_OFFSET + msix::ENTRY_BYTES as u64 + 12;
        device
            .write_bar(vector_1_control, &1u32.to_le_bytes())
            .unwrap();
        assert_eq!(read_u32(&mut device, vector_1_control), 1);
        assert!(device.hypervisor_mut().crash(uid));
        device.process_hypervisor_events().unwrap();
        assert_eq!(irq.raised(), vec![], "vector 1 masked");
        assert_eq!(
            read_u8(&mut device, msix::PBA_OFFSET),
            0b10,
            "bit 1 pending"
        );
        ring(&mut device, Command::SlotCount.number());
        assert_eq!(
            irq.raised(),
            vec![MsixVector::Reply],
            "vector 0 is not masked"
        );
        device
            .write_bar(vector_1_control, &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(irq.raised(), vec![MsixVector::Reply, MsixVector::Event]);
        assert_eq!(read_u8(&mut device, msix::PBA_OFFSET), 0);
    }
}
