// SPDX-License-Identifier: Apache-2.0
//! The enclave fd: each ioctl's checks in Linux's order, at their boundaries, what reaches
//! the device, the CPU pool's cores, and release.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_abi::uapi::{EIF_LOAD_OFFSET, LAST_ENCLAVE_CID};
    use ne_abi::{Command, EnclaveState, NeError};
    use ne_driver::{errno, Error, Page};

    fn ne(result: Result<impl std::fmt::Debug, Error>) -> NeError {
        result.unwrap_err().ne_error().expect("an NE_ERR_* code")
    }

    #[test]
    fn test_create_vm_allocates_a_slot_and_starts_in_init() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        assert_ne!(enclave.slot_uid(), 0);
        let info = enclave.info();
        assert_eq!(info.slot_uid, enclave.slot_uid());
        assert_eq!(info.state, EnclaveState::Init.value());
        assert_eq!((info.cid, info.flags, info.mem_size), (0, 0, 0));
        assert_eq!(info.vcpus, Vec::<u32>::new());
        assert_eq!(rig.commands(), [Command::SlotAlloc.number()]);
        let second = rig.driver.create_vm().unwrap();
        assert_eq!((second.slot_uid(), second.info().slot_uid), (2, 2));
        assert!(format!("{second:?}").contains("Enclave"));
        assert!(format!("{:?}", rig.driver).contains("NeDriver"));
    }

    #[test]
    fn test_create_vm_without_a_free_pool_core_sends_nothing() {
        let rig = rig();
        let greedy = rig.driver.create_vm().unwrap();
        for _ in 0..6 {
            greedy.add_vcpu(0).unwrap();
        }
        let before = rig.doorbells();
        assert_eq!(ne(rig.driver.create_vm()), NeError::NoCpusAvailInPool);
        assert_eq!(rig.doorbells(), before, "every core is claimed");
        drop(greedy);
        rig.driver.create_vm().expect("the cores came back");
        rig.driver.set_cpu_pool("").unwrap_err();
        assert_eq!(
            ne(rig.driver.create_vm()),
            NeError::NoCpusAvailInPool,
            "no pool"
        );
    }

    #[test]
    fn test_a_set_up_enclave_starts_with_the_device_s_cid() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        let cid = enclave.start(0, 0).unwrap();
        assert!(cid > 3, "an automatic CID is never reserved: {cid}");
        let info = enclave.info();
        assert_eq!(info.state, EnclaveState::Running.value());
        assert_eq!((info.cid, info.flags), (cid, 0));
        assert_eq!(info.mem_size, MIB64);
        assert_eq!(
            info.nr_mem_regions, 1,
            "32 contiguous pages are one command"
        );
        assert_eq!(info.vcpus, [1, 5]);
        let explicit = ready_enclave_on(&rig, 2, 6, 2 << 30);
        assert_eq!(explicit.start(1, 1234).unwrap(), 1234);
        assert_eq!(explicit.info().flags, 1);
    }

    /// An enclave with 64 MiB at `phys` and the full core of `cpu` and `sibling`.
    fn ready_enclave_on(
        rig: &Rig,
        cpu: u32,
        sibling: u32,
        phys: u64,
    ) -> ne_driver::Enclave<SpyBar> {
        let enclave = rig.driver.create_vm().unwrap();
        let memory = Hugepages::contiguous(USER_BASE, phys, 32);
        enclave
            .set_user_memory_region(region(USER_BASE, MIB64), &memory)
            .unwrap();
        enclave.add_vcpu(cpu).unwrap();
        enclave.add_vcpu(sibling).unwrap();
        enclave
    }

    #[test]
    fn test_start_checks_flags_then_cid_then_state() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        let before = rig.doorbells();
        assert_eq!(ne(enclave.start(2, 0)), NeError::InvalidFlagValue);
        for cid in [1, 2, 3, LAST_ENCLAVE_CID + 1, u64::MAX] {
            assert_eq!(
                ne(enclave.start(0, cid)),
                NeError::InvalidEnclaveCid,
                "{cid}"
            );
        }
        assert_eq!(rig.doorbells(), before, "no check reached the device");
        enclave.start(0, LAST_ENCLAVE_CID).unwrap();
        assert_eq!(
            ne(enclave.start(2, 1)),
            NeError::InvalidFlagValue,
            "flags first"
        );
        assert_eq!(
            ne(enclave.start(0, 1)),
            NeError::InvalidEnclaveCid,
            "then the CID"
        );
        assert_eq!(ne(enclave.start(0, 0)), NeError::NotInInitState);
    }

    #[test]
    fn test_start_checks_memory_then_its_size_then_vcpus_then_full_cores() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        assert_eq!(ne(enclave.start(0, 0)), NeError::NoMemRegionsAdded);
        let memory = Hugepages::contiguous(USER_BASE, 1 << 30, 32);
        enclave
            .set_user_memory_region(region(USER_BASE, MIB64 - HUGEPAGE), &memory)
            .unwrap();
        assert_eq!(ne(enclave.start(0, 0)), NeError::EnclaveMemMinSize);
        enclave
            .set_user_memory_region(region(USER_BASE + MIB64 - HUGEPAGE, HUGEPAGE), &memory)
            .unwrap();
        assert_eq!(enclave.info().mem_size, MIB64, "exactly 64 MiB is enough");
        assert_eq!(ne(enclave.start(0, 0)), NeError::NoVcpusAdded);
        enclave.add_vcpu(1).unwrap();
        assert_eq!(ne(enclave.start(0, 0)), NeError::FullCoresNotUsed);
        enclave.add_vcpu(5).unwrap();
        enclave.start(0, 0).unwrap();
    }

    #[test]
    fn test_setup_after_start_is_not_in_init_state() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        enclave.start(0, 0).unwrap();
        let memory = Hugepages::contiguous(USER_BASE, 2 << 30, 1);
        assert_eq!(
            ne(enclave.set_user_memory_region(region(USER_BASE, HUGEPAGE), &memory)),
            NeError::NotInInitState
        );
        assert_eq!(ne(enclave.add_vcpu(2)), NeError::NotInInitState);
        assert_eq!(ne(enclave.image_load_info(1)), NeError::NotInInitState);
    }

    #[test]
    fn test_image_load_info_is_8_mib_for_an_eif_and_refuses_other_flags() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let before = rig.doorbells();
        assert_eq!(enclave.image_load_info(1).unwrap(), EIF_LOAD_OFFSET);
        for flags in [0, 2, 3, u64::MAX] {
            assert_eq!(
                ne(enclave.image_load_info(flags)),
                NeError::InvalidFlagValue
            );
        }
        assert_eq!(rig.doorbells(), before, "no command");
    }

    #[test]
    fn test_add_vcpu_checks_the_parent_s_cpus_then_the_pool() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let before = rig.doorbells();
        assert_eq!(ne(enclave.add_vcpu(8)), NeError::InvalidVcpu, "8 CPUs: 0-7");
        assert_eq!(ne(enclave.add_vcpu(u32::MAX)), NeError::InvalidVcpu);
        assert_eq!(
            ne(enclave.add_vcpu(4)),
            NeError::VcpuNotInCpuPool,
            "CPU 0's sibling"
        );
        assert_eq!(rig.doorbells(), before);
        assert_eq!(enclave.add_vcpu(7).unwrap(), 7, "the highest CPU");
        assert_eq!(ne(enclave.add_vcpu(7)), NeError::VcpuAlreadyUsed);
        assert_eq!(
            enclave.add_vcpu(3).unwrap(),
            3,
            "a thread of a claimed core"
        );
    }

    #[test]
    fn test_auto_vcpus_fill_a_claimed_core_before_claiming_the_next() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let picked: Vec<u32> = (0..6).map(|_| enclave.add_vcpu(0).unwrap()).collect();
        assert_eq!(picked, [1, 5, 2, 6, 3, 7]);
        assert_eq!(ne(enclave.add_vcpu(0)), NeError::NoCpusAvailInPool);
        assert_eq!(enclave.info().vcpus, [1, 2, 3, 5, 6, 7]);
    }

    #[test]
    fn test_an_explicit_vcpu_then_auto_takes_its_sibling() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        assert_eq!(enclave.add_vcpu(6).unwrap(), 6);
        assert_eq!(enclave.add_vcpu(0).unwrap(), 2);
        assert_eq!(enclave.add_vcpu(0).unwrap(), 1);
    }

    #[test]
    fn test_a_core_another_enclave_claimed_is_not_in_the_pool_until_it_is_released() {
        let rig = rig();
        let first = rig.driver.create_vm().unwrap();
        first.add_vcpu(1).unwrap();
        let second = rig.driver.create_vm().unwrap();
        assert_eq!(ne(second.add_vcpu(5)), NeError::VcpuNotInCpuPool);
        assert_eq!(second.add_vcpu(0).unwrap(), 2);
        first.release().unwrap();
        assert_eq!(second.add_vcpu(5).unwrap(), 5, "the core came back whole");
        assert_eq!(second.add_vcpu(1).unwrap(), 1);
    }

    #[test]
    fn test_a_refused_vcpu_keeps_its_core_claimed_as_linux_does() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotAddVcpu), 1, -errno::EINVAL)
            .unwrap();
        let error = enclave.add_vcpu(1).unwrap_err();
        assert_eq!(error.errno(), errno::EINVAL);
        assert_eq!(enclave.info().vcpus, Vec::<u32>::new());
        let other = rig.driver.create_vm().unwrap();
        assert_eq!(ne(other.add_vcpu(5)), NeError::VcpuNotInCpuPool);
        assert_eq!(enclave.add_vcpu(5).unwrap(), 5, "its own claimed core");
    }

    #[test]
    fn test_memory_checks_flags_state_size_alignment_access_and_overlap_in_order() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let memory = Hugepages::contiguous(USER_BASE, 1 << 30, 8);
        let mut flagged = region(USER_BASE, HUGEPAGE);
        flagged.flags = 1;
        let before = rig.doorbells();
        let cases = [
            (flagged, NeError::InvalidFlagValue),
            (
                region(USER_BASE + 1, HUGEPAGE + 1),
                NeError::InvalidMemRegionSize,
            ),
            (
                region(USER_BASE + 1, HUGEPAGE),
                NeError::UnalignedMemRegionAddr,
            ),
            (
                region(u64::MAX - HUGEPAGE + 1 - HUGEPAGE, 2 * HUGEPAGE),
                NeError::InvalidMemRegionAddr,
            ),
            (
                region(USER_END - HUGEPAGE, 2 * HUGEPAGE),
                NeError::InvalidMemRegionAddr,
            ),
        ];
        for (region, expected) in cases {
            assert_eq!(
                ne(enclave.set_user_memory_region(region, &memory)),
                expected,
                "{region:?}"
            );
        }
        assert_eq!(rig.doorbells(), before);
        enclave
            .set_user_memory_region(region(USER_BASE + 2 * HUGEPAGE, 2 * HUGEPAGE), &memory)
            .unwrap();
        for overlapping in [
            region(USER_BASE + 2 * HUGEPAGE, HUGEPAGE),
            region(USER_BASE + HUGEPAGE, 2 * HUGEPAGE),
            region(USER_BASE + 3 * HUGEPAGE, 2 * HUGEPAGE),
        ] {
            assert_eq!(
                ne(enclave.set_user_memory_region(overlapping, &memory)),
                NeError::MemRegionAlreadyUsed,
                "{overlapping:?}"
            );
        }
        enclave
            .set_user_memory_region(region(USER_BASE + HUGEPAGE, HUGEPAGE), &memory)
            .expect("adjacent below");
        enclave
            .set_user_memory_region(region(USER_BASE + 4 * HUGEPAGE, HUGEPAGE), &memory)
            .expect("adjacent above");
    }

    #[test]
    fn test_memory_of_a_wrapping_range_is_invalid_address() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let memory = Hugepages::default();
        let wrapping = region(u64::MAX - HUGEPAGE + 1, 2 * HUGEPAGE);
        assert_eq!(
            ne(enclave.set_user_memory_region(wrapping, &memory)),
            NeError::InvalidMemRegionAddr
        );
    }

    #[test]
    fn test_memory_sends_one_command_per_physically_contiguous_run() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let mut memory = Hugepages::contiguous(USER_BASE, 1 << 30, 3);
        memory.map(USER_BASE + 3 * HUGEPAGE, 2 << 30, 2);
        enclave
            .set_user_memory_region(region(USER_BASE, 5 * HUGEPAGE), &memory)
            .unwrap();
        let info = enclave.info();
        assert_eq!((info.nr_mem_regions, info.mem_size), (2, 5 * HUGEPAGE));
        let device = rig.device();
        let slot = device.slots().get(enclave.slot_uid()).unwrap();
        let regions: Vec<(u64, u64)> = slot.regions().iter().map(|r| (r.paddr, r.size)).collect();
        assert_eq!(regions, [(1 << 30, 3 * HUGEPAGE), (2 << 30, 2 * HUGEPAGE)]);
    }

    #[test]
    fn test_the_region_limit_counts_runs_and_exactly_the_limit_is_accepted() {
        let config = ne_device::DeviceConfig {
            max_mem_regions: 3,
            ..device_config()
        };
        let rig = rig_with(config, short_waits());
        let enclave = rig.driver.create_vm().unwrap();
        let mut memory = Hugepages::default();
        for i in 0..4 {
            memory.map(USER_BASE + i * HUGEPAGE, (1 << 30) + 2 * i * HUGEPAGE, 1);
        }
        enclave
            .set_user_memory_region(region(USER_BASE, 2 * HUGEPAGE), &memory)
            .unwrap();
        let before = rig.doorbells();
        assert_eq!(
            ne(enclave
                .set_user_memory_region(region(USER_BASE + 2 * HUGEPAGE, 2 * HUGEPAGE), &memory)),
            NeError::MemMaxRegions
        );
        assert_eq!(rig.doorbells(), before, "refused before any command");
        enclave
            .set_user_memory_region(region(USER_BASE + 2 * HUGEPAGE, HUGEPAGE), &memory)
            .expect("the third region is the limit");
        assert_eq!(enclave.info().nr_mem_regions, 3);
    }

    #[test]
    fn test_the_region_limit_counts_the_runs_of_one_call() {
        let config = ne_device::DeviceConfig {
            max_mem_regions: 3,
            ..device_config()
        };
        let rig = rig_with(config, short_waits());
        let enclave = rig.driver.create_vm().unwrap();
        let mut memory = Hugepages::default();
        for i in 0..4 {
            memory.map(USER_BASE + i * HUGEPAGE, (1 << 30) + 2 * i * HUGEPAGE, 1);
        }
        assert_eq!(
            ne(enclave.set_user_memory_region(region(USER_BASE, 4 * HUGEPAGE), &memory)),
            NeError::MemMaxRegions,
            "four runs at once"
        );
        assert_eq!(enclave.info().nr_mem_regions, 0);
    }

    #[test]
    fn test_a_refused_memory_command_keeps_the_runs_before_it() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let mut memory = Hugepages::contiguous(USER_BASE, 1 << 30, 1);
        memory.map(USER_BASE + HUGEPAGE, 2 << 30, 1);
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotAddMem), 1, 0)
            .unwrap();
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotAddMem), 1, -errno::ENOMEM)
            .unwrap();
        let error = enclave
            .set_user_memory_region(region(USER_BASE, 2 * HUGEPAGE), &memory)
            .unwrap_err();
        assert_eq!(error.errno(), errno::ENOMEM);
        let info = enclave.info();
        assert_eq!((info.nr_mem_regions, info.mem_size), (1, HUGEPAGE));
    }

    #[test]
    fn test_pages_that_are_not_hugepages_of_node_0_are_refused() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let page = |hugetlb, size, numa_node| Page {
            phys: 1 << 30,
            size,
            hugetlb,
            numa_node,
        };
        for (page, expected) in [
            (page(false, HUGEPAGE, 0), NeError::MemNotHugePage),
            (page(true, HUGEPAGE / 2, 0), NeError::InvalidPageSize),
            (page(true, 0, 0), NeError::InvalidPageSize),
            (page(true, HUGEPAGE, 1), NeError::MemDifferentNumaNode),
        ] {
            let mut memory = Hugepages::default();
            memory.insert(USER_BASE, page);
            assert_eq!(
                ne(enclave.set_user_memory_region(region(USER_BASE, HUGEPAGE), &memory)),
                expected,
                "{page:?}"
            );
        }
    }

    #[test]
    fn test_release_of_a_running_enclave_stops_then_frees_and_gives_its_cores_back() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        enclave.start(0, 0).unwrap();
        let slot_uid = enclave.slot_uid();
        let before = rig.commands().len();
        enclave.release().unwrap();
        assert_eq!(
            rig.commands()[before..],
            [Command::EnclaveStop.number(), Command::SlotFree.number()]
        );
        assert!(rig.device().slots().get(slot_uid).is_none());
        let next = rig.driver.create_vm().unwrap();
        assert_eq!(next.add_vcpu(0).unwrap(), 1, "CPU 1's core is free again");
    }

    #[test]
    fn test_release_of_an_init_enclave_only_frees() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let before = rig.commands().len();
        drop(enclave);
        assert_eq!(rig.commands()[before..], [Command::SlotFree.number()]);
    }

    #[test]
    fn test_a_refused_release_is_reported_and_holds_the_slot_and_cores() {
        let rig = rig();
        let enclave = ready_enclave(&rig);
        let slot_uid = enclave.slot_uid();
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotFree), 1, -errno::EBUSY)
            .unwrap();
        let error = enclave.release().unwrap_err();
        assert_eq!(error.errno(), errno::EBUSY);
        assert!(rig.device().slots().get(slot_uid).is_some());
        let next = rig.driver.create_vm().unwrap();
        assert_eq!(
            ne(next.add_vcpu(1)),
            NeError::VcpuNotInCpuPool,
            "still held"
        );
        assert_eq!(
            rig.driver.set_cpu_pool(POOL).unwrap_err().errno(),
            errno::EPERM,
            "the refused enclave is still listed"
        );
    }

    #[test]
    fn test_the_pool_cannot_change_while_an_enclave_exists_and_can_after() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let error = rig.driver.set_cpu_pool("1,5").unwrap_err();
        assert_eq!(error.errno(), errno::EPERM);
        assert_eq!(rig.driver.cpu_pool().unwrap().cpus().len(), 6, "unchanged");
        drop(enclave);
        rig.driver.set_cpu_pool("1,5").unwrap();
        assert_eq!(
            rig.driver
                .cpu_pool()
                .unwrap()
                .cpus()
                .into_iter()
                .collect::<Vec<_>>(),
            [1, 5]
        );
    }

    #[test]
    fn test_a_refused_pool_leaves_no_pool() {
        let rig = rig();
        assert_eq!(
            rig.driver.set_cpu_pool("1").unwrap_err().errno(),
            errno::EINVAL
        );
        assert_eq!(rig.driver.cpu_pool(), None);
        assert_eq!(rig.driver.topology(), &topology());
    }
}
