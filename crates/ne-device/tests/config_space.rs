// SPDX-License-Identifier: Apache-2.0
//! Configuration space: ids, BAR 3 sizing, the MSI-X capability, read-only bits.

#[cfg(test)]
mod tests {
    use ne_abi::pci;
    use ne_device::config_space::{BAR3, CONFIG_SPACE_SIZE, MSIX_CAP_OFFSET};
    use ne_device::{msix, DeviceConfig, NePciDevice, NoInterrupts, RecordingInterrupts};

    fn device() -> NePciDevice<NoInterrupts> {
        NePciDevice::new(DeviceConfig::default(), NoInterrupts).unwrap()
    }

    fn read(device: &NePciDevice<NoInterrupts>, offset: u64, len: usize) -> u64 {
        let mut bytes = [0; 8];
        device.read_config(offset, &mut bytes[..len]);
        u64::from_le_bytes(bytes)
    }

    #[test]
    fn test_config_ids_match_linux_driver_table() {
        let device = device();
        assert_eq!(read(&device, 0x00, 2), u64::from(pci::VENDOR_ID));
        assert_eq!(read(&device, 0x02, 2), u64::from(pci::DEVICE_ID));
        assert_eq!(read(&device, 0x00, 4), 0xe4c1_1d0f);
    }

    #[test]
    fn test_config_header_is_type0_with_class_and_capability_list() {
        let device = device();
        assert_eq!(read(&device, 0x0E, 1), 0x00, "header type 0");
        assert_eq!(read(&device, 0x09, 3), 0x08_80_00, "class code");
        assert_eq!(read(&device, 0x06, 2) & 0x10, 0x10, "capability list");
        assert_eq!(read(&device, 0x34, 1), MSIX_CAP_OFFSET as u64);
        assert_eq!(read(&device, 0x3D, 1), 0, "no INTx pin");
    }

    #[test]
    fn test_config_ids_are_read_only() {
        let mut device = device();
        device.write_config(0x00, &[0xFF; 4]).unwrap();
        device.write_config(0x08, &[0xFF; 4]).unwrap();
        assert_eq!(read(&device, 0x00, 4), 0xe4c1_1d0f);
        assert_eq!(read(&device, 0x09, 3), 0x08_80_00);
    }

    #[test]
    fn test_bar3_all_ones_probe_reads_8k_memory_bar() {
        let mut device = device();
        device
            .write_config(BAR3 as u64, &u32::MAX.to_le_bytes())
            .unwrap();
        let sized = u32::try_from(read(&device, BAR3 as u64, 4)).unwrap();
        assert_eq!(sized & 0xF, 0, "32-bit non-prefetchable memory");
        assert_eq!((!(sized & !0xF)).wrapping_add(1), 0x2000, "8 KiB");
    }

    #[test]
    fn test_bar3_holds_assigned_address() {
        assert_eq!(BAR3, 0x1C, "BAR 3 is the fourth BAR register");
        let mut device = device();
        device
            .write_config(BAR3 as u64, &0xfebf_e000u32.to_le_bytes())
            .unwrap();
        assert_eq!(read(&device, BAR3 as u64, 4), 0xfebf_e000);
    }

    #[test]
    fn test_other_bars_are_absent() {
        let mut device = device();
        for bar in [0usize, 1, 2, 4, 5] {
            let offset = (0x10 + 4 * bar) as u64;
            device
                .write_config(offset, &u32::MAX.to_le_bytes())
                .unwrap();
            assert_eq!(read(&device, offset, 4), 0, "BAR {bar}");
        }
        device.write_config(0x30, &u32::MAX.to_le_bytes()).unwrap();
        assert_eq!(read(&device, 0x30, 4), 0, "no expansion ROM");
    }

    #[test]
    fn test_msix_capability_has_two_vectors_in_bar3_clear_of_registers() {
        let device = device();
        let cap = MSIX_CAP_OFFSET as u64;
        assert_eq!(read(&device, cap, 1), 0x11, "MSI-X capability id");
        assert_eq!(read(&device, cap + 1, 1), 0, "last capability");
        assert_eq!(read(&device, cap + 2, 2) & 0x7FF, 1, "table size N-1 = 1");
        let table = read(&device, cap + 4, 4);
        let pba = read(&device, cap + 8, 4);
        assert_eq!(table & 7, u64::from(pci::BAR_INDEX));
        assert_eq!(pba & 7, u64::from(pci::BAR_INDEX));
        assert_eq!(table & !7, msix::TABLE_OFFSET);
        assert_eq!(pba & !7, msix::PBA_OFFSET);
        const { assert!(msix::TABLE_OFFSET >= 0x1F0 && msix::PBA_OFFSET >= 0x1F0) };
    }

    #[test]
    fn test_msix_control_only_enable_and_mask_are_writable() {
        let mut device = device();
        let control = (MSIX_CAP_OFFSET + 2) as u64;
        device
            .write_config(control, &u16::MAX.to_le_bytes())
            .unwrap();
        assert_eq!(read(&device, control, 2), 0xC001);
        device.write_config(control, &0u16.to_le_bytes()).unwrap();
        assert_eq!(read(&device, control, 2), 0x0001);
    }

    #[test]
    fn test_command_register_keeps_memory_and_master_but_not_io() {
        let mut device = device();
        device.write_config(0x04, &0xFFFFu16.to_le_bytes()).unwrap();
        assert_eq!(read(&device, 0x04, 2), 0x0546);
    }

    #[test]
    fn test_config_reads_past_256_bytes_are_zero_and_writes_ignored() {
        let mut device = device();
        device
            .write_config(CONFIG_SPACE_SIZE as u64 - 2, &[0xFF; 8])
            .unwrap();
        assert_eq!(read(&device, CONFIG_SPACE_SIZE as u64 - 2, 8), 0);
        assert_eq!(read(&device, u64::MAX - 3, 8), 0);
    }

    #[test]
    fn test_config_every_width_at_every_offset_never_panics() {
        let mut device =
            NePciDevice::new(DeviceConfig::default(), RecordingInterrupts::new()).unwrap();
        for offset in 0..CONFIG_SPACE_SIZE as u64 + 16 {
            for width in [1usize, 2, 4, 8] {
                let mut bytes = [0; 8];
                device.read_config(offset, &mut bytes[..width]);
                device.write_config(offset, &bytes[..width]).unwrap();
            }
        }
        let mut ids = [0; 4];
        device.read_config(0, &mut ids);
        assert_eq!(u32::from_le_bytes(ids), 0xe4c1_1d0f);
    }

    #[test]
    fn test_cache_line_latency_and_interrupt_line_are_writable_bytes() {
        let mut device = device();
        for offset in [0x0Cu64, 0x0D, 0x3C] {
            device.write_config(offset, &[0xA5]).unwrap();
            assert_eq!(read(&device, offset, 1), 0xA5, "{offset:#x}");
        }
        device.write_config(0x3D, &[0xFF]).unwrap();
        assert_eq!(read(&device, 0x3D, 1), 0, "interrupt pin: no INTx");
    }

    #[test]
    fn test_a_write_changes_writable_bits_only_both_ways() {
        let mut device = device();
        device.write_config(0x04, &0x0546u16.to_le_bytes()).unwrap();
        device.write_config(0x04, &0x0100u16.to_le_bytes()).unwrap();
        assert_eq!(read(&device, 0x04, 2), 0x0100, "set bits are cleared too");
        device.write_config(0x04, &0xFAB9u16.to_le_bytes()).unwrap();
        assert_eq!(read(&device, 0x04, 2), 0x0000, "read-only bits stay 0");
    }
}
