// SPDX-License-Identifier: Apache-2.0
//! One client's session: the vfio-user message loop, owned here rather than by the
//! `vfio_user` crate, whose server panics and allocates on sizes the client chooses and
//! misreads split headers (see ARCHITECTURE.md). Every message is read whole and bounded
//! ([`crate::wire::read_message`]), decoded from exactly its own bytes, and answered —
//! an error reply always carries a non-zero errno.

use std::fs::File;
use std::io::Write;
use std::mem::size_of;
use std::os::unix::net::UnixStream;

use ne_abi::errno::EINVAL;
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_IRQ_INFO_EVENTFD,
    VFIO_PCI_BAR3_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

use ne_device::config_space::{BAR_SIZE, CONFIG_SPACE_SIZE};

use crate::state::{Refusal, ServerState};
use crate::wire::{
    decode, error_reply, read_message, reply, Command, DeviceInfo, DmaMap, DmaUnmap, IrqInfo,
    IrqSet, Message, ReadError, RegionAccess, RegionInfo, Version, FLAG_NO_REPLY,
    FLAG_TYPE_COMMAND, FLAG_TYPE_MASK, MAX_DATA_XFER_BYTES,
};

/// `ENOTSUP`: a command this device does not implement.
const ENOTSUP: i32 = 95;

/// How a session ended.
#[derive(Debug)]
pub enum Ended {
    /// The client closed the connection.
    Closed,
    /// The client sent something the stream cannot be followed past.
    Broken(String),
}

/// Serves `stream` until the client goes away or breaks the protocol.
pub(crate) fn serve(state: &ServerState, stream: &UnixStream) -> Ended {
    loop {
        let message = match read_message(stream) {
            Ok(message) => message,
            Err(ReadError::Closed) => return Ended::Closed,
            Err(ReadError::BadSize(size)) => {
                return Ended::Broken(format!("a message of {size} bytes"));
            }
            Err(ReadError::Io(e)) => return Ended::Broken(e.to_string()),
        };
        let header = message.header;
        let answer = match handle(state, message) {
            Ok(Some(payload)) => Some(reply(&header, &payload)),
            Ok(None) => None,
            Err(refusal) => {
                tracing::warn!(
                    command = header.command.get(),
                    errno = refusal.errno,
                    "client request refused: {}",
                    refusal.why
                );
                Some(error_reply(&header, refusal.errno))
            }
        };
        let wants_reply = header.flags.get() & FLAG_NO_REPLY == 0;
        if let (Some(answer), true) = (answer, wants_reply) {
            let mut writer = stream;
            if let Err(e) = writer.write_all(&answer) {
                return Ended::Broken(format!("cannot reply: {e}"));
            }
        }
    }
}

/// Carries out one message; `Some` is the reply's payload.
fn handle(state: &ServerState, message: Message) -> Result<Option<Vec<u8>>, Refusal> {
    let Message { header, body, fds } = message;
    if header.flags.get() & FLAG_TYPE_MASK != FLAG_TYPE_COMMAND {
        return Err(Refusal::invalid("a client sent a reply".to_owned()));
    }
    let command = Command::from_wire(header.command.get()).ok_or_else(|| Refusal {
        errno: ENOTSUP,
        why: format!("unknown command {}", header.command.get()),
    })?;
    let mut fds: Vec<File> = fds.into_iter().map(File::from).collect();
    let short = || Refusal::invalid(format!("{command:?}: the message is too short"));
    match command {
        Command::Version => version(&body).map(Some),
        Command::DmaMap => {
            let (map, _) = decode::<DmaMap>(&body).ok_or_else(short)?;
            if fds.len() > 1 {
                return Err(Refusal::invalid("DMA map with more than one fd".to_owned()));
            }
            state.map(
                map.address.get(),
                map.size.get(),
                fds.pop(),
                map.offset.get(),
            )?;
            Ok(Some(Vec::new()))
        }
        Command::DmaUnmap => {
            let (unmap, _) = decode::<DmaUnmap>(&body).ok_or_else(short)?;
            state.unmap(unmap.address.get(), unmap.size.get())?;
            Ok(Some(unmap.as_bytes().to_vec()))
        }
        Command::DeviceGetInfo => Ok(Some(device_info().as_bytes().to_vec())),
        Command::DeviceGetRegionInfo => {
            let (asked, _) = decode::<RegionInfo>(&body).ok_or_else(short)?;
            region_info(asked.index.get()).map(|info| Some(info.as_bytes().to_vec()))
        }
        Command::DeviceGetIrqInfo => {
            let (asked, _) = decode::<IrqInfo>(&body).ok_or_else(short)?;
            irq_info(asked.index.get()).map(|info| Some(info.as_bytes().to_vec()))
        }
        Command::DeviceSetIrqs => {
            let (set, _) = decode::<IrqSet>(&body).ok_or_else(short)?;
            state.set_irqs(
                set.index.get(),
                set.flags.get(),
                set.start.get(),
                set.count.get(),
                fds,
            )?;
            Ok(Some(Vec::new()))
        }
        Command::RegionRead => {
            let (access, _) = decode::<RegionAccess>(&body).ok_or_else(short)?;
            let count = transfer_size(access.count.get())?;
            let mut data = vec![0u8; count];
            state.region_read(access.region.get(), access.offset.get(), &mut data)?;
            let mut payload = access.as_bytes().to_vec();
            payload.extend_from_slice(&data);
            Ok(Some(payload))
        }
        Command::RegionWrite => {
            let (access, data) = decode::<RegionAccess>(&body).ok_or_else(short)?;
            let count = transfer_size(access.count.get())?;
            let data = data.get(..count).ok_or_else(|| {
                Refusal::invalid(format!(
                    "REGION_WRITE announces {count} bytes and carries fewer"
                ))
            })?;
            state.region_write(access.region.get(), access.offset.get(), data)?;
            Ok(Some(access.as_bytes().to_vec()))
        }
        Command::DeviceReset => {
            tracing::info!("device reset by the client");
            state.reset();
            Ok(Some(Vec::new()))
        }
        Command::DeviceGetRegionIoFds | Command::DmaRead | Command::DmaWrite => Err(Refusal {
            errno: ENOTSUP,
            why: format!("{command:?} is not supported"),
        }),
    }
}

