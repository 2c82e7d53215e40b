// SPDX-License-Identifier: Apache-2.0
//! The enclave API's conformance list: each validation path of the Linux driver's ioctls
//! (`ne_misc_dev.c`) and the error user space sees, written once over [`ParentInstance`]
//! so the same list runs against the emulated parent (in `cargo test`) and against the
//! kernel's `/dev/nitro_enclaves` (in the QEMU guest of the end-to-end suite).
//!
//! A case returns what it checked, [`Verdict::NotApplicable`] when the parent's shape
//! cannot show the behaviour (no SMT siblings, no way to make an enclave end), or the
//! first difference it found.

use std::time::Duration;

use ne_abi::errno::{EFAULT, ENOEXEC};
use ne_abi::uapi::{EIF_IMAGE, EIF_LOAD_OFFSET};
use ne_abi::{NeError, NeUserMemoryRegion};
use ne_driver::{EnclaveDevice, EnclaveFd};
use ne_eif::{EifBuilder, Metadata};
use ne_hypervisor::error_chain;

use crate::donor::{DonorError, KernelHugepages, MemoryDonor, ProcessMemory};
use crate::hugepages::HUGEPAGE_BYTES;
use crate::instance::ParentInstance;
use crate::launch::{launch, CpuRequest, LaunchRequest, Launched};

/// The memory of a process that can also map plain (not hugetlbfs) pages.
pub trait ConformanceMemory: MemoryDonor {
    /// Maps `len` bytes of plain 4 KiB pages; returns the address.
    fn map_plain(&mut self, len: u64) -> Result<u64, DonorError>;
}

impl ConformanceMemory for ProcessMemory {
    fn map_plain(&mut self, len: u64) -> Result<u64, DonorError> {
        Ok(self.map_small(len))
    }
}

impl ConformanceMemory for KernelHugepages {
    fn map_plain(&mut self, len: u64) -> Result<u64, DonorError> {
        self.map_plain_pages(len)
    }
}

/// What a passing case found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The behaviour holds; what was checked.
    Passed(String),
    /// This parent cannot show it; why.
    NotApplicable(String),
}

/// A case's result: the verdict, or the first difference.
pub type CaseResult = Result<Verdict, String>;

/// One case of the list.
pub struct Case<P> {
    /// Its name, as the tests and the e2e summary print it.
    pub name: &'static str,
    /// Runs it on a parent with a CPU pool and at least 512 MiB of hugepages free.
    pub run: fn(&P) -> CaseResult,
}

impl<P> std::fmt::Debug for Case<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Every case, in order.
pub fn cases<P>() -> Vec<Case<P>>
where
    P: ParentInstance,
    P::Memory: ConformanceMemory,
{
    macro_rules! list {
        ($($case:ident),* $(,)?) => {
            vec![$(Case { name: stringify!($case), run: $case::<P> }),*]
        };
    }
    list![
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
    ]
}

type Enclave<P> = <<P as ParentInstance>::Device as EnclaveDevice>::Enclave;

fn region(addr: u64, size: u64) -> NeUserMemoryRegion {
    NeUserMemoryRegion {
        flags: 0,
        memory_size: size,
        userspace_addr: addr,
    }
}

/// A new process with a new enclave in INIT state.
fn enclave<P: ParentInstance>(parent: &P) -> Result<(Enclave<P>, P::Memory), String> {
    let (device, memory) = parent.process();
    let enclave = device
        .create_vm()
        .map_err(|e| format!("NE_CREATE_VM: {e}"))?;
    Ok((enclave, memory))
}

fn hugepages<M: MemoryDonor>(memory: &mut M, pages: u64) -> Result<u64, String> {
    memory
        .map_hugepages(pages * HUGEPAGE_BYTES)
        .map_err(|e| format!("mapping hugepages: {e}"))
}

