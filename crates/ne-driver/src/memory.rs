// SPDX-License-Identifier: Apache-2.0
//! User memory as the driver sees it through `get_user_pages`, and the page walk of
//! `NE_SET_USER_MEMORY_REGION` (`ne_set_user_memory_region_ioctl`).

use ne_abi::uapi::MIN_MEM_REGION_SIZE;
use ne_abi::NeError;

use crate::error::{errno, Error, Result};

/// One pinned page of user memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The guest-physical address of the user address asked for.
    pub phys: u64,
    /// The page's size in bytes.
    pub size: u64,
    /// Whether it is a hugetlbfs page.
    pub hugetlb: bool,
    /// The NUMA node it is on.
    pub numa_node: u32,
}

/// The address space of the process that owns an enclave: what `access_ok` and
/// `get_user_pages` consult.
pub trait UserMemory {
    /// `access_ok(addr, size)`: the range is user memory that could be mapped.
    fn access_ok(&self, addr: u64, size: u64) -> bool;
    /// Pins the page mapped at `addr`; a positive errno if nothing is mapped there.
    fn page(&self, addr: u64) -> Result<Page, i32>;
}

impl<T: UserMemory> UserMemory for std::sync::Mutex<T> {
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        crate::shared::lock(self).access_ok(addr, size)
    }

    fn page(&self, addr: u64) -> Result<Page, i32> {
        crate::shared::lock(self).page(addr)
    }
}

/// One physically contiguous run to send as `SLOT_ADD_MEM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRun {
    /// Its guest-physical start.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// Walks `size` bytes at user address `addr` page by page, checking each page as
/// `ne_sanity_check_user_mem_region_page` does, and merges pages that are physically
/// contiguous into runs (`ne_merge_phys_contig_memory_regions`).
pub fn walk_region(
    memory: &dyn UserMemory,
    addr: u64,
    size: u64,
    numa_node: u32,
) -> Result<Vec<PhysRun>> {
    let mut runs: Vec<PhysRun> = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let at = addr
            .checked_add(offset)
            .ok_or(NeError::InvalidMemRegionAddr)?;
        let page = memory
            .page(at)
            .map_err(|e| Error::with_errno(e, format!("no page is mapped at {at:#x}")))?;
        if !page.hugetlb {
            return Err(NeError::MemNotHugePage.into());
        }
        if page.size == 0 || page.size % MIN_MEM_REGION_SIZE != 0 {
            return Err(NeError::InvalidPageSize.into());
        }
        if page.numa_node != numa_node {
            return Err(NeError::MemDifferentNumaNode.into());
        }
        if page.phys % MIN_MEM_REGION_SIZE != 0 {
            return Err(Error::with_errno(
                errno::EINVAL,
                format!("page at {:#x} is not 2 MiB aligned physically", page.phys),
            ));
        }
        match runs.last_mut() {
            Some(run) if run.paddr.checked_add(run.size) == Some(page.phys) => {
                run.size = run.size.saturating_add(page.size);
            }
            _ => runs.push(PhysRun {
                paddr: page.phys,
                size: page.size,
            }),
        }
        offset = offset.saturating_add(page.size);
    }
    if runs.is_empty() {
        // Linux: a zero-sized region passes the size check and fails here.
        return Err(Error::with_errno(errno::ENOMEM, "the region is empty"));
    }
    Ok(runs)
}