/// A transfer of `count` bytes, if it is within `max_data_xfer_size`.
fn transfer_size(count: u32) -> Result<usize, Refusal> {
    if count > MAX_DATA_XFER_BYTES {
        return Err(Refusal::invalid(format!(
            "a transfer of {count} bytes exceeds the {MAX_DATA_XFER_BYTES} announced"
        )));
    }
    usize::try_from(count).map_err(|_| Refusal::invalid("transfer size".to_owned()))
}

/// `VERSION`: the client's version and capabilities (JSON, NUL-terminated, optional), and
/// the server's answer.
fn version(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let (_client, capabilities) = decode::<Version>(body)
        .ok_or_else(|| Refusal::invalid("VERSION is too short".to_owned()))?;
    if !capabilities.is_empty() {
        let json = capabilities
            .split_last()
            .filter(|(last, _)| **last == 0)
            .map(|(_, json)| json)
            .ok_or_else(|| {
                Refusal::invalid("VERSION capabilities are not NUL-terminated".to_owned())
            })?;
        if json.contains(&0) {
            return Err(Refusal::invalid(
                "VERSION capabilities hold a NUL".to_owned(),
            ));
        }
        serde_json::from_slice::<serde_json::Value>(json)
            .map_err(|e| Refusal::invalid(format!("VERSION capabilities are not JSON: {e}")))?;
    }
    let server = serde_json::json!({
        "capabilities": {
            "max_msg_fds": 1,
            "max_data_xfer_size": MAX_DATA_XFER_BYTES,
            "migration": { "pgsize": 4096 },
        }
    });
    let mut payload = Version {
        major: U16::new(0),
        minor: U16::new(0),
    }
    .as_bytes()
    .to_vec();
    payload.extend_from_slice(server.to_string().as_bytes());
    payload.push(0);
    Ok(payload)
}

fn argsz<T>() -> U32 {
    U32::new(u32::try_from(size_of::<T>()).unwrap_or(u32::MAX))
}

fn device_info() -> DeviceInfo {
    DeviceInfo {
        argsz: argsz::<DeviceInfo>(),
        flags: U32::new(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET),
        num_regions: U32::new(VFIO_PCI_NUM_REGIONS),
        num_irqs: U32::new(VFIO_PCI_NUM_IRQS),
    }
}

/// Config space and BAR 3, read/write and not mappable; the other PCI regions are empty.
fn region_info(index: u32) -> Result<RegionInfo, Refusal> {
    if index >= VFIO_PCI_NUM_REGIONS {
        return Err(Refusal::invalid(format!("region {index} does not exist")));
    }
    let size = match index {
        VFIO_PCI_CONFIG_REGION_INDEX => CONFIG_SPACE_SIZE as u64,
        VFIO_PCI_BAR3_REGION_INDEX => BAR_SIZE,
        _ => 0,
    };
    let flags = if size > 0 {
        VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
    } else {
        0
    };
    Ok(RegionInfo {
        argsz: argsz::<RegionInfo>(),
        flags: U32::new(flags),
        index: U32::new(index),
        cap_offset: U32::new(0),
        size: U64::new(size),
        offset: U64::new(0),
    })
}

/// Two MSI-X vectors, signalled by eventfds; the other interrupt indexes have none.
fn irq_info(index: u32) -> Result<IrqInfo, Refusal> {
    if index >= VFIO_PCI_NUM_IRQS {
        return Err(Refusal {
            errno: EINVAL,
            why: format!("interrupt index {index} does not exist"),
        });
    }
    let count = if index == VFIO_PCI_MSIX_IRQ_INDEX {
        u32::from(ne_abi::pci::MSIX_VECTORS)
    } else {
        0
    };
    Ok(IrqInfo {
        argsz: argsz::<IrqInfo>(),
        flags: U32::new(VFIO_IRQ_INFO_EVENTFD),
        index: U32::new(index),
        count: U32::new(count),
    })
}
