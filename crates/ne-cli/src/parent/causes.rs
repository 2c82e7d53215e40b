// SPDX-License-Identifier: Apache-2.0
//! What a refused launch means on this parent, so the error names the cause: the enclave
//! that holds a CID or a CPU, how many CPUs of the pool are free, the sibling thread a
//! whole core needs, the CPU ids that exist.

use ne_parent::{CpuRequest, ParentStatus};

use crate::error::{CliError, Code};

/// A running enclave of this parent, as far as CIDs and CPUs go.
#[derive(Clone, Debug)]
pub struct Holder {
    /// Its enclave ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its CID.
    pub cid: u64,
    /// Its CPUs.
    pub cpus: Vec<u32>,
}

impl Holder {
    fn label(&self) -> String {
        format!("enclave {} ({:?})", self.id, self.name)
    }
}

/// The parent as a refused launch found it.
#[derive(Clone, Debug)]
pub struct Situation {
    /// The parent's CPUs, pool and cores.
    pub status: ParentStatus,
    /// Its running enclaves.
    pub holders: Vec<Holder>,
}

impl Situation {
    fn cpu_holder(&self, cpu: u32) -> Option<&Holder> {
        self.holders.iter().find(|h| h.cpus.contains(&cpu))
    }

    /// The pool's CPUs no enclave holds.
    pub fn free_cpus(&self) -> Vec<u32> {
        let pool = &self.status.cpu_pool;
        pool.iter()
            .copied()
            .filter(|cpu| self.cpu_holder(*cpu).is_none())
            .collect()
    }

    /// `NE_START_ENCLAVE` found `cid` taken.
    pub fn cid_in_use(&self, cid: u64) -> CliError {
        let holder = self.holders.iter().find(|h| h.cid == cid);
        let by = holder.map_or_else(
            || "another enclave on this device".to_owned(),
            Holder::label,
        );
        CliError::new(Code::StartEnclave, format!("CID {cid} is in use by {by}"))
            .hint("omit --enclave-cid to let the device pick a free CID, or terminate that enclave")
    }

    /// Why the CPUs named in `ids` could not all be added, if one of them explains it.
    pub fn named_cpus_refused(&self, ids: &[u32]) -> Option<CliError> {
        let pool = cpu_list(&self.status.cpu_pool);
        let free = self.free_cpus();
        for &cpu in ids {
            if let Some(count) = self.status.cpus.filter(|count| cpu >= *count) {
                return Some(
                    CliError::new(
                        Code::NoSuchCpuInPool,
                        format!(
                            "CPU {cpu} does not exist: this parent has CPUs 0-{}",
                            count.saturating_sub(1)
                        ),
                    )
                    .hint(format!("the NE CPU pool is {pool}")),
                );
            }
            if !self.status.cpu_pool.contains(&cpu) {
                return Some(
                    CliError::new(
                        Code::NoSuchCpuInPool,
                        format!("CPU {cpu} is not in the NE CPU pool ({pool})"),
                    )
                    .hint("pick CPUs of the pool, or add it to the pool (ne_cpus; --cpu-pool for the emulated parent)"),
                );
            }
            if let Some(holder) = self.cpu_holder(cpu) {
                return Some(
                    CliError::new(
                        Code::NoSuchCpuInPool,
                        format!(
                            "CPU {cpu} is in the NE CPU pool, but {} holds it (CPUs {})",
                            holder.label(),
                            cpu_list(&holder.cpus)
                        ),
                    )
                    .hint(format!("free CPUs of the pool: {}", or_none(&free))),
                );
            }
        }
        None
    }

    /// The pool has fewer free CPUs than `asked`.
    pub fn too_few_cpus(&self, asked: u32) -> CliError {
        let pool = &self.status.cpu_pool;
        let free = self.free_cpus();
        let held: Vec<String> = self
            .holders
            .iter()
            .filter(|h| !h.cpus.is_empty())
            .map(|h| format!("{} holds {}", h.label(), cpu_list(&h.cpus)))
            .collect();
        let mut message = format!(
            "{asked} CPUs asked; the NE CPU pool has {} ({}), {} of them free",
            pool.len(),
            or_none(pool),
            free.len()
        );
        if !held.is_empty() {
            message.push_str(&format!(": {}", held.join("; ")));
        }
        CliError::new(Code::InsufficientCpus, message)
            .hint("ask for fewer CPUs, or terminate an enclave to free its cores")
    }

