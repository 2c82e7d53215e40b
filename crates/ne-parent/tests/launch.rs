// SPDX-License-Identifier: Apache-2.0
//! Launching enclaves from EIFs as nitro-cli does: measurements, bad images, limits,
//! and no leaks over many cycles.

mod common;

use common::*;
use ne_parent::{CpuRequest, LaunchRequest, LaunchStep, ENOEXEC};

fn request(eif: Vec<u8>, memory_mib: u64, cpus: CpuRequest) -> LaunchRequest {
    LaunchRequest {
        eif,
        memory_mib,
        cpus,
        cid: 0,
        debug: false,
    }
}

#[test]
fn test_launch_measures_the_image_in_enclave_memory() {
    let parent = parent();
    let (eif, measurements) = sample_eif();
    let launched = parent
        .launch(&request(eif, 128, CpuRequest::Count(2)))
        .unwrap();
    let uid = launched.enclave.slot_uid();
    let image = parent.image(uid).expect("the hypervisor loaded the image");
    assert_eq!(image.measurements, measurements);
    assert_eq!(image.name.as_deref(), Some("sample"));
    assert_eq!(launched.cpu_ids, [1, 5]);
    assert_eq!(
        launched.enclave.info().nr_mem_regions,
        64,
        "one SLOT_ADD_MEM per 2 MiB page"
    );
    assert!(launched.cid >= 4);
}

#[test]
fn test_launch_with_explicit_cpu_ids_and_cid() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let mut req = request(eif, 64, CpuRequest::Ids(vec![3, 7]));
    req.cid = 42;
    req.debug = true;
    let launched = parent.launch(&req).unwrap();
    assert_eq!(launched.cid, 42);
    assert_eq!(launched.enclave.info().flags, 1);
    assert_eq!(launched.cpu_ids, [3, 7]);
}

#[test]
fn test_launch_of_corrupt_image_is_refused_with_enoexec() {
    let parent = parent();
    let (mut eif, _) = sample_eif();
    let last = eif.len() - 1;
    eif[last] ^= 0x55;
    let free_before = parent.free_hugepages(0);
    let error = parent
        .launch(&request(eif, 64, CpuRequest::Count(2)))
        .unwrap_err();
    assert_eq!(error.step, LaunchStep::Start);
    assert_eq!(
        error.driver.as_ref().map(ne_driver::Error::errno),
        Some(ENOEXEC)
    );
    let reason = parent.device().last_rejection().unwrap().error.to_string();
    assert!(reason.contains("CRC mismatch"), "{reason}");
    assert!(
        parent.device().slots().is_empty(),
        "the failed enclave was released"
    );
    assert_eq!(
        parent.free_hugepages(0),
        free_before,
        "its memory was freed"
    );
}

#[test]
fn test_launch_of_non_eif_is_refused_with_enoexec() {
    let parent = parent();
    let error = parent
        .launch(&request(vec![0x7f; 4096], 64, CpuRequest::Count(2)))
        .unwrap_err();
    assert_eq!(
        error.driver.as_ref().map(ne_driver::Error::errno),
        Some(ENOEXEC)
    );
}

#[test]
fn test_launch_with_too_little_memory_is_memory_requested() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let error = parent
        .launch(&request(eif, 32, CpuRequest::Count(2)))
        .unwrap_err();
    assert_eq!(error.step, LaunchStep::MemoryRequested);
    assert_eq!(
        parent.device().stats().doorbells,
        0,
        "refused before the device"
    );
}

#[test]
fn test_launch_with_more_memory_than_hugepages_is_memory_available() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let error = parent
        .launch(&request(eif, 2048, CpuRequest::Count(2)))
        .unwrap_err();
    assert_eq!(error.step, LaunchStep::MemoryAvailable);
    assert!(parent.device().slots().is_empty());
}

#[test]
fn test_launch_with_duplicate_cpu_ids_is_a_request_error() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let error = parent
        .launch(&request(eif, 64, CpuRequest::Ids(vec![1, 1])))
        .unwrap_err();
    assert_eq!(error.step, LaunchStep::Request);
}

#[test]
fn test_four_enclaves_run_at_once_and_a_fifth_is_refused() {
    let parent = parent_with(6, 1);
    let (eif, _) = sample_eif();
    let running: Vec<_> = (0..4)
        .map(|_| {
            parent
                .launch(&request(eif.clone(), 64, CpuRequest::Count(1)))
                .unwrap()
        })
        .collect();
    let cids: std::collections::BTreeSet<u64> = running.iter().map(|l| l.cid).collect();
    assert_eq!(cids.len(), 4, "CIDs are unique");
    let error = parent
        .launch(&request(eif, 64, CpuRequest::Count(1)))
        .unwrap_err();
    assert_eq!(error.step, LaunchStep::CreateVm);
    assert_eq!(
        error.driver.as_ref().map(ne_driver::Error::errno),
        Some(28),
        "ENOSPC from SLOT_ALLOC"
    );
}

#[test]
fn test_hundred_start_stop_cycles_leak_nothing() {
    let parent = parent();
    let (eif, _) = sample_eif();
    let free = parent.free_hugepages(0);
    let pool = parent.driver().cpu_pool().unwrap();
    for cycle in 0..100 {
        let launched = parent
            .launch(&request(eif.clone(), 64, CpuRequest::Count(2)))
            .unwrap();
        assert_eq!(parent.device().slots().len(), 1, "cycle {cycle}");
        drop(launched);
    }
    assert!(parent.device().slots().is_empty());
    assert!(parent.device().hypervisor().image(1).is_none());
    assert_eq!(parent.free_hugepages(0), free);
    assert_eq!(parent.driver().cpu_pool().unwrap(), pool);
    let stats = parent.device().stats();
    assert_eq!(stats.replies, stats.doorbells);
}
