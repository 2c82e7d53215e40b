// SPDX-License-Identifier: Apache-2.0
//! The parent's CPU topology and the NE CPU pool (`ne_cpus`, `ne_setup_cpu_pool`).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{errno, Error, Result};

/// One logical CPU of the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The Linux CPU number.
    pub id: u32,
    /// The core it belongs to (`topology_core_id`); siblings share it.
    pub core: u32,
    /// Its NUMA node.
    pub numa_node: u32,
}

/// How Linux numbers a parent's CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuNumbering {
    /// As on x86: thread `t` of core `c` is CPU `t * cores + c` (CPU 0's sibling is
    /// `cores`).
    #[default]
    SiblingsApart,
    /// As on arm64 (`virt` with `threads=`): a core's threads are adjacent CPUs (0-1, 2-3);
    /// with `clusters` of them, core ids restart in each cluster, and the driver, which
    /// compares core ids, takes same-numbered cores of different clusters for one core.
    SiblingsAdjacent {
        /// Clusters the cores are split into (1: none).
        clusters: u32,
    },
}

/// The parent's CPUs, as the driver reads them from the kernel's topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    cpus: Vec<Cpu>,
}

impl Topology {
    /// `cores` cores of `threads` threads, spread evenly over `numa_nodes` nodes, numbered
    /// as x86 Linux numbers them: CPU `t * cores + c` is thread `t` of core `c`, so the
    /// siblings of CPU 0 are `cores`, `2 * cores`, …
    pub fn uniform(cores: u32, threads: u32, numa_nodes: u32) -> Topology {
        Self::numbered(cores, threads, numa_nodes, CpuNumbering::SiblingsApart)
    }

    /// `cores` cores of `threads` threads over `numa_nodes` nodes, numbered as `numbering`
    /// says.
    pub fn numbered(
        cores: u32,
        threads: u32,
        numa_nodes: u32,
        numbering: CpuNumbering,
    ) -> Topology {
        let threads = threads.max(1);
        let cores_per_node = cores.div_ceil(numa_nodes.max(1)).max(1);
        let cpus = (0..cores)
            .flat_map(|core| (0..threads).map(move |thread| (core, thread)))
            .map(|(core, thread)| match numbering {
                CpuNumbering::SiblingsApart => Cpu {
                    id: thread * cores + core,
                    core,
                    numa_node: core / cores_per_node,
                },
                CpuNumbering::SiblingsAdjacent { clusters } => Cpu {
                    id: core * threads + thread,
                    core: core % cores.div_ceil(clusters.max(1)).max(1),
                    numa_node: core / cores_per_node,
                },
            })
            .collect();
        Self::from_cpus(cpus)
    }

    /// The NE CPU pool of every CPU but those of CPU 0's core (as the driver sees cores),
    /// as a CPU list: `1-3,5-7` for 4 x86 cores of 2 threads, `2-7` on arm64.
    pub fn pool_without_cpu0(&self) -> String {
        let reserved = self
            .cpu(0)
            .map(|cpu0| self.siblings(cpu0))
            .unwrap_or_default();
        let ids: Vec<u32> = self
            .cpus
            .iter()
            .map(|cpu| cpu.id)
            .filter(|id| !reserved.contains(id))
            .collect();
        cpu_list(&ids)
    }

    /// A topology of the given CPUs.
    pub fn from_cpus(mut cpus: Vec<Cpu>) -> Topology {
        cpus.sort_by_key(|cpu| cpu.id);
        Topology { cpus }
    }

    /// Every CPU, by number.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    /// The CPU numbered `id`.
    pub fn cpu(&self, id: u32) -> Option<&Cpu> {
        self.cpus.iter().find(|cpu| cpu.id == id)
    }

    /// `nr_cpu_ids`: one more than the highest CPU number.
    pub fn nr_cpu_ids(&self) -> u32 {
        self.cpus.last().map_or(0, |cpu| cpu.id + 1)
    }

    /// The CPUs that share `cpu`'s core (`topology_sibling_cpumask`), `cpu` included.
    pub fn siblings(&self, cpu: &Cpu) -> BTreeSet<u32> {
        self.cpus
            .iter()
            .filter(|other| other.core == cpu.core && other.numa_node == cpu.numa_node)
            .map(|other| other.id)
            .collect()
    }
}

