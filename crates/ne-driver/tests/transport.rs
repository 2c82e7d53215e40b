// SPDX-License-Identifier: Apache-2.0
//! The register-level protocol: probe, the disable sequence, and `ne_do_request` with its
//! argument checks, chunked copies, reply recognition and timeouts.

mod common;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::common::*;
    use ne_abi::{regs, Command, MsixVector, SlotInfoReq};
    use ne_device::test_utils::memcpy_fromio;
    use ne_driver::inproc::InProcBar;
    use ne_driver::{errno, DriverConfig, Error, NeDriver, ProbeError};
    use zerocopy::IntoBytes;

    /// A driver probed over `bar` after `quirks` set it up; the probe's result.
    fn probe_with(quirks: impl FnOnce(&SpyBar)) -> (Result<Driver, Error>, SpyBar) {
        let (device, _, vectors) = device(device_config());
        let inner = InProcBar::new(device);
        assert!(format!("{inner:?}").contains("InProcBar"));
        let bar = SpyBar::new(inner);
        quirks(&bar);
        let driver = NeDriver::probe(bar.clone(), vectors, topology(), short_waits());
        (driver, bar)
    }

    #[test]
    fn test_probe_disables_then_selects_version_1_then_enables() {
        let (driver, bar) = probe_with(|_| {});
        let driver = driver.unwrap();
        let writes: Vec<(u64, usize)> = bar
            .accesses()
            .iter()
            .filter(|access| access.write)
            .map(|access| (access.offset, access.len))
            .collect();
        assert_eq!(
            writes,
            [(regs::ENABLE, 1), (regs::VERSION, 2), (regs::ENABLE, 1)]
        );
        drop(driver);
    }

    #[test]
    fn test_probe_fails_when_version_is_not_echoed_or_enable_does_not_stick() {
        let (driver, _) = probe_with(|bar| bar.fake_version(0));
        assert_eq!(
            driver.unwrap_err(),
            Error::Probe(ProbeError::Version { read: 0 })
        );
        let (driver, _) = probe_with(|bar| bar.fake_enable(0));
        let error = driver.unwrap_err();
        assert_eq!(error, Error::Probe(ProbeError::Enable { read: 0 }));
        assert_eq!(error.errno(), errno::EIO);
    }

    #[test]
    fn test_remove_disables_the_device_and_reports_it() {
        let rig = rig();
        assert!(rig.device().is_enabled());
        let device = Arc::clone(&rig.device);
        assert!(rig.driver.remove());
        assert!(!device.lock().unwrap().is_enabled());
    }

    #[test]
    fn test_drop_disables_the_device() {
        let rig = rig();
        let device = Arc::clone(&rig.device);
        drop(rig.driver);
        assert!(!device.lock().unwrap().is_enabled());
    }

    #[test]
    fn test_a_device_slow_to_disable_is_polled_until_it_reads_0() {
        let rig = rig();
        rig.bar.stick_enable(3);
        let asked = Instant::now();
        assert!(rig.driver.remove(), "it read 0 on the fourth poll");
        assert_eq!(rig.bar.stuck_reads_left(), 0, "every stuck read was made");
        assert!(asked.elapsed() >= ne_driver::DISABLE_POLL_INTERVAL * 3);
    }

    #[test]
    fn test_a_device_that_never_disables_is_given_up_on_after_the_timeout() {
        let rig = rig();
        rig.bar.stick_enable(u32::MAX);
        let asked = Instant::now();
        assert!(!rig.driver.remove());
        let waited = asked.elapsed();
        assert!(waited >= short_waits().disable_timeout, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn test_commands_outside_1_to_11_are_einval_and_touch_no_register() {
        let rig = rig();
        rig.bar.clear();
        for command in [0, 12, u32::MAX] {
            let error = rig.driver.request(command, &[]).unwrap_err();
            assert_eq!(error.errno(), errno::EINVAL, "command {command}");
        }
        assert_eq!(rig.bar.accesses(), []);
    }

    #[test]
    fn test_a_request_of_240_bytes_goes_whole_and_241_is_einval() {
        let rig = rig();
        let payload: Vec<u8> = (1..=240u8).collect();
        // SLOT_COUNT ignores its payload: the 240 bytes must still land in NE_SEND_DATA.
        let reply = rig
            .driver
            .request(Command::SlotCount.number(), &payload)
            .unwrap();
        assert_eq!(reply.rc.get(), 0);
        let landed = memcpy_fromio(&mut rig.device(), regs::SEND_DATA, 240);
        assert_eq!(landed, payload);
        rig.bar.clear();
        let too_long = [0u8; 241];
        let error = rig
            .driver
            .request(Command::SlotCount.number(), &too_long)
            .unwrap_err();
        assert_eq!(error.errno(), errno::EINVAL);
        assert_eq!(rig.bar.accesses(), [], "a failed check touches no register");
    }

    #[test]
    fn test_payloads_of_4n_plus_3_bytes_are_copied_in_words_a_half_and_a_byte() {
        let rig = rig();
        for len in [3usize, 7, 11, 239] {
            let payload: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i % 256).unwrap() ^ 0x5a)
                .collect();
            rig.bar.clear();
            rig.driver
                .request(Command::SlotCount.number(), &payload)
                .unwrap();
            let sends: Vec<(u64, usize)> = rig
                .bar
                .accesses()
                .iter()
                .filter(|a| a.write && a.offset >= regs::SEND_DATA && a.offset < regs::RECV_DATA)
                .map(|a| (a.offset - regs::SEND_DATA, a.len))
                .collect();
            let words = len / 4;
            let expected: Vec<(u64, usize)> = (0..words)
                .map(|i| ((i * 4) as u64, 4))
                .chain([((words * 4) as u64, 2), ((words * 4 + 2) as u64, 1)])
                .collect();
            assert_eq!(sends, expected, "{len} bytes");
            let landed = memcpy_fromio(&mut rig.device(), regs::SEND_DATA, len);
            assert_eq!(landed, payload, "{len} bytes");
        }
    }

    #[test]
    fn test_the_reply_is_read_from_recv_data_in_chunks_of_its_72_bytes() {
        let rig = rig();
        rig.bar.clear();
        rig.driver
            .request(Command::SlotCount.number(), &[])
            .unwrap();
        let reads: Vec<(u64, usize)> = rig
            .bar
            .accesses()
            .iter()
            .filter(|a| !a.write && a.offset >= regs::RECV_DATA)
            .map(|a| (a.offset - regs::RECV_DATA, a.len))
            .collect();
        let expected: Vec<(u64, usize)> = (0..18).map(|i| (i * 4, 4)).collect();
        assert_eq!(reads, expected);
    }

    #[test]
    fn test_a_negative_rc_is_the_device_error_with_its_errno() {
        let rig = rig();
        let req = SlotInfoReq::default();
        let error = rig
            .driver
            .request(Command::SlotInfo.number(), req.as_bytes())
            .unwrap_err();
        assert_eq!(
            error,
            Error::Device {
                command: Command::SlotInfo,
                rc: -errno::ENOENT
            }
        );
        assert_eq!(error.errno(), errno::ENOENT);
    }

    #[test]
    fn test_a_dropped_reply_times_out_and_the_next_command_gets_its_own_reply() {
        let rig = rig();
        rig.device()
            .faults_mut()
            .drop_next(Some(Command::SlotCount), 1)
            .unwrap();
        let asked = Instant::now();
        let error = rig
            .driver
            .request(Command::SlotCount.number(), &[])
            .unwrap_err();
        assert_eq!(
            error,
            Error::Timeout {
                command: Command::SlotCount,
                timeout: short_waits().reply_timeout
            }
        );
        assert_eq!(error.errno(), errno::ETIMEDOUT);
        assert!(asked.elapsed() >= short_waits().reply_timeout);
        let reply = rig
            .driver
            .request(Command::SlotCount.number(), &[])
            .unwrap();
        assert_eq!(reply.rc.get(), 0);
    }

    #[test]
    fn test_a_stray_vector_0_is_not_taken_for_the_reply() {
        let rig = rig();
        // SLOT_ALLOC's reply (slot count 0) stays in NE_RECV_DATA until the next one.
        let _enclave = rig.driver.create_vm().unwrap();
        rig.device()
            .faults_mut()
            .delay_next(Some(Command::SlotCount), 1)
            .unwrap();
        let device = Arc::clone(&rig.device);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            device
                .lock()
                .unwrap()
                .raise_spurious(MsixVector::Reply)
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            device.lock().unwrap().release_held_reply().unwrap()
        });
        let reply = rig
            .driver
            .request(Command::SlotCount.number(), &[])
            .unwrap();
        assert!(
            releaser.join().unwrap(),
            "the reply was held until released"
        );
        assert_eq!(reply.rc.get(), 0);
        assert_eq!(
            reply.slot_count.get(),
            1,
            "SLOT_COUNT's own reply, not the stale one"
        );
    }

    #[test]
    fn test_a_reply_whose_vector_never_comes_is_still_found_by_its_counter() {
        // MSI-X masked by the driver's side: the reply lands, vector 0 never arrives.
        let rig = rig_with(
            device_config(),
            DriverConfig {
                reply_timeout: Duration::from_millis(100),
                ..short_waits()
            },
        );
        rig.device()
            .write_config(
                ne_device::config_space::MSIX_CONTROL as u64,
                &(ne_device::config_space::MSIX_ENABLE
                    | ne_device::config_space::MSIX_FUNCTION_MASK)
                    .to_le_bytes(),
            )
            .unwrap();
        let reply = rig
            .driver
            .request(Command::SlotCount.number(), &[])
            .unwrap();
        assert_eq!(reply.rc.get(), 0);
    }

    #[test]
    fn test_the_default_waits_are_linux_s_120_s() {
        let config = DriverConfig::default();
        assert_eq!(config.reply_timeout, Duration::from_secs(120));
        assert_eq!(config.disable_timeout, Duration::from_secs(120));
    }
}