    /// `NE_START_ENCLAVE` found a core only partly the enclave's.
    pub fn part_of_a_core(&self, cpus: &CpuRequest) -> CliError {
        let threads = self.status.cores.first().map_or(2, Vec::len);
        let (message, hint) = match cpus {
            CpuRequest::Ids(ids) => {
                let missing: Vec<u32> = ids
                    .iter()
                    .filter_map(|cpu| self.status.cores.iter().find(|core| core.contains(cpu)))
                    .flatten()
                    .copied()
                    .filter(|sibling| !ids.contains(sibling))
                    .collect();
                let mut whole: Vec<u32> = ids.iter().chain(&missing).copied().collect();
                whole.sort_unstable();
                whole.dedup();
                (
                    format!(
                        "an enclave takes whole CPU cores: --cpu-ids {} leaves out the sibling thread(s) {}",
                        cpu_list(ids),
                        or_none(&missing)
                    ),
                    format!("name whole cores, e.g. --cpu-ids {}", comma_list(&whole)),
                )
            }
            CpuRequest::Count(count) => (
                format!(
                    "an enclave takes whole CPU cores of {threads} threads; --cpu-count {count} leaves one part-used"
                ),
                format!("ask for a multiple of {threads} CPUs"),
            ),
        };
        CliError::new(Code::StartEnclave, message).hint(hint)
    }
}

/// `cpus` as a Linux CPU list: `1-3,5`.
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while let Some(&first) = sorted.get(index) {
        let mut last = first;
        while sorted.get(index + 1) == Some(&(last + 1)) {
            last += 1;
            index += 1;
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        index += 1;
    }
    parts.join(",")
}

fn comma_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn or_none(cpus: &[u32]) -> String {
    if cpus.is_empty() {
        "none".to_owned()
    } else {
        cpu_list(cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation() -> Situation {
        Situation {
            status: ParentStatus {
                backend: "emulated".to_owned(),
                cpus: Some(8),
                cpu_pool: vec![1, 2, 3, 5, 6, 7],
                cores: vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]],
                memory_mib: None,
                hugepages_total_mib: None,
                hugepages_free_mib: None,
                max_enclaves: None,
            },
            holders: vec![Holder {
                id: "i-0-enc1".to_owned(),
                name: "first".to_owned(),
                cid: 20,
                cpus: vec![1, 5],
            }],
        }
    }

    #[test]
    fn test_cpu_lists_are_written_as_linux_writes_them() {
        assert_eq!(cpu_list(&[5, 1, 2, 3, 7]), "1-3,5,7");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn test_a_taken_cid_names_its_enclave() {
        let error = situation().cid_in_use(20).to_string();
        assert!(
            error.contains("CID 20 is in use by enclave i-0-enc1 (\"first\")"),
            "{error}"
        );
    }

    #[test]
    fn test_a_busy_cpu_names_its_holder_and_the_free_ones() {
        let error = situation().named_cpus_refused(&[5, 1]).unwrap().to_string();
        assert!(
            error.contains("CPU 5 is in the NE CPU pool, but enclave i-0-enc1"),
            "{error}"
        );
        assert!(error.contains("free CPUs of the pool: 2-3,6-7"), "{error}");
    }

    #[test]
    fn test_a_cpu_beyond_the_parent_gives_the_range() {
        let error = situation()
            .named_cpus_refused(&[8, 12])
            .unwrap()
            .to_string();
        assert!(
            error.contains("CPU 8 does not exist: this parent has CPUs 0-7"),
            "{error}"
        );
    }

    #[test]
    fn test_too_many_cpus_says_how_many_exist_and_are_free() {
        let error = situation().too_few_cpus(100).to_string();
        assert!(
            error.contains("100 CPUs asked; the NE CPU pool has 6 (1-3,5-7), 4 of them free"),
            "{error}"
        );
    }

    #[test]
    fn test_part_of_a_core_names_the_missing_sibling() {
        let error = situation()
            .part_of_a_core(&CpuRequest::Ids(vec![2]))
            .to_string();
        assert!(
            error.contains("leaves out the sibling thread(s) 6"),
            "{error}"
        );
        assert!(error.contains("--cpu-ids 2,6"), "{error}");
        let error = situation()
            .part_of_a_core(&CpuRequest::Count(3))
            .to_string();
        assert!(
            error.contains("whole CPU cores of 2 threads; --cpu-count 3"),
            "{error}"
        );
    }
}