/// `ids` (ascending) as a Linux CPU list, runs written as ranges: `1-3,5-7`.
fn cpu_list(ids: &[u32]) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs.iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a Linux CPU list (`cpulist_parse`): comma-separated numbers and ranges, e.g.
/// `1-3,5`. Surrounding white space (the newline `echo` adds) is ignored.
pub fn parse_cpu_list(list: &str) -> Result<BTreeSet<u32>> {
    let invalid = |why: &str| Error::with_errno(errno::EINVAL, format!("CPU list {list:?}: {why}"));
    let mut cpus = BTreeSet::new();
    let trimmed = list.trim();
    if trimmed.is_empty() {
        return Ok(cpus);
    }
    for part in trimmed.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first, last),
            None => (part, part),
        };
        let parse = |text: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| invalid("not a CPU number"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first > last {
            return Err(invalid("a range runs backwards"));
        }
        if last - first > 65_536 {
            return Err(invalid("a range is too long"));
        }
        cpus.extend(first..=last);
    }
    Ok(cpus)
}

/// The CPU pool: whole cores set aside for enclaves (`struct ne_cpu_pool`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuPool {
    /// Free threads per core index; a core leaves the pool whole when an enclave claims it.
    pub(crate) available: BTreeMap<u32, BTreeSet<u32>>,
    /// Every core the pool was set up with, to restore on teardown.
    pub(crate) cores: BTreeMap<u32, BTreeSet<u32>>,
    /// `nr_threads_per_core`.
    pub(crate) threads_per_core: u32,
    /// `nr_parent_vm_cores`.
    pub(crate) parent_cores: u32,
    /// The pool's NUMA node, which enclave memory must be on.
    pub(crate) numa_node: u32,
}

impl CpuPool {
    /// Builds the pool from `ne_cpus`'s value, with every check of `ne_setup_cpu_pool`
    /// (each failure is `EINVAL`): parsable, non-empty, CPUs that exist, one NUMA node,
    /// neither CPU 0 nor its siblings, full cores only, core ids in range.
    pub fn from_list(list: &str, topology: &Topology) -> Result<CpuPool> {
        let invalid =
            |why: String| Error::with_errno(errno::EINVAL, format!("ne_cpus {list:?}: {why}"));
        if list.len() > ne_abi::uapi::CPUS_SIZE {
            return Err(invalid("longer than 512 characters".to_owned()));
        }
        let ids = parse_cpu_list(list)?;
        let Some(&first) = ids.first() else {
            return Err(invalid("no CPU given".to_owned()));
        };
        let cpus = ids
            .iter()
            .map(|&id| {
                topology
                    .cpu(id)
                    .ok_or_else(|| invalid(format!("CPU {id} is not online")))
            })
            .collect::<Result<Vec<&Cpu>>>()?;
        let numa_node = topology.cpu(first).map_or(0, |cpu| cpu.numa_node);
        if let Some(cpu) = cpus.iter().find(|cpu| cpu.numa_node != numa_node) {
            return Err(invalid(format!(
                "CPU {} is on another NUMA node than CPU {first}",
                cpu.id
            )));
        }
        let boot_siblings = topology
            .cpu(0)
            .map(|cpu0| topology.siblings(cpu0))
            .unwrap_or_default();
        // CPU 0 is its own sibling; a topology without it has refused CPU 0 already.
        if let Some(id) = ids.iter().find(|id| boot_siblings.contains(id)) {
            return Err(invalid(format!(
                "CPU {id} is CPU 0 or a sibling of it, which the parent keeps"
            )));
        }
        let mut cores = BTreeMap::new();
        for cpu in &cpus {
            let siblings = topology.siblings(cpu);
            if let Some(missing) = siblings.iter().find(|sibling| !ids.contains(sibling)) {
                return Err(invalid(format!(
                    "CPU {} is listed without its sibling {missing}: give full cores",
                    cpu.id
                )));
            }
            cores.insert(cpu.core, siblings);
        }
        let threads_per_core = cores.values().next().map_or(1, |threads| {
            u32::try_from(threads.len()).unwrap_or(u32::MAX)
        });
        let parent_cores = topology.nr_cpu_ids() / threads_per_core.max(1);
        if let Some(core) = cores.keys().find(|&&core| core >= parent_cores) {
            return Err(invalid(format!(
                "core {core} is beyond the parent's {parent_cores} cores"
            )));
        }
        Ok(CpuPool {
            available: cores.clone(),
            cores,
            threads_per_core,
            parent_cores,
            numa_node,
        })
    }

    /// Whether some core in the pool has a free thread.
    pub fn has_free_core(&self) -> bool {
        self.available.values().any(|threads| !threads.is_empty())
    }

    /// The pool's CPUs, free or claimed.
    pub fn cpus(&self) -> BTreeSet<u32> {
        self.cores.values().flatten().copied().collect()
    }

