// SPDX-License-Identifier: Apache-2.0
//! Events: vector 1 wakes the event work, which asks `SLOT_INFO` of each running enclave and
//! flags those that stopped (POLLHUP); the `Vectors` latch the waits sleep on.

mod common;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::common::*;
    use ne_abi::{Command, EnclaveState, MsixVector};
    use ne_driver::{VectorCounts, Vectors};

    #[test]
    fn test_an_enclave_that_stops_by_itself_is_seen_as_an_event() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        enclave.start(0, 0).unwrap();
        assert!(!enclave.has_event());
        assert!(
            !enclave.wait_event(Duration::from_millis(20)),
            "nothing yet"
        );
        assert!(rig.device().hypervisor_mut().crash(enclave.slot_uid()));
        rig.device().process_hypervisor_events().unwrap();
        assert!(enclave.wait_event(Duration::from_secs(5)));
        assert!(enclave.has_event(), "the event stays");
        assert_eq!(enclave.info().state, EnclaveState::Stopped.value());
        let before = rig.commands().len();
        drop(enclave);
        assert_eq!(
            rig.commands()[before..],
            [Command::SlotFree.number()],
            "a stopped enclave is only freed"
        );
    }

    #[test]
    fn test_the_event_work_asks_only_running_enclaves_newest_first() {
        let rig = rig();
        let idle = rig.driver.create_vm().unwrap();
        let older = ready_enclave(&rig);
        older.start(0, 0).unwrap();
        let newer = rig.driver.create_vm().unwrap();
        let memory = Hugepages::contiguous(USER_BASE, 2 << 30, 32);
        newer
            .set_user_memory_region(region(USER_BASE, MIB64), &memory)
            .unwrap();
        newer.add_vcpu(0).unwrap();
        newer.add_vcpu(0).unwrap();
        newer.start(0, 0).unwrap();
        let before = rig.commands().len();
        rig.driver.handle_event();
        assert_eq!(
            rig.commands()[before..],
            [Command::SlotInfo.number(), Command::SlotInfo.number()],
            "the INIT enclave is not asked"
        );
        assert!(!older.has_event() && !newer.has_event() && !idle.has_event());
    }

    #[test]
    fn test_a_failed_slot_info_leaves_the_enclave_as_it_was() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        enclave.start(0, 0).unwrap();
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotInfo), 1, -ne_driver::errno::EIO)
            .unwrap();
        mask_vectors(&rig);
        assert!(rig.device().hypervisor_mut().exit(enclave.slot_uid()));
        rig.device().process_hypervisor_events().unwrap();
        rig.driver.handle_event();
        assert!(!enclave.has_event());
        assert_eq!(enclave.info().state, EnclaveState::Running.value());
        rig.driver.handle_event();
        assert!(enclave.has_event(), "the next pass sees it");
    }

    /// Masks the device's MSI-X function, so that only explicit event work runs.
    fn mask_vectors(rig: &Rig) {
        use ne_device::config_space::{MSIX_CONTROL, MSIX_ENABLE, MSIX_FUNCTION_MASK};
        let control = MSIX_ENABLE | MSIX_FUNCTION_MASK;
        rig.device()
            .write_config(MSIX_CONTROL as u64, &control.to_le_bytes())
            .unwrap();
    }

    #[test]
    fn test_vectors_count_each_vector_apart() {
        let vectors = Vectors::new();
        vectors.raise(MsixVector::Reply);
        vectors.raise(MsixVector::Event);
        vectors.raise(MsixVector::Event);
        let counts = vectors.counts();
        assert_eq!(
            counts,
            VectorCounts {
                reply: 1,
                event: 2,
                closed: false
            }
        );
        assert_eq!(counts.of(MsixVector::Reply), 1);
        assert_eq!(counts.of(MsixVector::Event), 2);
    }

    #[test]
    fn test_a_wait_returns_at_once_when_raised_beyond_and_at_the_deadline_otherwise() {
        let vectors = Vectors::new();
        vectors.raise(MsixVector::Reply);
        let now = Instant::now();
        assert_eq!(vectors.wait_beyond(MsixVector::Reply, 0, None).reply, 1);
        let deadline = Instant::now() + Duration::from_millis(50);
        let counts = vectors.wait_beyond(MsixVector::Reply, 1, Some(deadline));
        assert_eq!(counts.reply, 1);
        assert!(Instant::now() >= deadline);
        assert!(now.elapsed() < Duration::from_secs(5));
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            vectors.wait_beyond(MsixVector::Event, 0, Some(past)).event,
            0
        );
    }

    #[test]
    fn test_a_waiter_wakes_on_the_vector_it_waits_for_and_on_close() {
        let vectors = Arc::new(Vectors::new());
        let waiter = {
            let vectors = Arc::clone(&vectors);
            std::thread::spawn(move || vectors.wait_beyond(MsixVector::Event, 0, None))
        };
        std::thread::sleep(Duration::from_millis(20));
        vectors.raise(MsixVector::Reply);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "vector 0 does not wake a vector-1 waiter"
        );
        vectors.raise(MsixVector::Event);
        assert_eq!(waiter.join().unwrap().event, 1);
        let closed = {
            let vectors = Arc::clone(&vectors);
            std::thread::spawn(move || vectors.wait_beyond(MsixVector::Event, 1, None))
        };
        std::thread::sleep(Duration::from_millis(20));
        vectors.close();
        let counts = closed.join().unwrap();
        assert!(counts.closed);
        assert_eq!(counts.event, 1);
    }

    #[test]
    fn test_remove_ends_the_event_worker() {
        let rig = rig();
        let asked = Instant::now();
        assert!(rig.driver.remove(), "remove joins the worker and returns");
        assert!(asked.elapsed() < Duration::from_secs(5));
    }
}
