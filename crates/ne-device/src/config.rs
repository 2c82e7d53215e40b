// SPDX-License-Identifier: Apache-2.0
//! What the device is configured with: the parent's resources and the device's limits.

use std::ops::Range;

use thiserror::Error;

/// Memory regions are aligned to, and multiples of, 2 MiB (`NE_MIN_MEM_REGION_SIZE`).
pub const REGION_ALIGN_BYTES: u64 = ne_abi::uapi::MIN_MEM_REGION_SIZE;

/// Default [`DeviceConfig::max_slots`]: 4, as many enclaves as a real parent instance may run.
pub const DEFAULT_MAX_SLOTS: usize = 4;
/// Default [`DeviceConfig::max_mem_regions`]: 32 768, enough for a 64 GiB enclave donated as
/// unmerged 2 MiB hugepages (one `SLOT_ADD_MEM` per page, as nitro-cli sends them).
pub const DEFAULT_MAX_MEM_REGIONS: u64 = 32_768;
/// Default [`DeviceConfig::max_vcpus_per_slot`].
pub const DEFAULT_MAX_VCPUS_PER_SLOT: u32 = 256;
/// Default [`DeviceConfig::parent_cpus`].
pub const DEFAULT_PARENT_CPUS: u32 = 4;
/// Default [`DeviceConfig::parent_ram`]: the parent's first 4 GiB of guest-physical memory.
pub const DEFAULT_PARENT_RAM: Range<u64> = 0..4 << 30;

/// The parent's resources and the device's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The most slots (enclaves) that may exist at once; `SLOT_ALLOC` beyond it fails.
    pub max_slots: usize,
    /// The most memory regions one slot accepts; reported by `SLOT_ALLOC` as `mem_regions`.
    pub max_mem_regions: u64,
    /// The most vCPUs one slot accepts.
    pub max_vcpus_per_slot: u32,
    /// How many CPUs the parent has: vCPU ids run from 0 to `parent_cpus - 1`. CPU 0, the
    /// parent's boot CPU, is never donated.
    pub parent_cpus: u32,
    /// The parent's guest-physical RAM ranges: every donated region lies wholly inside one.
    pub parent_ram: Vec<Range<u64>>,
    /// Whether the device gates its MSI-X messages on its own table and PBA (enable,
    /// function mask, per-vector masks). Set it to `false` when the host emulates the MSI-X
    /// table itself and decides masking, as QEMU does for a vfio-user device.
    pub msix_gating: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            max_slots: DEFAULT_MAX_SLOTS,
            max_mem_regions: DEFAULT_MAX_MEM_REGIONS,
            max_vcpus_per_slot: DEFAULT_MAX_VCPUS_PER_SLOT,
            parent_cpus: DEFAULT_PARENT_CPUS,
            parent_ram: vec![DEFAULT_PARENT_RAM],
            msix_gating: true,
        }
    }
}

/// A [`DeviceConfig`] that cannot describe a device.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A limit is zero, so the device could never do anything.
    #[error("The limit {name} must be at least 1")]
    ZeroLimit {
        /// The limit's name.
        name: &'static str,
    },
    /// A parent RAM range is empty, reversed or not 2 MiB aligned.
    #[error("Parent RAM range {start:#x}..{end:#x} must be non-empty and 2 MiB aligned")]
    BadRamRange {
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
    },
    /// Two parent RAM ranges overlap.
    #[error("Parent RAM ranges {first:#x?} and {second:#x?} overlap")]
    OverlappingRam {
        /// One range.
        first: Range<u64>,
        /// The other.
        second: Range<u64>,
    },
}

impl DeviceConfig {
    /// Checks that the configuration describes a usable device.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = [
            ("max_slots", self.max_slots as u64),
            ("max_mem_regions", self.max_mem_regions),
            ("max_vcpus_per_slot", u64::from(self.max_vcpus_per_slot)),
            ("parent_cpus", u64::from(self.parent_cpus)),
        ];
        if let Some((name, _)) = limits.into_iter().find(|&(_, value)| value == 0) {
            return Err(ConfigError::ZeroLimit { name });
        }
        validate_ram(&self.parent_ram)
    }
}

/// Checks parent RAM ranges: each non-empty and 2 MiB aligned, none overlapping.
pub(crate) fn validate_ram(ranges: &[Range<u64>]) -> Result<(), ConfigError> {
    for range in ranges {
        let aligned = range.start % REGION_ALIGN_BYTES == 0 && range.end % REGION_ALIGN_BYTES == 0;
        if range.start >= range.end || !aligned {
            return Err(ConfigError::BadRamRange {
                start: range.start,
                end: range.end,
            });
        }
    }
    let mut sorted: Vec<&Range<u64>> = ranges.iter().collect();
    sorted.sort_by_key(|range| range.start);
    for pair in sorted.windows(2) {
        if let [first, second] = pair {
            if first.end > second.start {
                return Err(ConfigError::OverlappingRam {
                    first: (*first).clone(),
                    second: (*second).clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_config_is_valid() {
        assert_eq!(DeviceConfig::default().validate(), Ok(()));
    }

    #[test]
    fn test_config_zero_slots_is_rejected() {
        let config = DeviceConfig {
            max_slots: 0,
            ..DeviceConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit { name: "max_slots" })
        );
    }

    #[test]
    fn test_config_unaligned_ram_is_rejected() {
        let config = DeviceConfig {
            parent_ram: vec![Range {
                start: 0,
                end: 0x1000,
            }],
            ..DeviceConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadRamRange { .. })
        ));
    }

    #[test]
    fn test_config_overlapping_ram_is_rejected() {
        let config = DeviceConfig {
            parent_ram: vec![4 << 20..8 << 20, 0..6 << 20],
            ..DeviceConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OverlappingRam { .. })
        ));
    }
}
