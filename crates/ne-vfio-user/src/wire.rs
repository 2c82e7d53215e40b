// SPDX-License-Identifier: Apache-2.0
//! The vfio-user messages this server speaks (vfio-user protocol 0.1, as QEMU's
//! `vfio-user-pci` sends them), as little-endian wire structs, and the one place that
//! reads a message from the socket: the 16-byte header in full (with the file descriptors
//! that came with it), checked, then exactly the body it announces, never more than
//! [`MAX_MESSAGE_BYTES`].

use std::io::{self, IoSliceMut, Read};
use std::mem::size_of;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The largest data transfer a client may ask for (`max_data_xfer_size` in VERSION).
pub const MAX_DATA_XFER_BYTES: u32 = 1 << 20;
/// The largest message accepted: a header, the largest fixed part, and one transfer.
pub const MAX_MESSAGE_BYTES: u32 = MAX_DATA_XFER_BYTES + 4096;
/// The most file descriptors one message may carry.
pub const MAX_FDS: usize = 8;
/// The bytes of a header.
pub const HEADER_BYTES: usize = 16;
/// The bytes of a header, as the header's size field counts them.
const HEADER_SIZE: u32 = 16;

/// Header flags: the message type (bits 0–3): a command.
pub const FLAG_TYPE_COMMAND: u32 = 0;
/// Header flags: the message type (bits 0–3): a reply.
pub const FLAG_TYPE_REPLY: u32 = 1;
/// Header flags: the type field.
pub const FLAG_TYPE_MASK: u32 = 0xf;
/// Header flags: the sender wants no reply.
pub const FLAG_NO_REPLY: u32 = 1 << 4;
/// Header flags: the reply is an error; `error_no` says which.
pub const FLAG_ERROR: u32 = 1 << 5;

/// The commands of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `VFIO_USER_VERSION` (1).
    Version,
    /// `VFIO_USER_DMA_MAP` (2).
    DmaMap,
    /// `VFIO_USER_DMA_UNMAP` (3).
    DmaUnmap,
    /// `VFIO_USER_DEVICE_GET_INFO` (4).
    DeviceGetInfo,
    /// `VFIO_USER_DEVICE_GET_REGION_INFO` (5).
    DeviceGetRegionInfo,
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS` (6).
    DeviceGetRegionIoFds,
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO` (7).
    DeviceGetIrqInfo,
    /// `VFIO_USER_DEVICE_SET_IRQS` (8).
    DeviceSetIrqs,
    /// `VFIO_USER_REGION_READ` (9).
    RegionRead,
    /// `VFIO_USER_REGION_WRITE` (10).
    RegionWrite,
    /// `VFIO_USER_DMA_READ` (11).
    DmaRead,
    /// `VFIO_USER_DMA_WRITE` (12).
    DmaWrite,
    /// `VFIO_USER_DEVICE_RESET` (13).
    DeviceReset,
}

impl Command {
    /// The command of a wire value.
    pub fn from_wire(value: u16) -> Option<Command> {
        Some(match value {
            1 => Command::Version,
            2 => Command::DmaMap,
            3 => Command::DmaUnmap,
            4 => Command::DeviceGetInfo,
            5 => Command::DeviceGetRegionInfo,
            6 => Command::DeviceGetRegionIoFds,
            7 => Command::DeviceGetIrqInfo,
            8 => Command::DeviceSetIrqs,
            9 => Command::RegionRead,
            10 => Command::RegionWrite,
            11 => Command::DmaRead,
            12 => Command::DmaWrite,
            13 => Command::DeviceReset,
            _ => return None,
        })
    }
}

/// The header of every message.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Header {
    /// Matches a reply to its command.
    pub message_id: U16,
    /// The command.
    pub command: U16,
    /// The whole message's size, header included.
    pub message_size: U32,
    /// Type, no-reply and error flags.
    pub flags: U32,
    /// The errno of an error reply.
    pub error_no: U32,
}
const _: () = assert!(size_of::<Header>() == HEADER_BYTES);

/// `VFIO_USER_VERSION`'s fixed part; JSON capabilities follow, NUL-terminated.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Version {
    /// Major version.
    pub major: U16,
    /// Minor version.
    pub minor: U16,
}

/// `VFIO_USER_DMA_MAP`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaMap {
    /// The argument's size.
    pub argsz: U32,
    /// Read/write flags.
    pub flags: U32,
    /// The offset in the passed fd.
    pub offset: U64,
    /// The guest-physical address.
    pub address: U64,
    /// The size.
    pub size: U64,
}

/// `VFIO_USER_DMA_UNMAP`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaUnmap {
    /// The argument's size.
    pub argsz: U32,
    /// Flags.
    pub flags: U32,
    /// The guest-physical address.
    pub address: U64,
    /// The size.
    pub size: U64,
}

/// `VFIO_USER_DEVICE_GET_INFO`'s reply (the command carries `argsz` only).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceInfo {
    /// The argument's size.
    pub argsz: U32,
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: U32,
    /// How many regions.
    pub num_regions: U32,
    /// How many interrupt indexes.
    pub num_irqs: U32,
}

/// `VFIO_USER_DEVICE_GET_REGION_INFO` (`struct vfio_region_info`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionInfo {
    /// The argument's size.
    pub argsz: U32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: U32,
    /// The region.
    pub index: U32,
    /// Capabilities' offset (none here).
    pub cap_offset: U32,
    /// The region's size.
    pub size: U64,
    /// Its offset for mmap (not mappable here).
    pub offset: U64,
}

