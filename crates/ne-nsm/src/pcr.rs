// SPDX-License-Identifier: Apache-2.0
//! The NSM's platform configuration registers: 32 SHA-384 values, each either open to
//! extension or locked for the rest of the enclave's life.

use sha2::{Digest, Sha384};

/// How many PCRs an NSM has.
pub const PCR_COUNT: usize = 32;
/// The bytes of one PCR (SHA-384).
pub const PCR_BYTES: usize = 48;
/// The PCRs locked when the enclave starts: 0–15, the ones Nitro measures into.
pub const LOCKED_AT_START: usize = 16;

/// One PCR's value.
pub type PcrValue = [u8; PCR_BYTES];

/// What a PCR holding `old` holds once `data` is extended into it: SHA-384(old ‖ data).
pub fn extended(old: &PcrValue, data: &[u8]) -> PcrValue {
    let mut hasher = Sha384::new();
    hasher.update(old);
    hasher.update(data);
    hasher.finalize().into()
}

/// Why a PCR operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcrError {
    /// The index is 32 or more.
    #[error("PCR index {0} is beyond the last PCR (31)")]
    InvalidIndex(u16),
    /// The PCR is locked: it can be read, never changed.
    #[error("PCR {0} is locked")]
    ReadOnly(u16),
}

/// The 32 PCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    values: [PcrValue; PCR_COUNT],
    locked: [bool; PCR_COUNT],
}

impl PcrBank {
    /// A bank whose PCRs 0–15 hold `initial` (index, value) pairs — zero where none is
    /// given — and are locked; 16–31 are zero and open.
    pub fn started(initial: &[(usize, PcrValue)]) -> PcrBank {
        let mut bank = PcrBank {
            values: [[0; PCR_BYTES]; PCR_COUNT],
            locked: [false; PCR_COUNT],
        };
        for &(index, value) in initial {
            if let Some(slot) = bank.values.get_mut(index) {
                *slot = value;
            }
        }
        bank.locked[..LOCKED_AT_START].fill(true);
        bank
    }

    fn slot(index: u16) -> Result<usize, PcrError> {
        let i = usize::from(index);
        if i < PCR_COUNT {
            Ok(i)
        } else {
            Err(PcrError::InvalidIndex(index))
        }
    }

    /// PCR `index`'s value and whether it is locked.
    pub fn describe(&self, index: u16) -> Result<(PcrValue, bool), PcrError> {
        let i = Self::slot(index)?;
        Ok((self.values[i], self.locked[i]))
    }

    /// PCR `index` becomes SHA-384(old value ‖ `data`); its new value is returned.
    pub fn extend(&mut self, index: u16, data: &[u8]) -> Result<PcrValue, PcrError> {
        let i = Self::slot(index)?;
        if self.locked[i] {
            return Err(PcrError::ReadOnly(index));
        }
        self.values[i] = extended(&self.values[i], data);
        Ok(self.values[i])
    }

    /// Locks PCR `index`; a locked one refuses, as it refuses an extension.
    pub fn lock(&mut self, index: u16) -> Result<(), PcrError> {
        let i = Self::slot(index)?;
        if self.locked[i] {
            return Err(PcrError::ReadOnly(index));
        }
        self.locked[i] = true;
        Ok(())
    }

    /// Locks PCRs `0..range`; those already locked stay so.
    pub fn lock_range(&mut self, range: u16) -> Result<(), PcrError> {
        if usize::from(range) > PCR_COUNT {
            return Err(PcrError::InvalidIndex(range));
        }
        self.locked[..usize::from(range)].fill(true);
        Ok(())
    }

    /// The locked PCRs' indexes, in order.
    pub fn locked(&self) -> impl Iterator<Item = u16> + '_ {
        (0u16..)
            .zip(self.locked)
            .filter_map(|(i, l)| l.then_some(i))
    }

    /// Every PCR, in order of index.
    pub fn values(&self) -> &[PcrValue; PCR_COUNT] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_start_locks_zero_to_fifteen_with_the_given_values() {
        let bank = PcrBank::started(&[(0, [1; 48]), (4, [4; 48])]);
        assert_eq!(bank.describe(0), Ok(([1; 48], true)));
        assert_eq!(bank.describe(4), Ok(([4; 48], true)));
        assert_eq!(bank.describe(15), Ok(([0; 48], true)));
        assert_eq!(bank.describe(16), Ok(([0; 48], false)));
        assert_eq!(
            bank.locked().collect::<Vec<_>>(),
            (0..16).collect::<Vec<_>>()
        );
    }

    #[test]
    fn test_extend_hashes_the_old_value_then_the_data() {
        let mut bank = PcrBank::started(&[]);
        let mut expected = Sha384::new();
        expected.update([0u8; 48]);
        expected.update(b"abc");
        let expected: PcrValue = expected.finalize().into();
        assert_eq!(bank.extend(16, b"abc"), Ok(expected));
        assert_eq!(bank.describe(16), Ok((expected, false)));
    }

    #[test]
    fn test_locked_pcrs_refuse_extend_and_lock() {
        let mut bank = PcrBank::started(&[]);
        assert_eq!(bank.extend(3, b"x"), Err(PcrError::ReadOnly(3)));
        assert_eq!(bank.lock(3), Err(PcrError::ReadOnly(3)));
        assert_eq!(bank.lock(20), Ok(()));
        assert_eq!(bank.extend(20, b"x"), Err(PcrError::ReadOnly(20)));
        assert_eq!(bank.describe(20), Ok(([0; 48], true)));
    }

    #[test]
    fn test_indexes_beyond_31_are_invalid() {
        let mut bank = PcrBank::started(&[]);
        assert_eq!(bank.describe(32), Err(PcrError::InvalidIndex(32)));
        assert_eq!(bank.extend(32, b""), Err(PcrError::InvalidIndex(32)));
        assert_eq!(bank.lock(u16::MAX), Err(PcrError::InvalidIndex(u16::MAX)));
        assert_eq!(bank.lock_range(33), Err(PcrError::InvalidIndex(33)));
    }

    #[test]
    fn test_lock_range_locks_every_pcr_below_it() {
        let mut bank = PcrBank::started(&[]);
        assert_eq!(bank.lock_range(20), Ok(()));
        assert_eq!(bank.locked().count(), 20);
        assert_eq!(bank.lock_range(32), Ok(()));
        assert_eq!(bank.locked().count(), 32);
    }
}