/// Donates `mib` MiB one hugepage per region, as nitro-cli does.
fn donate<P: ParentInstance>(
    enclave: &Enclave<P>,
    memory: &mut P::Memory,
    mib: u64,
) -> Result<(), String> {
    for _ in 0..mib / 2 {
        let addr = hugepages(memory, 1)?;
        enclave
            .set_user_memory_region(region(addr, HUGEPAGE_BYTES))
            .map_err(|e| format!("donating a hugepage: {e}"))?;
    }
    Ok(())
}

/// Checks that `result` failed with `NE_ERR` `expected`.
fn expect_ne<T: std::fmt::Debug>(
    what: &str,
    result: ne_driver::Result<T>,
    expected: NeError,
) -> Result<(), String> {
    match result {
        Err(error) if error.ne_error() == Some(expected) => Ok(()),
        Err(error) => Err(format!("{what}: {error}, expected {}", expected.name())),
        Ok(value) => Err(format!(
            "{what}: succeeded ({value:?}), expected {}",
            expected.name()
        )),
    }
}

/// Checks that `result` failed with `errno`.
fn expect_errno<T: std::fmt::Debug>(
    what: &str,
    result: ne_driver::Result<T>,
    errno: i32,
) -> Result<(), String> {
    match result {
        Err(error) if error.errno() == errno => Ok(()),
        Err(error) => Err(format!("{what}: {error}, expected errno {errno}")),
        Ok(value) => Err(format!(
            "{what}: succeeded ({value:?}), expected errno {errno}"
        )),
    }
}

fn passed(what: &str) -> CaseResult {
    Ok(Verdict::Passed(what.to_owned()))
}

fn pool<P: ParentInstance>(parent: &P) -> Result<Vec<u32>, String> {
    let pool = parent.status().cpu_pool;
    if pool.is_empty() {
        return Err("the parent has no CPU pool (ne_cpus)".to_owned());
    }
    Ok(pool)
}

/// A small valid image, for cases that need a running enclave.
fn sample_eif() -> Result<Vec<u8>, String> {
    EifBuilder {
        kernel: vec![0x5a; 64 * 1024],
        cmdline: "console=ttyS0".to_owned(),
        ramdisks: vec![vec![7; 64 * 1024]],
        metadata: Metadata::new("conformance", "1", "2026-12-01T00:00:00Z"),
        flags: 0,
    }
    .build()
    .map(|(eif, _)| eif)
    .map_err(|e| format!("building the sample EIF: {e}"))
}

/// Launches the sample image with the fewest vCPUs that make whole cores (1, 2 or 4
/// threads per core).
fn launch_sample<P: ParentInstance>(parent: &P) -> Result<Launched<P>, String> {
    let eif = sample_eif()?;
    let mut last = String::new();
    for count in [1, 2, 4] {
        let request = LaunchRequest {
            eif: eif.clone(),
            memory_mib: 64,
            cpus: CpuRequest::Count(count),
            cid: 0,
            debug: false,
        };
        match launch(parent, &request) {
            Ok(launched) => return Ok(launched),
            Err(error) => {
                last = error_chain(&error);
                let partial = error.driver_error().and_then(ne_driver::Error::ne_error)
                    == Some(NeError::FullCoresNotUsed);
                if !partial {
                    break;
                }
            }
        }
    }
    Err(format!("launch: {last}"))
}

// NE_SET_USER_MEMORY_REGION

fn memory_at_address_zero_is_efault<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    expect_errno(
        "region at 0",
        enclave.set_user_memory_region(region(0, HUGEPAGE_BYTES)),
        EFAULT,
    )?;
    passed("EFAULT")
}

fn memory_unaligned_address_is_unaligned_mem_region_addr<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    let addr = hugepages(&mut memory, 2)?;
    expect_ne(
        "region at +4 KiB",
        enclave.set_user_memory_region(region(addr + 4096, HUGEPAGE_BYTES)),
        NeError::UnalignedMemRegionAddr,
    )?;
    passed("NE_ERR_UNALIGNED_MEM_REGION_ADDR")
}

