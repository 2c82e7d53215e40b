// SPDX-License-Identifier: Apache-2.0
//! The enclave API as a process sees it (`EnclaveDevice`, `EnclaveFd`), errors as errnos,
//! CPU lists and the page walk.

mod common;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::common::*;
    use ne_abi::uapi::EIF_LOAD_OFFSET;
    use ne_abi::{Command, NeError};
    use ne_driver::{
        errno, error_from_errno, parse_cpu_list, walk_region, CpuPool, EnclaveDevice, EnclaveFd,
        Error, Page, PhysRun, ProbeError, Topology,
    };

    #[test]
    fn test_an_enclave_runs_and_ends_through_the_traits() {
        let rig = rig();
        let memory = Arc::new(Hugepages::contiguous(USER_BASE, 1 << 30, 32));
        let device = Arc::new(rig.driver.open(Arc::clone(&memory)));
        assert!(format!("{device:?}").contains("DeviceFile"));
        let first = EnclaveDevice::create_vm(&device).unwrap();
        let enclave = EnclaveDevice::create_vm(&device).unwrap();
        assert_eq!(enclave.slot_uid(), enclave.enclave().slot_uid());
        assert_eq!(
            (first.slot_uid(), enclave.slot_uid()),
            (1, 2),
            "the device's uids"
        );
        assert!(format!("{enclave:?}").contains("EnclaveFile"));
        first.release().unwrap();
        assert_eq!(enclave.image_load_info(1).unwrap(), EIF_LOAD_OFFSET);
        enclave
            .set_user_memory_region(region(USER_BASE, MIB64))
            .unwrap();
        assert_eq!(enclave.add_vcpu(0).unwrap(), 1);
        assert_eq!(enclave.add_vcpu(5).unwrap(), 5);
        let cid = enclave.start(0, 77).unwrap();
        assert_eq!(cid, 77);
        assert_eq!(enclave.enclave().info().mem_size, MIB64);
        assert!(!enclave.wait_event(Duration::from_millis(10)).unwrap());
        assert!(rig.device().hypervisor_mut().exit(enclave.slot_uid()));
        rig.device().process_hypervisor_events().unwrap();
        assert!(enclave.wait_event(Duration::from_secs(5)).unwrap());
        let before = rig.commands().len();
        enclave.release().unwrap();
        assert_eq!(rig.commands()[before..], [Command::SlotFree.number()]);
    }

    #[test]
    fn test_a_release_refused_through_the_trait_is_reported() {
        let rig = rig();
        let memory = Arc::new(Hugepages::default());
        let device = rig.driver.open(memory);
        let enclave = device.create_vm().unwrap();
        rig.device()
            .faults_mut()
            .fail_next(Some(Command::SlotFree), 1, -errno::EBUSY)
            .unwrap();
        assert_eq!(enclave.release().unwrap_err().errno(), errno::EBUSY);
    }

    #[test]
    fn test_ne_err_codes_map_back_and_other_errnos_stay_errnos() {
        assert_eq!(
            error_from_errno(256, "x"),
            Error::Ne(NeError::VcpuAlreadyUsed)
        );
        assert_eq!(error_from_errno(275, "x").errno(), 275);
        for errno in [22, 255, 276, -1] {
            let error = error_from_errno(errno, "ctx");
            assert_eq!(error.ne_error(), None, "{errno}");
            assert_eq!(error.errno(), errno);
            assert!(error.to_string().contains("ctx"));
        }
    }

    #[test]
    fn test_each_error_has_the_errno_linux_would_set() {
        let device = Error::Device {
            command: Command::SlotFree,
            rc: -16,
        };
        assert_eq!(device.errno(), 16);
        assert!(device.to_string().contains("errno 16"));
        let overflow = Error::Device {
            command: Command::SlotFree,
            rc: i32::MIN,
        };
        assert_eq!(overflow.errno(), errno::EIO);
        assert_eq!(Error::Ne(NeError::InvalidVcpu).errno(), 271);
        assert_eq!(
            Error::Ne(NeError::InvalidVcpu).ne_error(),
            Some(NeError::InvalidVcpu)
        );
        assert_eq!(
            Error::Probe(ProbeError::Version { read: 7 }).errno(),
            errno::EIO
        );
        let timeout = Error::Timeout {
            command: Command::SlotAlloc,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(timeout.errno(), errno::ETIMEDOUT);
        assert_eq!(timeout.ne_error(), None);
    }

    #[test]
    fn test_cpu_lists_allow_ranges_up_to_65537_cpus() {
        assert_eq!(parse_cpu_list("0-65536").unwrap().len(), 65_537);
        assert_eq!(
            parse_cpu_list("0-65537").unwrap_err().errno(),
            errno::EINVAL
        );
        assert_eq!(
            parse_cpu_list(" 7 ")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [7]
        );
        assert!(parse_cpu_list("\n").unwrap().is_empty());
        assert_eq!(parse_cpu_list("2-2").unwrap().len(), 1);
        assert_eq!(
            parse_cpu_list("100-65636").unwrap().len(),
            65_537,
            "the length counts"
        );
        assert_eq!(
            parse_cpu_list("100-65637").unwrap_err().errno(),
            errno::EINVAL
        );
    }

    #[test]
    fn test_a_pool_list_longer_than_512_characters_is_refused() {
        let topology = topology();
        let padded = format!("{}1-3,5-7", " ".repeat(512 - 7));
        assert_eq!(padded.len(), 512);
        CpuPool::from_list(&padded, &topology).unwrap();
        let too_long = format!(" {padded}");
        assert_eq!(
            CpuPool::from_list(&too_long, &topology)
                .unwrap_err()
                .errno(),
            errno::EINVAL
        );
    }

    #[test]
    fn test_pool_cores_must_be_within_the_parent_s_and_on_one_node() {
        // Two nodes of two cores: CPUs 0-3 are thread 0, 4-7 thread 1.
        let topology = Topology::uniform(4, 2, 2);
        let pool = CpuPool::from_list("1,5", &topology).unwrap();
        assert_eq!(pool.numa_node(), 0);
        let far = CpuPool::from_list("2,6,3,7", &topology).unwrap();
        assert_eq!(far.numa_node(), 1);
        assert_eq!(
            CpuPool::from_list("1,5,2,6", &topology)
                .unwrap_err()
                .errno(),
            errno::EINVAL
        );
        // A topology whose CPU 9 is a core beyond nr_cpu_ids / threads.
        let sparse = Topology::from_cpus(vec![
            ne_driver::Cpu {
                id: 0,
                core: 0,
                numa_node: 0,
            },
            ne_driver::Cpu {
                id: 1,
                core: 1,
                numa_node: 0,
            },
            ne_driver::Cpu {
                id: 3,
                core: 5,
                numa_node: 0,
            },
        ]);
        assert_eq!(sparse.nr_cpu_ids(), 4);
        CpuPool::from_list("1", &sparse).unwrap();
        assert_eq!(
            CpuPool::from_list("3", &sparse).unwrap_err().errno(),
            errno::EINVAL,
            "core 5 of a 4-core parent"
        );
    }

    #[test]
    fn test_uniform_topologies_spread_cores_over_nodes_and_list_cpus_in_order() {
        let topology = Topology::uniform(3, 2, 2);
        let nodes: Vec<(u32, u32, u32)> = topology
            .cpus()
            .iter()
            .map(|cpu| (cpu.id, cpu.core, cpu.numa_node))
            .collect();
        assert_eq!(
            nodes,
            [
                (0, 0, 0),
                (1, 1, 0),
                (2, 2, 1),
                (3, 0, 0),
                (4, 1, 0),
                (5, 2, 1)
            ]
        );
        assert_eq!(
            Topology::uniform(2, 0, 0).nr_cpu_ids(),
            2,
            "one thread at least"
        );
        assert_eq!(Topology::from_cpus(Vec::new()).nr_cpu_ids(), 0);
        let shuffled = Topology::from_cpus(vec![
            ne_driver::Cpu {
                id: 2,
                core: 0,
                numa_node: 0,
            },
            ne_driver::Cpu {
                id: 0,
                core: 0,
                numa_node: 1,
            },
        ]);
        assert_eq!(shuffled.cpus()[0].id, 0);
        let cpu2 = *shuffled.cpu(2).unwrap();
        assert_eq!(
            shuffled.siblings(&cpu2).into_iter().collect::<Vec<_>>(),
            [2],
            "same core number on another node is not a sibling"
        );
    }

    #[test]
    fn test_the_walk_merges_contiguous_pages_and_splits_the_rest() {
        let mut memory = Hugepages::contiguous(USER_BASE, 1 << 30, 2);
        memory.map(USER_BASE + 2 * HUGEPAGE, 3 << 30, 1);
        memory.map(USER_BASE + 3 * HUGEPAGE, (3 << 30) + HUGEPAGE, 1);
        let runs = walk_region(&memory, USER_BASE, 4 * HUGEPAGE, 0).unwrap();
        assert_eq!(
            runs,
            [
                PhysRun {
                    paddr: 1 << 30,
                    size: 2 * HUGEPAGE
                },
                PhysRun {
                    paddr: 3 << 30,
                    size: 2 * HUGEPAGE
                }
            ]
        );
        let one_gib_page = Page {
            phys: 4 << 30,
            size: 1 << 30,
            hugetlb: true,
            numa_node: 0,
        };
        let mut big = Hugepages::default();
        big.insert(USER_BASE, one_gib_page);
        let runs = walk_region(&big, USER_BASE, 1 << 30, 0).unwrap();
        assert_eq!(runs.len(), 1, "one 1 GiB page is one run");
    }

    #[test]
    fn test_memory_behind_a_mutex_is_the_same_memory() {
        let rig = rig();
        let enclave = rig.driver.create_vm().unwrap();
        let memory = std::sync::Mutex::new(Hugepages::contiguous(USER_BASE, 1 << 30, 1));
        assert_eq!(
            enclave
                .set_user_memory_region(region(USER_END, HUGEPAGE), &memory)
                .unwrap_err()
                .ne_error(),
            Some(NeError::InvalidMemRegionAddr),
            "access_ok goes through the lock"
        );
        enclave
            .set_user_memory_region(region(USER_BASE, HUGEPAGE), &memory)
            .unwrap();
        assert_eq!(enclave.info().mem_size, HUGEPAGE);
    }

    #[test]
    fn test_the_walk_refuses_unmapped_empty_and_misaligned_memory() {
        let memory = Hugepages::contiguous(USER_BASE, 1 << 30, 1);
        let unmapped = walk_region(&memory, USER_BASE, 2 * HUGEPAGE, 0).unwrap_err();
        assert_eq!(unmapped.errno(), errno::EFAULT);
        let empty = walk_region(&memory, USER_BASE, 0, 0).unwrap_err();
        assert_eq!(empty.errno(), errno::ENOMEM);
        let mut odd = Hugepages::default();
        odd.insert(
            USER_BASE,
            Page {
                phys: (1 << 30) + 4096,
                size: HUGEPAGE,
                hugetlb: true,
                numa_node: 0,
            },
        );
        let misaligned = walk_region(&odd, USER_BASE, HUGEPAGE, 0).unwrap_err();
        assert_eq!(misaligned.errno(), errno::EINVAL);
        assert_eq!(
            walk_region(&memory, USER_BASE, HUGEPAGE, 1)
                .unwrap_err()
                .ne_error(),
            Some(NeError::MemDifferentNumaNode)
        );
    }
}