/// `VFIO_USER_DEVICE_GET_IRQ_INFO` (`struct vfio_irq_info`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IrqInfo {
    /// The argument's size.
    pub argsz: U32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: U32,
    /// The interrupt index.
    pub index: U32,
    /// How many vectors.
    pub count: U32,
}

/// `VFIO_USER_DEVICE_SET_IRQS` (`struct vfio_irq_set` without data).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IrqSet {
    /// The argument's size.
    pub argsz: U32,
    /// `VFIO_IRQ_SET_*`.
    pub flags: U32,
    /// The interrupt index.
    pub index: U32,
    /// The first vector.
    pub start: U32,
    /// How many vectors.
    pub count: U32,
}

/// `VFIO_USER_REGION_READ`/`WRITE`'s fixed part; data follows a write and a read's reply.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionAccess {
    /// The offset in the region.
    pub offset: U64,
    /// The region.
    pub region: U32,
    /// How many bytes.
    pub count: U32,
}

/// One message as received: its header, its body, and the descriptors it carried.
#[derive(Debug)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// Everything after the header.
    pub body: Vec<u8>,
    /// The file descriptors passed with it.
    pub fds: Vec<OwnedFd>,
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between messages.
    Closed,
    /// The header announces a size that cannot be (below the header, above the limit):
    /// the stream cannot be followed any further.
    BadSize(u32),
    /// The socket failed (or the client went away inside a message).
    Io(io::Error),
}

/// Reads one message: the whole header (however the client split it), with the
/// descriptors that arrived with its first bytes, then exactly the announced body.
pub fn read_message(stream: &UnixStream) -> Result<Message, ReadError> {
    let mut head = [0u8; HEADER_BYTES];
    let mut fds = Vec::new();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut head)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| ReadError::Io(e.into()))?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Err(ReadError::Closed);
    }
    let mut reader = stream;
    if let Some(rest) = head.get_mut(received.bytes..) {
        reader.read_exact(rest).map_err(ReadError::Io)?;
    }
    let header = Header::read_from_bytes(&head).unwrap_or_default();
    let size = header.message_size.get();
    if !(HEADER_SIZE..=MAX_MESSAGE_BYTES).contains(&size) {
        return Err(ReadError::BadSize(size));
    }
    let mut body = vec![0u8; (size - HEADER_SIZE) as usize];
    reader.read_exact(&mut body).map_err(ReadError::Io)?;
    Ok(Message { header, body, fds })
}

/// Decodes a `T` from the start of `body`; `None` if the body is shorter.
pub fn decode<T: FromBytes>(body: &[u8]) -> Option<(T, &[u8])> {
    T::read_from_prefix(body).ok()
}

/// A reply to `command`: the header (its size computed) and `payload`.
pub fn reply(request: &Header, payload: &[u8]) -> Vec<u8> {
    let size = u32::try_from(HEADER_BYTES + payload.len()).unwrap_or(u32::MAX);
    let header = Header {
        message_id: request.message_id,
        command: request.command,
        message_size: U32::new(size),
        flags: U32::new(FLAG_TYPE_REPLY),
        error_no: U32::new(0),
    };
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// An error reply to `request` with `errno` (never 0: a 0 would read as success).
pub fn error_reply(request: &Header, errno: i32) -> Vec<u8> {
    let errno = u32::try_from(errno).ok().filter(|&e| e != 0).unwrap_or(5);
    let header = Header {
        message_id: request.message_id,
        command: request.command,
        message_size: U32::new(HEADER_SIZE),
        flags: U32::new(FLAG_TYPE_REPLY | FLAG_ERROR),
        error_no: U32::new(errno),
    };
    header.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(command: u16, size: u32) -> Vec<u8> {
        Header {
            message_id: U16::new(7),
            command: U16::new(command),
            message_size: U32::new(size),
            flags: U32::new(0),
            error_no: U32::new(0),
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn test_a_header_split_at_every_byte_is_read_whole() {
        for cut in 1..HEADER_BYTES {
            let (mut client, server) = UnixStream::pair().unwrap();
            let mut bytes = header(9, 32);
            bytes.extend_from_slice(&[0xAB; 16]);
            let writer = std::thread::spawn(move || {
                client.write_all(&bytes[..cut]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
                client.write_all(&bytes[cut..]).unwrap();
                client
            });
            let message = read_message(&server).unwrap();
            assert_eq!(message.header.command.get(), 9, "cut at {cut}");
            assert_eq!(message.body, vec![0xAB; 16], "cut at {cut}");
            drop(writer.join().unwrap());
        }
    }

    #[test]
    fn test_sizes_below_the_header_or_above_the_limit_are_refused_before_any_allocation() {
        for size in [0, 15, MAX_MESSAGE_BYTES + 1, u32::MAX] {
            let (mut client, server) = UnixStream::pair().unwrap();
            client.write_all(&header(1, size)).unwrap();
            assert!(matches!(read_message(&server), Err(ReadError::BadSize(s)) if s == size));
        }
    }

    #[test]
    fn test_a_closed_connection_between_messages_is_closed() {
        let (client, server) = UnixStream::pair().unwrap();
        drop(client);
        assert!(matches!(read_message(&server), Err(ReadError::Closed)));
    }

    #[test]
    fn test_error_replies_never_carry_errno_0() {
        let request = Header::default();
        let reply = error_reply(&request, 0);
        let header = Header::read_from_bytes(&reply).unwrap();
        assert_eq!(header.flags.get(), FLAG_TYPE_REPLY | FLAG_ERROR);
        assert_ne!(header.error_no.get(), 0);
        let reply = error_reply(&request, 22);
        assert_eq!(Header::read_from_bytes(&reply).unwrap().error_no.get(), 22);
    }
}