fn memory_half_page_size_is_invalid_mem_region_size<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    let addr = hugepages(&mut memory, 1)?;
    expect_ne(
        "1 MiB region",
        enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES / 2)),
        NeError::InvalidMemRegionSize,
    )?;
    passed("NE_ERR_INVALID_MEM_REGION_SIZE")
}

fn memory_double_the_mapping_is_efault<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    let addr = hugepages(&mut memory, 1)?;
    expect_errno(
        "region twice the mapping",
        enclave.set_user_memory_region(region(addr, 2 * HUGEPAGE_BYTES)),
        EFAULT,
    )?;
    passed("EFAULT")
}

fn memory_in_kernel_space_or_wrapping_is_invalid_mem_region_addr<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    // Kernel space on x86-64 and arm64 alike.
    let kernel = 0xffff_8000_0000_0000;
    expect_ne(
        "region in kernel space",
        enclave.set_user_memory_region(region(kernel, HUGEPAGE_BYTES)),
        NeError::InvalidMemRegionAddr,
    )?;
    expect_ne(
        "region that wraps",
        enclave.set_user_memory_region(region(u64::MAX - (HUGEPAGE_BYTES - 1), HUGEPAGE_BYTES)),
        NeError::InvalidMemRegionAddr,
    )?;
    passed("NE_ERR_INVALID_MEM_REGION_ADDR for both")
}

fn memory_same_region_twice_is_mem_region_already_used<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    let addr = hugepages(&mut memory, 1)?;
    enclave
        .set_user_memory_region(region(addr, HUGEPAGE_BYTES))
        .map_err(|e| format!("first donation: {e}"))?;
    expect_ne(
        "the same region again",
        enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES)),
        NeError::MemRegionAlreadyUsed,
    )?;
    passed("NE_ERR_MEM_REGION_ALREADY_USED")
}

fn memory_bad_flags_is_invalid_flag_value<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    let addr = hugepages(&mut memory, 1)?;
    let mut bad = region(addr, HUGEPAGE_BYTES);
    bad.flags = 1;
    expect_ne(
        "flags 1",
        enclave.set_user_memory_region(bad),
        NeError::InvalidFlagValue,
    )?;
    passed("NE_ERR_INVALID_FLAG_VALUE")
}

fn memory_not_hugepage_backed_is_mem_not_huge_page<P>(parent: &P) -> CaseResult
where
    P: ParentInstance,
    P::Memory: ConformanceMemory,
{
    let (enclave, mut memory) = enclave(parent)?;
    let addr = memory
        .map_plain(2 * HUGEPAGE_BYTES)
        .map_err(|e| format!("mapping plain pages: {e}"))?;
    let aligned = addr.div_ceil(HUGEPAGE_BYTES) * HUGEPAGE_BYTES;
    let start = if aligned + HUGEPAGE_BYTES <= addr + 2 * HUGEPAGE_BYTES {
        aligned
    } else {
        return Ok(Verdict::NotApplicable(
            "no 2 MiB-aligned plain range".to_owned(),
        ));
    };
    expect_ne(
        "plain pages",
        enclave.set_user_memory_region(region(start, HUGEPAGE_BYTES)),
        NeError::MemNotHugePage,
    )?;
    passed("NE_ERR_MEM_NOT_HUGE_PAGE")
}

// NE_ADD_VCPU

fn vcpu_auto_picks_the_lowest_pool_cpu<P: ParentInstance>(parent: &P) -> CaseResult {
    let lowest = pool(parent)?.into_iter().min().unwrap_or_default();
    let (enclave, _memory) = enclave(parent)?;
    let cpu = enclave
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU 0: {e}"))?;
    if cpu != lowest {
        return Err(format!(
            "got CPU {cpu}, expected the pool's lowest, {lowest}"
        ));
    }
    Ok(Verdict::Passed(format!("CPU {cpu}")))
}

