// SPDX-License-Identifier: Apache-2.0
//! The enclave ioctls' conformance cases, through the driver against the emulated parent:
//! each Linux validation path gives Linux's error, and checks Linux makes before it talks
//! to the device never reach the device.

mod common;

use std::time::Duration;

use common::*;
use ne_abi::{EnclaveState, NeError};
use ne_driver::errno::{EFAULT, EPERM};
use ne_parent::{ParentEnclave, HUGEPAGE_BYTES, USER_END};

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

// NE_SET_USER_MEMORY_REGION

#[test]
fn test_memory_at_address_zero_is_efault() {
    let parent = parent();
    let enclave = enclave(&parent);
    let memory = parent.address_space();
    let error = enclave
        .set_user_memory_region(region(0, HUGEPAGE_BYTES), &memory)
        .unwrap_err();
    assert_eq!(error.errno(), EFAULT);
}

#[test]
fn test_memory_unaligned_address_is_unaligned_mem_region_addr() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(2 * HUGEPAGE_BYTES, 0).unwrap();
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr + 4096, HUGEPAGE_BYTES), &memory),
        NeError::UnalignedMemRegionAddr,
    );
}

#[test]
fn test_memory_half_page_size_is_invalid_mem_region_size() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES / 2), &memory),
        NeError::InvalidMemRegionSize,
    );
}

#[test]
fn test_memory_double_the_mapping_is_efault() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
    let before = doorbells(&parent);
    let error = enclave
        .set_user_memory_region(region(addr, 2 * HUGEPAGE_BYTES), &memory)
        .unwrap_err();
    assert_eq!(error.errno(), EFAULT);
    assert_eq!(doorbells(&parent), before);
}

#[test]
fn test_memory_past_the_end_of_user_space_is_invalid_mem_region_addr() {
    let parent = parent();
    let enclave = enclave(&parent);
    let memory = parent.address_space();
    let addr = (USER_END / HUGEPAGE_BYTES) * HUGEPAGE_BYTES;
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory),
        NeError::InvalidMemRegionAddr,
    );
    assert_ne_err(
        &parent,
        || {
            enclave.set_user_memory_region(
                region(u64::MAX - (HUGEPAGE_BYTES - 1), HUGEPAGE_BYTES),
                &memory,
            )
        },
        NeError::InvalidMemRegionAddr,
    );
}

#[test]
fn test_memory_same_region_twice_is_mem_region_already_used() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
    enclave
        .set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory)
        .unwrap();
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory),
        NeError::MemRegionAlreadyUsed,
    );
}

#[test]
fn test_memory_bad_flags_is_invalid_flag_value() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
    let mut bad = region(addr, HUGEPAGE_BYTES);
    bad.flags = 1;
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(bad, &memory),
        NeError::InvalidFlagValue,
    );
}

#[test]
fn test_memory_not_hugepage_backed_is_mem_not_huge_page() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    let addr = memory.mmap_small(HUGEPAGE_BYTES);
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory),
        NeError::MemNotHugePage,
    );
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
fn test_vcpu_beyond_parent_cpus_is_invalid_vcpu() {
    let parent = parent();
    let enclave = enclave(&parent);
    assert_ne_err(&parent, || enclave.add_vcpu(8), NeError::InvalidVcpu);
}

#[test]
fn test_vcpu_twice_is_vcpu_already_used() {
    let parent = parent();
    let enclave = enclave(&parent);
    enclave.add_vcpu(2).unwrap();
    assert_ne_err(&parent, || enclave.add_vcpu(2), NeError::VcpuAlreadyUsed);
}

#[test]
fn test_vcpu_outside_pool_is_vcpu_not_in_cpu_pool() {
    let parent = parent();
    let enclave = enclave(&parent);
    assert_ne_err(&parent, || enclave.add_vcpu(4), NeError::VcpuNotInCpuPool);
}

#[test]
fn test_vcpu_whole_pool_then_one_more_is_no_cpus_avail_in_pool() {
    let parent = parent();
    let enclave = enclave(&parent);
    for _ in 0..6 {
        enclave.add_vcpu(0).unwrap();
    }
    assert_ne_err(&parent, || enclave.add_vcpu(0), NeError::NoCpusAvailInPool);
}

#[test]
fn test_vcpu_of_core_claimed_by_other_enclave_is_not_in_pool() {
    let parent = parent();
    let first = enclave(&parent);
    first.add_vcpu(3).unwrap();
    let second = enclave(&parent);
    assert_ne_err(&parent, || second.add_vcpu(7), NeError::VcpuNotInCpuPool);
}