    /// The pool's NUMA node.
    pub fn numa_node(&self) -> u32 {
        self.numa_node
    }

    /// The lowest-indexed core with free threads, taken out of the pool whole.
    pub(crate) fn claim_any_core(&mut self) -> Option<(u32, BTreeSet<u32>)> {
        let core = *self
            .available
            .iter()
            .find(|(_, threads)| !threads.is_empty())?
            .0;
        self.claim_core(core)
    }

    /// The core holding `cpu`, if it is free in the pool.
    pub(crate) fn core_of(&self, cpu: u32) -> Option<u32> {
        self.available
            .iter()
            .find(|(_, threads)| threads.contains(&cpu))
            .map(|(&core, _)| core)
    }

    /// Takes core `core` out of the pool whole.
    pub(crate) fn claim_core(&mut self, core: u32) -> Option<(u32, BTreeSet<u32>)> {
        let threads = std::mem::take(self.available.get_mut(&core)?);
        (!threads.is_empty()).then_some((core, threads))
    }

    /// Puts claimed cores back.
    pub(crate) fn give_back(&mut self, cores: &BTreeMap<u32, BTreeSet<u32>>) {
        for (core, threads) in cores {
            if let Some(available) = self.available.get_mut(core) {
                available.extend(threads);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_cpu_list_ranges_and_singles() {
        let cpus = parse_cpu_list("1-3,5\n").unwrap();
        assert_eq!(cpus.into_iter().collect::<Vec<_>>(), [1, 2, 3, 5]);
    }

    #[test]
    fn test_parse_cpu_list_rejects_garbage() {
        for list in ["a", "1-", "3-1", "1,,2", "-2"] {
            assert_eq!(
                parse_cpu_list(list).unwrap_err().errno(),
                errno::EINVAL,
                "{list:?}"
            );
        }
    }

    #[test]
    fn test_uniform_topology_numbers_siblings_like_x86_linux() {
        let topology = Topology::uniform(4, 2, 1);
        let cpu1 = *topology.cpu(1).unwrap();
        assert_eq!(
            topology.siblings(&cpu1).into_iter().collect::<Vec<_>>(),
            [1, 5]
        );
        assert_eq!(topology.nr_cpu_ids(), 8);
    }

    #[test]
    fn test_pool_of_full_cores_is_accepted() {
        let topology = Topology::uniform(4, 2, 1);
        let pool = CpuPool::from_list("1,5,2,6", &topology).unwrap();
        assert_eq!(pool.threads_per_core, 2);
        assert_eq!(pool.parent_cores, 4);
        assert!(pool.has_free_core());
    }

    #[test]
    fn test_pool_rejections_are_einval() {
        let topology = Topology::uniform(4, 2, 2);
        for list in ["", "1", "0,4", "4", "1,5,2,6", "9"] {
            let error = CpuPool::from_list(list, &topology).unwrap_err();
            assert_eq!(error.errno(), errno::EINVAL, "{list:?}: {error}");
        }
    }

    fn siblings_of(topology: &Topology, id: u32) -> Vec<u32> {
        topology
            .siblings(topology.cpu(id).unwrap())
            .into_iter()
            .collect()
    }

    #[test]
    fn test_arm64_numbering_puts_siblings_next_to_each_other() {
        let topology = Topology::numbered(4, 2, 1, CpuNumbering::SiblingsAdjacent { clusters: 1 });
        assert_eq!(siblings_of(&topology, 0), [0, 1]);
        assert_eq!(siblings_of(&topology, 5), [4, 5]);
        assert_eq!(topology.nr_cpu_ids(), 8);
        assert_eq!(topology.pool_without_cpu0(), "2-7");
        let pool = CpuPool::from_list("2-7", &topology).unwrap();
        assert_eq!(pool.threads_per_core, 2);
    }

    #[test]
    fn test_arm64_clusters_restart_core_ids_and_the_driver_joins_their_cores() {
        // -smp 8,clusters=2: CPUs 1 and 5 have core id 1, and the driver takes them for one core.
        let topology = Topology::numbered(8, 1, 1, CpuNumbering::SiblingsAdjacent { clusters: 2 });
        assert_eq!(siblings_of(&topology, 1), [1, 5]);
        assert_eq!(topology.pool_without_cpu0(), "1-3,5-7");
    }

    #[test]
    fn test_the_default_pool_of_x86_numbering_is_every_core_but_cpu0s() {
        assert_eq!(Topology::uniform(4, 2, 1).pool_without_cpu0(), "1-3,5-7");
        assert_eq!(Topology::uniform(7, 1, 1).pool_without_cpu0(), "1-6");
    }
}
