// SPDX-License-Identifier: Apache-2.0
//! PCI identity, BAR and MSI-X vectors of the NE device (`ne_pci_dev.h`, `pci_ids.h`).

/// `PCI_VENDOR_ID_AMAZON`: the vendor id the Linux driver matches.
pub const VENDOR_ID: u16 = 0x1d0f;
/// `PCI_DEVICE_ID_NE`: the device id the Linux driver matches.
pub const DEVICE_ID: u16 = 0xe4c1;
/// `PCI_BAR_NE`: the BAR that holds the register block.
pub const BAR_INDEX: u8 = 3;
/// The smallest BAR 3 that holds every register (`NE_RECV_DATA` + 240 = 0x1F0 bytes).
pub const MIN_BAR_SIZE: u64 = 0x1F0;
/// How many MSI-X vectors the driver allocates and requests: reply and event.
pub const MSIX_VECTORS: u16 = 2;

/// `NE_VEC_REPLY`: raised once per command reply.
pub const VEC_REPLY: u16 = 0;
/// `NE_VEC_EVENT`: raised when a started enclave changed state on its own.
pub const VEC_EVENT: u16 = 1;

/// One of the device's two MSI-X vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MsixVector {
    /// `NE_VEC_REPLY` (0): a command reply is ready in `RECV_DATA`.
    Reply,
    /// `NE_VEC_EVENT` (1): at least one started enclave stopped or crashed by itself.
    Event,
}

impl MsixVector {
    /// Both vectors, in table order.
    pub const ALL: [MsixVector; 2] = [MsixVector::Reply, MsixVector::Event];

    /// The vector's index in the MSI-X table.
    pub const fn index(self) -> u16 {
        match self {
            MsixVector::Reply => VEC_REPLY,
            MsixVector::Event => VEC_EVENT,
        }
    }

    /// The vector at `index` of the MSI-X table, if the device has one there.
    pub const fn from_index(index: u16) -> Option<MsixVector> {
        match index {
            VEC_REPLY => Some(MsixVector::Reply),
            VEC_EVENT => Some(MsixVector::Event),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_msix_vector_index_round_trips() {
        for vector in MsixVector::ALL {
            assert_eq!(MsixVector::from_index(vector.index()), Some(vector));
        }
        assert_eq!(MsixVector::from_index(2), None);
    }
}
