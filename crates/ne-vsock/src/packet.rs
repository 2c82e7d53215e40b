// SPDX-License-Identifier: Apache-2.0
//! The virtio-vsock packet header (virtio spec 5.10.6, `struct virtio_vsock_hdr`): 44
//! little-endian bytes before every packet's data.

/// Bytes of a header.
pub const HEADER_BYTES: usize = 44;

/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type an enclave uses.
pub const TYPE_STREAM: u16 = 1;

/// `VIRTIO_VSOCK_OP_*`: what a packet does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Connect (1).
    Request,
    /// Connection accepted (2).
    Response,
    /// Connection refused or torn down (3).
    Rst,
    /// No more data in one or both directions (4).
    Shutdown,
    /// Data (5).
    Rw,
    /// The sender's receive credit changed (6).
    CreditUpdate,
    /// Asks for a credit update (7).
    CreditRequest,
}

impl Op {
    /// The wire value.
    pub fn value(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }

    /// The op of a wire value, if known.
    pub fn from_value(value: u16) -> Option<Op> {
        [
            Op::Request,
            Op::Response,
            Op::Rst,
            Op::Shutdown,
            Op::Rw,
            Op::CreditUpdate,
            Op::CreditRequest,
        ]
        .into_iter()
        .find(|op| op.value() == value)
    }
}

/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Data bytes that follow.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Op-specific flags (shutdown directions).
    pub flags: u32,
    /// The sender's receive buffer for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed on this connection.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes a header.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Header {
        let u64_at = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(bytes.get(at..at + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0; 4];
            b.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let u16_at = |at: usize| {
            let mut b = [0; 2];
            b.copy_from_slice(bytes.get(at..at + 2).unwrap_or(&[0; 2]));
            u16::from_le_bytes(b)
        };
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let fields: [(usize, &[u8]); 10] = [
            (0, &self.src_cid.to_le_bytes()),
            (8, &self.dst_cid.to_le_bytes()),
            (16, &self.src_port.to_le_bytes()),
            (20, &self.dst_port.to_le_bytes()),
            (24, &self.len.to_le_bytes()),
            (28, &self.type_.to_le_bytes()),
            (30, &self.op.to_le_bytes()),
            (32, &self.flags.to_le_bytes()),
            (36, &self.buf_alloc.to_le_bytes()),
            (40, &self.fwd_cnt.to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        out
    }

    /// The operation, if known.
    pub fn op(&self) -> Option<Op> {
        Op::from_value(self.op)
    }
}

/// A packet to deliver to a guest: a header and its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// The header; `len` is set from `data` when it is delivered.
    pub header: Header,
    /// The data.
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_header_round_trips_and_places_each_field() {
        let header = Header {
            src_cid: 3,
            dst_cid: 16,
            src_port: 9000,
            dst_port: 0x1234_5678,
            len: 1,
            type_: TYPE_STREAM,
            op: Op::Rw.value(),
            flags: SHUTDOWN_SEND,
            buf_alloc: 262_144,
            fwd_cnt: 7,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), header);
        assert_eq!(bytes[8], 16);
        assert_eq!(&bytes[16..20], &9000u32.to_le_bytes());
        assert_eq!(bytes[30], 5);
        assert_eq!(&bytes[36..40], &262_144u32.to_le_bytes());
    }

    #[test]
    fn test_ops_round_trip_and_unknown_is_none() {
        for value in 1..=7 {
            assert_eq!(Op::from_value(value).map(Op::value), Some(value));
        }
        assert_eq!(Op::from_value(0), None);
        assert_eq!(Op::from_value(8), None);
    }
}
