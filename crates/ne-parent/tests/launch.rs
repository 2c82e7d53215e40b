// SPDX-License-Identifier: Apache-2.0
//! Launching enclaves from EIFs as nitro-cli does, on the emulated parent: measurements,
//! bad images, limits, and no leaks over many cycles.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::errno::{ENOEXEC, ENOSPC};
    use ne_abi::uapi::EIF_LOAD_OFFSET;
    use ne_driver::{EnclaveDevice, EnclaveFd};
    use ne_parent::{
        launch, CpuRequest, LaunchRequest, LaunchStep, MemoryDonor, ParentInstance, HUGEPAGE_BYTES,
    };

    fn request(eif: Vec<u8>, memory_mib: u64, cpus: CpuRequest) -> LaunchRequest {
        LaunchRequest {
            eif,
            memory_mib,
            cpus,
            cid: 0,
            debug: false,
        }
    }

    /// Starts an enclave whose memory holds `image` at 8 MiB (the pages donated in order),
    /// as a driver user that skips nitro-cli's own checks would; returns the start's result.
    fn start_with_memory_holding(
        parent: &ne_parent::Parent,
        image: &[u8],
    ) -> ne_driver::Result<u64> {
        let (device, mut memory) = parent.process();
        let enclave = device.create_vm()?;
        let pages: Vec<u64> = (0..32)
            .map(|_| memory.map_hugepages(HUGEPAGE_BYTES).unwrap())
            .collect();
        for (index, chunk) in image.chunks(2 << 20).enumerate() {
            let page = pages[usize::try_from(EIF_LOAD_OFFSET / HUGEPAGE_BYTES).unwrap() + index];
            memory.write(page, chunk).unwrap();
        }
        for page in pages {
            enclave.set_user_memory_region(region(page, HUGEPAGE_BYTES))?;
        }
        enclave.add_vcpu(0)?;
        enclave.add_vcpu(0)?;
        enclave.start(0, 0)
    }

    #[test]
    fn test_launch_measures_the_image_in_enclave_memory() {
        let parent = parent();
        let (eif, measurements) = sample_eif();
        let launched = launch(&parent, &request(eif, 128, CpuRequest::Count(2))).unwrap();
        let uid = launched.enclave.slot_uid();
        let image = parent.image(uid).expect("the hypervisor loaded the image");
        assert_eq!(image.measurements, measurements);
        assert_eq!(launched.measurements, measurements);
        assert_eq!(image.name.as_deref(), Some("sample"));
        assert_eq!(launched.cpu_ids, [1, 5]);
        assert_eq!(
            launched.enclave.enclave().info().nr_mem_regions,
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
        let launched = launch(&parent, &req).unwrap();
        assert_eq!(launched.cid, 42);
        assert_eq!(launched.enclave.enclave().info().flags, 1);
        assert_eq!(launched.cpu_ids, [3, 7]);
    }

    #[test]
    fn test_launch_of_a_corrupt_file_is_refused_before_the_device() {
        let parent = parent();
        let (mut eif, _) = sample_eif();
        let last = eif.len() - 1;
        eif[last] ^= 0x55;
        let error = launch(&parent, &request(eif, 64, CpuRequest::Count(2))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::Image);
        assert!(
            ne_hypervisor::error_chain(&error).contains("CRC mismatch"),
            "{error}"
        );
        assert_eq!(doorbells(&parent), 0);
    }

    #[test]
    fn test_start_over_a_corrupt_image_in_memory_is_refused_with_enoexec_and_the_reason() {
        let parent = parent();
        let (mut eif, _) = sample_eif();
        let last = eif.len() - 1;
        eif[last] ^= 0x55;
        let error = start_with_memory_holding(&parent, &eif).unwrap_err();
        assert_eq!(error.errno(), ENOEXEC);
        let reason = parent.log().last_rejection().unwrap().error.to_string();
        assert!(reason.contains("CRC mismatch"), "{reason}");
    }

    #[test]
    fn test_memory_of_a_terminated_enclave_is_cleared_before_the_next_one() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let launched = launch(&parent, &request(eif, 64, CpuRequest::Count(2))).unwrap();
        launched.release().unwrap();
        // The next enclave gets the same hugepages and nobody writes an image into them.
        let error = start_with_memory_holding(&parent, &[]).unwrap_err();
        assert_eq!(
            error.errno(),
            ENOEXEC,
            "the old image must not pass as the new one"
        );
    }

    #[test]
    fn test_launch_with_too_little_memory_is_memory_requested() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let error = launch(&parent, &request(eif, 32, CpuRequest::Count(2))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::MemoryRequested);
        assert_eq!(doorbells(&parent), 0, "refused before the device");
    }

    #[test]
    fn test_launch_with_memory_that_overflows_is_refused_not_wrapped() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let error = launch(
            &parent,
            &request(eif, 17_592_186_044_480, CpuRequest::Count(2)),
        )
        .unwrap_err();
        assert_eq!(error.step(), LaunchStep::MemoryRequested);
        assert_eq!(doorbells(&parent), 0);
    }

    #[test]
    fn test_launch_with_a_huge_cpu_count_runs_out_of_pool_without_allocating() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let error = launch(&parent, &request(eif, 64, CpuRequest::Count(u32::MAX))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::AddVcpu);
        assert!(
            parent.device().slots().is_empty(),
            "the failed enclave was released"
        );
    }

    #[test]
    fn test_launch_with_more_memory_than_hugepages_is_memory_available() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let free = parent.free_hugepages(0);
        let error = launch(&parent, &request(eif, 2048, CpuRequest::Count(2))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::MemoryAvailable);
        assert!(parent.device().slots().is_empty());
        assert_eq!(
            parent.free_hugepages(0),
            free,
            "the pages taken were given back"
        );
    }

    #[test]
    fn test_launch_with_duplicate_cpu_ids_is_a_request_error() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let error = launch(&parent, &request(eif, 64, CpuRequest::Ids(vec![1, 1]))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::Request);
    }

    #[test]
    fn test_four_enclaves_run_at_once_and_a_fifth_is_refused_with_enospc() {
        let parent = parent_with(6, 1);
        let (eif, _) = sample_eif();
        let running: Vec<_> = (0..4)
            .map(|_| launch(&parent, &request(eif.clone(), 64, CpuRequest::Count(1))).unwrap())
            .collect();
        let cids: std::collections::BTreeSet<u64> = running.iter().map(|l| l.cid).collect();
        assert_eq!(cids.len(), 4, "CIDs are unique");
        let error = launch(&parent, &request(eif, 64, CpuRequest::Count(1))).unwrap_err();
        assert_eq!(error.step(), LaunchStep::CreateVm);
        assert_eq!(
            error.driver_error().map(ne_driver::Error::errno),
            Some(ENOSPC)
        );
    }

    #[test]
    fn test_hundred_start_stop_cycles_leak_nothing() {
        let parent = parent();
        let (eif, _) = sample_eif();
        let free = parent.free_hugepages(0);
        let pool = parent.driver().cpu_pool().unwrap();
        for cycle in 0..100 {
            let launched =
                launch(&parent, &request(eif.clone(), 64, CpuRequest::Count(2))).unwrap();
            assert_eq!(parent.device().slots().len(), 1, "cycle {cycle}");
            drop(launched);
        }
        assert!(parent.device().slots().is_empty());
        assert!(parent.device().hypervisor().image(1).is_none());
        assert_eq!(parent.free_hugepages(0), free);
        assert_eq!(parent.driver().cpu_pool().unwrap(), pool);
        let stats = parent.log().stats();
        assert_eq!(stats.replies, stats.doorbells);
    }
}