fn vcpu_beyond_the_parent_cpus_is_invalid_vcpu<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    expect_ne(
        "CPU 4294967294",
        enclave.add_vcpu(u32::MAX - 1),
        NeError::InvalidVcpu,
    )?;
    passed("NE_ERR_INVALID_VCPU")
}

fn vcpu_twice_is_vcpu_already_used<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    let cpu = enclave
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU 0: {e}"))?;
    expect_ne(
        "the same CPU again",
        enclave.add_vcpu(cpu),
        NeError::VcpuAlreadyUsed,
    )?;
    passed("NE_ERR_VCPU_ALREADY_USED")
}

fn vcpu_outside_the_pool_is_vcpu_not_in_cpu_pool<P: ParentInstance>(parent: &P) -> CaseResult {
    let pool = pool(parent)?;
    let cpus = parent.status().cpus.unwrap_or(0);
    // CPU 0 cannot be named (0 asks for any): the lowest other CPU outside the pool.
    let Some(outside) = (1..cpus).find(|cpu| !pool.contains(cpu)) else {
        return Ok(Verdict::NotApplicable(format!(
            "every CPU but 0 of the {cpus} is in the pool"
        )));
    };
    let (enclave, _memory) = enclave(parent)?;
    expect_ne(
        &format!("CPU {outside}"),
        enclave.add_vcpu(outside),
        NeError::VcpuNotInCpuPool,
    )?;
    Ok(Verdict::Passed(format!(
        "CPU {outside}: NE_ERR_VCPU_NOT_IN_CPU_POOL"
    )))
}

fn vcpu_after_the_whole_pool_is_no_cpus_avail_in_pool<P: ParentInstance>(parent: &P) -> CaseResult {
    let size = pool(parent)?.len();
    let (enclave, _memory) = enclave(parent)?;
    for _ in 0..size {
        enclave
            .add_vcpu(0)
            .map_err(|e| format!("NE_ADD_VCPU 0 within the pool: {e}"))?;
    }
    expect_ne(
        "one more than the pool",
        enclave.add_vcpu(0),
        NeError::NoCpusAvailInPool,
    )?;
    Ok(Verdict::Passed(format!(
        "{size} CPUs, then NE_ERR_NO_CPUS_AVAIL_IN_POOL"
    )))
}

fn vcpu_of_a_core_another_enclave_claimed_is_not_in_pool<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let (first, _memory) = enclave(parent)?;
    let cpu = first
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU 0: {e}"))?;
    let (second, _memory) = enclave(parent)?;
    expect_ne(
        "a CPU the first enclave holds",
        second.add_vcpu(cpu),
        NeError::VcpuNotInCpuPool,
    )?;
    passed("NE_ERR_VCPU_NOT_IN_CPU_POOL")
}

// NE_GET_IMAGE_LOAD_INFO

fn image_load_info_is_8_mib_and_checks_flags<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    let offset = enclave
        .image_load_info(EIF_IMAGE)
        .map_err(|e| format!("NE_GET_IMAGE_LOAD_INFO: {e}"))?;
    if offset != EIF_LOAD_OFFSET {
        return Err(format!("offset {offset:#x}, expected 8 MiB"));
    }
    expect_ne(
        "flags 2",
        enclave.image_load_info(2),
        NeError::InvalidFlagValue,
    )?;
    passed("8 MiB; flags 2 refused")
}

// NE_START_ENCLAVE

fn start_without_memory_is_no_mem_regions_added<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    expect_ne("start", enclave.start(0, 0), NeError::NoMemRegionsAdded)?;
    passed("NE_ERR_NO_MEM_REGIONS_ADDED")
}