// NE_CREATE_VM and the CPU pool

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
fn test_image_load_info_is_8mib_and_checks_flags() {
    let parent = parent();
    let enclave = enclave(&parent);
    assert_eq!(enclave.image_load_info(1).unwrap(), 8 << 20);
    assert_ne_err(
        &parent,
        || enclave.image_load_info(0),
        NeError::InvalidFlagValue,
    );
    assert_ne_err(
        &parent,
        || enclave.image_load_info(2),
        NeError::InvalidFlagValue,
    );
}

// NE_START_ENCLAVE

#[test]
fn test_start_without_memory_is_no_mem_regions_added() {
    let parent = parent();
    let enclave = enclave(&parent);
    enclave.add_vcpu(0).unwrap();
    enclave.add_vcpu(0).unwrap();
    assert_ne_err(&parent, || enclave.start(0, 0), NeError::NoMemRegionsAdded);
}

#[test]
fn test_start_below_64mib_is_enclave_mem_min_size() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    add_memory(&enclave, &mut memory, 32);
    assert_ne_err(&parent, || enclave.start(0, 0), NeError::EnclaveMemMinSize);
}

#[test]
fn test_start_without_vcpus_is_no_vcpus_added() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    add_memory(&enclave, &mut memory, 64);
    assert_ne_err(&parent, || enclave.start(0, 0), NeError::NoVcpusAdded);
}

#[test]
fn test_start_without_a_cores_sibling_is_full_cores_not_used() {
    let parent = parent();
    let enclave = enclave(&parent);
    let mut memory = parent.address_space();
    add_memory(&enclave, &mut memory, 64);
    enclave.add_vcpu(1).unwrap();
    assert_ne_err(&parent, || enclave.start(0, 0), NeError::FullCoresNotUsed);
}

#[test]
fn test_start_bad_flags_and_reserved_cids_are_refused() {
    let parent = parent();
    let enclave = enclave(&parent);
    assert_ne_err(&parent, || enclave.start(2, 0), NeError::InvalidFlagValue);
    for cid in [1, 2, 3, u64::from(u32::MAX), 1 << 32] {
        assert_ne_err(
            &parent,
            || enclave.start(0, cid),
            NeError::InvalidEnclaveCid,
        );
    }
}

#[test]
fn test_start_twice_and_setup_after_start_are_not_in_init_state() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let launched = parent
        .launch(&ne_parent::LaunchRequest {
            eif,
            memory_mib: 64,
            cpus: ne_parent::CpuRequest::Count(2),
            cid: 0,
            debug: false,
        })
        .unwrap();
    let enclave = &launched.enclave;
    let mut memory = parent.address_space();
    let addr = memory.mmap_hugepages(HUGEPAGE_BYTES, 0).unwrap();
    assert_ne_err(&parent, || enclave.start(0, 0), NeError::NotInInitState);
    assert_ne_err(&parent, || enclave.add_vcpu(0), NeError::NotInInitState);
    assert_ne_err(
        &parent,
        || enclave.image_load_info(1),
        NeError::NotInInitState,
    );
    assert_ne_err(
        &parent,
        || enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES), &memory),
        NeError::NotInInitState,
    );
}

// Events and the transport

#[test]
fn test_injected_crash_is_seen_through_the_notification() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let request = ne_parent::LaunchRequest {
        eif,
        memory_mib: 64,
        cpus: ne_parent::CpuRequest::Count(2),
        cid: 0,
        debug: false,
    };
    let launched = parent.launch(&request).unwrap();
    let uid = launched.enclave.slot_uid();
    assert!(!launched.enclave.wait_event(Duration::from_millis(10)));
    assert!(parent.crash(uid));
    assert!(
        launched.enclave.wait_event(Duration::from_secs(5)),
        "POLLHUP within 5 s"
    );
    assert_eq!(launched.enclave.info().state, EnclaveState::Stopped.value());
    launched.enclave.release().unwrap();
    assert!(parent.device().slots().is_empty());
}

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
fn test_stray_vector_zero_is_not_taken_as_a_reply() {
    let parent = small_parent(ne_parent::ParentConfig {
        reply_timeout: Duration::from_millis(200),
        ..ne_parent::ParentConfig::default()
    });
    parent
        .device()
        .faults_mut()
        .drop_next(Some(ne_abi::Command::SlotAlloc), 1)
        .unwrap();
    parent
        .device()
        .raise_spurious(ne_abi::MsixVector::Reply)
        .unwrap();
    let error = parent.driver().create_vm().unwrap_err();
    assert!(matches!(error, ne_driver::Error::Timeout { .. }), "{error}");
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
