// SPDX-License-Identifier: Apache-2.0
//! The enclave ioctls' conformance list (`ne_parent::conformance`) on the emulated parent,
//! one test per case, and the cases only an emulated parent can show: what reaches the
//! device, limits set small, the transport's timeouts and stray vectors.

mod common;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::common::*;
    use ne_abi::NeError;
    use ne_driver::errno::EPERM;
    use ne_parent::conformance::{self, Verdict};
    use ne_parent::{AddressSpace, ParentEnclave, HUGEPAGE_BYTES};

    /// Runs one conformance case on a fresh default parent and fails on a difference.
    fn run_case(name: &str) {
        let parent = parent();
        let case = conformance::cases::<ne_parent::Parent>()
            .into_iter()
            .find(|case| case.name == name)
            .expect("the case exists");
        match (case.run)(&parent) {
            Ok(Verdict::Passed(_)) => {}
            Ok(Verdict::NotApplicable(why)) => {
                panic!("{name} cannot run on the default parent: {why}")
            }
            Err(difference) => panic!("{name}: {difference}"),
        }
    }

    macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                run_case(stringify!($case));
            }
        )*
    };
}

    mod conformance_list {
        use super::run_case;

        conformance_tests![
            memory_at_address_zero_is_efault,
            memory_unaligned_address_is_unaligned_mem_region_addr,
            memory_half_page_size_is_invalid_mem_region_size,
            memory_double_the_mapping_is_efault,
            memory_in_kernel_space_or_wrapping_is_invalid_mem_region_addr,
            memory_same_region_twice_is_mem_region_already_used,
            memory_bad_flags_is_invalid_flag_value,
            memory_not_hugepage_backed_is_mem_not_huge_page,
            vcpu_auto_picks_the_lowest_pool_cpu,
            vcpu_beyond_the_parent_cpus_is_invalid_vcpu,
            vcpu_twice_is_vcpu_already_used,
            vcpu_outside_the_pool_is_vcpu_not_in_cpu_pool,
            vcpu_after_the_whole_pool_is_no_cpus_avail_in_pool,
            vcpu_of_a_core_another_enclave_claimed_is_not_in_pool,
            image_load_info_is_8_mib_and_checks_flags,
            start_without_memory_is_no_mem_regions_added,
            start_below_64_mib_is_enclave_mem_min_size,
            start_without_vcpus_is_no_vcpus_added,
            start_without_a_cores_sibling_is_full_cores_not_used,
            start_bad_flags_and_reserved_cids_are_invalid,
            start_twice_and_setup_after_start_are_not_in_init_state,
            ended_enclave_is_seen_as_pollhup,
        ];
    }

    #[test]
    fn test_conformance_list_has_a_test_per_case() {
        assert_eq!(conformance::cases::<ne_parent::Parent>().len(), 22);
    }

    /// Asserts `result` is `NE_ERR` `expected` and that no command reached the device.
    fn assert_ne_err<T: std::fmt::Debug>(
        parent: &ne_parent::Parent,
        result: impl FnOnce() -> ne_driver::Result<T>,
        expected: NeError,
    ) {
        let before = doorbells(parent);
        let error = result().unwrap_err();
        assert_eq!(error.ne_error(), Some(expected), "{error}");
        assert_eq!(
            doorbells(parent),
            before,
            "{expected:?} must be decided before the device"
        );
    }

    /// A parent of 1 GiB shaped otherwise by `config`.
    fn small_parent(config: ne_parent::ParentConfig) -> ne_parent::Parent {
        ne_parent::Parent::new(ne_parent::ParentConfig {
            ram_mib: 1024,
            ..config
        })
        .unwrap()
    }

    fn enclave(parent: &ne_parent::Parent) -> ParentEnclave {
        parent.driver().create_vm().unwrap()
    }

    #[test]
    fn test_checks_linux_makes_first_never_reach_the_device() {
        let parent = parent();
        let enclave = enclave(&parent);
        let mut memory: AddressSpace = parent.address_space();
        let addr = memory.mmap_hugepages(2 * HUGEPAGE_BYTES, 0).unwrap();
        assert_ne_err(
            &parent,
            || enclave.set_user_memory_region(region(addr + 4096, HUGEPAGE_BYTES), &memory),
            NeError::UnalignedMemRegionAddr,
        );
        assert_ne_err(&parent, || enclave.add_vcpu(8), NeError::InvalidVcpu);
        assert_ne_err(&parent, || enclave.add_vcpu(4), NeError::VcpuNotInCpuPool);
        assert_ne_err(
            &parent,
            || enclave.image_load_info(2),
            NeError::InvalidFlagValue,
        );
        assert_ne_err(&parent, || enclave.start(2, 0), NeError::InvalidFlagValue);
        assert_ne_err(&parent, || enclave.start(0, 3), NeError::InvalidEnclaveCid);
        assert_ne_err(&parent, || enclave.start(0, 0), NeError::NoMemRegionsAdded);
    }

    #[test]
    fn test_memory_contiguous_pages_in_one_region_merge_into_one_command() {
        let parent = parent();
        let enclave = enclave(&parent);
        let mut memory = parent.address_space();
        let addr = memory.mmap_hugepages(8 * HUGEPAGE_BYTES, 0).unwrap();
        enclave
            .set_user_memory_region(region(addr, 8 * HUGEPAGE_BYTES), &memory)
            .unwrap();
        let info = enclave.info();
        assert_eq!(
            info.nr_mem_regions, 1,
            "eight contiguous pages are one SLOT_ADD_MEM"
        );
        assert_eq!(info.mem_size, 8 * HUGEPAGE_BYTES);
    }

    #[test]
    fn test_memory_beyond_region_limit_is_mem_max_regions() {
        let parent = small_parent(ne_parent::ParentConfig {
            max_mem_regions: 2,
            ..ne_parent::ParentConfig::default()
        });
        let enclave = enclave(&parent);
        let mut memory = parent.address_space();
        add_memory(&enclave, &mut memory, 4);
        let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
        assert_ne_err(
            &parent,
            || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory),
            NeError::MemMaxRegions,
        );
    }

    // NE_ADD_VCPU

    #[test]
    fn test_vcpu_auto_picks_lowest_pool_cpu_and_claims_its_core() {
        let parent = parent();
        let enclave = enclave(&parent);
        assert_eq!(enclave.add_vcpu(0).unwrap(), 1);
        assert_eq!(
            enclave.add_vcpu(0).unwrap(),
            5,
            "the sibling of CPU 1 comes next"
        );
        assert_eq!(enclave.add_vcpu(0).unwrap(), 2);
    }

    #[test]
    fn test_create_vm_without_pool_is_no_cpus_avail_in_pool() {
        let parent = small_parent(ne_parent::ParentConfig {
            cpu_pool: None,
            ..ne_parent::ParentConfig::default()
        });
        assert_ne_err(
            &parent,
            || parent.driver().create_vm(),
            NeError::NoCpusAvailInPool,
        );
    }

    #[test]
    fn test_cpu_pool_cannot_change_while_an_enclave_exists() {
        let parent = parent();
        let _enclave = enclave(&parent);
        assert_eq!(
            parent.driver().set_cpu_pool("1,5").unwrap_err().errno(),
            EPERM
        );
    }

    // NE_GET_IMAGE_LOAD_INFO

    #[test]
    fn test_device_that_never_answers_times_out_and_next_command_works() {
        let parent = small_parent(ne_parent::ParentConfig {
            reply_timeout: Duration::from_millis(200),
            ..ne_parent::ParentConfig::default()
        });
        parent
            .device()
            .faults_mut()
            .drop_next(Some(ne_abi::Command::SlotAlloc), 1)
            .unwrap();
        let error = parent.driver().create_vm().unwrap_err();
        assert!(matches!(error, ne_driver::Error::Timeout { .. }), "{error}");
        assert_eq!(error.errno(), ne_driver::errno::ETIMEDOUT);
        let enclave = parent.driver().create_vm().unwrap();
        assert_ne!(enclave.slot_uid(), 0);
    }

    #[test]
    fn test_stray_vector_zero_while_waiting_is_not_taken_for_the_reply() {
        let parent = std::sync::Arc::new(parent());
        parent
            .device()
            .faults_mut()
            .delay_next(Some(ne_abi::Command::SlotAlloc), 1)
            .unwrap();
        let creating = {
            let parent = std::sync::Arc::clone(&parent);
            std::thread::spawn(move || parent.driver().create_vm().map(|e| e.slot_uid()))
        };
        // Once the driver rang and waits, a stray vector 0 arrives; RECV_DATA still holds
        // nothing, so a driver that took the vector for the reply would return slot uid 0.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while doorbells(&parent) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the driver never rang"
            );
            std::thread::yield_now();
        }
        parent
            .device()
            .raise_spurious(ne_abi::MsixVector::Reply)
            .unwrap();
        assert!(parent.device().release_held_reply().unwrap());
        let uid = creating.join().unwrap().unwrap();
        assert_eq!(
            uid, 1,
            "the driver returned the held reply's slot, not the stray vector's"
        );
    }

    #[test]
    fn test_device_rejection_reaches_the_caller_as_its_errno() {
        let parent = parent();
        parent
            .device()
            .faults_mut()
            .fail_next(Some(ne_abi::Command::SlotAlloc), 1, -12)
            .unwrap();
        let error = parent.driver().create_vm().unwrap_err();
        assert_eq!(error.errno(), 12);
    }
}