fn start_below_64_mib_is_enclave_mem_min_size<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    donate::<P>(&enclave, &mut memory, 32)?;
    expect_ne(
        "start with 32 MiB",
        enclave.start(0, 0),
        NeError::EnclaveMemMinSize,
    )?;
    passed("NE_ERR_ENCLAVE_MEM_MIN_SIZE")
}

fn start_without_vcpus_is_no_vcpus_added<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    donate::<P>(&enclave, &mut memory, 64)?;
    expect_ne("start", enclave.start(0, 0), NeError::NoVcpusAdded)?;
    passed("NE_ERR_NO_VCPUS_ADDED")
}

fn start_without_a_cores_sibling_is_full_cores_not_used<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let (enclave, mut memory) = enclave(parent)?;
    donate::<P>(&enclave, &mut memory, 64)?;
    enclave
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU 0: {e}"))?;
    match enclave.start(0, 0) {
        Err(error) if error.ne_error() == Some(NeError::FullCoresNotUsed) => {
            passed("NE_ERR_FULL_CORES_NOT_USED")
        }
        // Cores of one thread: the start reached the device, which found no image.
        Err(error) if error.errno() == ENOEXEC => Ok(Verdict::NotApplicable(
            "the pool's cores have one thread each".to_owned(),
        )),
        other => Err(format!(
            "start with one thread of a core: {other:?}, expected NE_ERR_FULL_CORES_NOT_USED"
        )),
    }
}

fn start_bad_flags_and_reserved_cids_are_invalid<P: ParentInstance>(parent: &P) -> CaseResult {
    let (enclave, _memory) = enclave(parent)?;
    expect_ne("flags 2", enclave.start(2, 0), NeError::InvalidFlagValue)?;
    for cid in [1, 2, 3, u64::from(u32::MAX), 1 << 32] {
        expect_ne(
            &format!("CID {cid}"),
            enclave.start(0, cid),
            NeError::InvalidEnclaveCid,
        )?;
    }
    passed("flags 2 and CIDs 1, 2, 3, 2^32-1, 2^32 refused")
}

fn start_twice_and_setup_after_start_are_not_in_init_state<P: ParentInstance>(
    parent: &P,
) -> CaseResult {
    let mut launched = launch_sample(parent)?;
    let addr = hugepages(&mut launched.memory, 1)?;
    let enclave = &launched.enclave;
    expect_ne("start again", enclave.start(0, 0), NeError::NotInInitState)?;
    expect_ne("NE_ADD_VCPU", enclave.add_vcpu(0), NeError::NotInInitState)?;
    expect_ne(
        "NE_GET_IMAGE_LOAD_INFO",
        enclave.image_load_info(EIF_IMAGE),
        NeError::NotInInitState,
    )?;
    expect_ne(
        "NE_SET_USER_MEMORY_REGION",
        enclave.set_user_memory_region(region(addr, HUGEPAGE_BYTES)),
        NeError::NotInInitState,
    )?;
    launched.release().map_err(|e| format!("release: {e}"))?;
    passed("NE_ERR_NOT_IN_INIT_STATE for each")
}

// Events

fn ended_enclave_is_seen_as_pollhup<P: ParentInstance>(parent: &P) -> CaseResult {
    let launched = launch_sample(parent)?;
    let enclave = &launched.enclave;
    if enclave
        .wait_event(Duration::ZERO)
        .map_err(|e| e.to_string())?
    {
        return Err("POLLHUP before the enclave ended".to_owned());
    }
    match parent.end_enclave(enclave.slot_uid(), true) {
        Err(unsupported) => return Ok(Verdict::NotApplicable(unsupported.to_string())),
        Ok(false) => return Err("the parent found no enclave to end".to_owned()),
        Ok(true) => {}
    }
    if !enclave
        .wait_event(Duration::from_secs(5))
        .map_err(|e| e.to_string())?
    {
        return Err("no POLLHUP within 5 s of the crash".to_owned());
    }
    launched.release().map_err(|e| format!("release: {e}"))?;
    passed("POLLHUP after a crash")
}
