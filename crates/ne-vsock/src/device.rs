// SPDX-License-Identifier: Apache-2.0
//! The vhost-user-vsock device of one enclave, on rust-vmm's `vhost-user-backend`: QEMU's
//! `vhost-user-vsock-pci` connects to its socket; the device reads the TX queue into the
//! enclave's [`Mux`] and fills the RX queue from it.
//!
//! What QEMU 11.1 needs of it: the `CONFIG` protocol feature (it reads the 8-byte
//! `guest_cid` once, before the guest runs), `VIRTIO_F_VERSION_1`, and two queues (RX 0,
//! TX 1; QEMU keeps the event queue). `EVENT_IDX` is not offered.

use std::io::{self, Read};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use ne_vhost::Served;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::mux::Mux;
use crate::packet::{Header, HEADER_BYTES};
use crate::router::Router;

/// The RX queue.
const RX_QUEUE: u16 = 0;
/// The TX queue.
const TX_QUEUE: u16 = 1;
/// Queues the device has (QEMU keeps the event queue).
const NUM_QUEUES: usize = 2;
/// The largest queue.
const MAX_QUEUE_SIZE: usize = 256;
/// The event id of the mux's "packets are waiting" eventfd (ids up to `NUM_QUEUES` are the
/// library's).
const MUX_EVENT: u16 = 3;
const _: () = assert!(MUX_EVENT as usize > NUM_QUEUES);
/// The largest data buffer of one packet.
const MAX_PKT_DATA: u32 = 64 * 1024;

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

#[derive(Debug)]
struct Inner {
    mux: Arc<Mux>,
    memory: Mutex<Option<Memory>>,
}

/// One enclave's vsock device. Clones share it.
#[derive(Clone, Debug)]
pub struct VsockDevice {
    inner: Arc<Inner>,
}

impl VsockDevice {
    /// The device of the enclave whose connections `mux` holds.
    pub fn new(mux: Arc<Mux>) -> Self {
        VsockDevice {
            inner: Arc::new(Inner {
                mux,
                memory: Mutex::new(None),
            }),
        }
    }

    fn memory(&self) -> Option<Memory> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the enclave's packets from the TX queue.
    fn process_tx(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(memory) = self.memory() else {
            return Ok(());
        };
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(memory.memory());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let guard = memory.memory();
            match read_tx_packet(&*guard, chain) {
                Ok((header, data)) => self.inner.mux.guest_packet(&header, &data),
                Err(TxError { header, why }) => {
                    tracing::debug!(cid = self.inner.mux.cid(), "malformed TX packet: {why}");
                    if let Some(header) = header {
                        self.inner.mux.refuse_packet(&header);
                    }
                }
            }
            vring
                .add_used(head, 0)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        vring.signal_used_queue()
    }

    /// Fills the RX queue with what waits for the enclave.
    fn process_rx(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(memory) = self.memory() else {
            return Ok(());
        };
        let mut used = false;
        while self.inner.mux.has_packets() {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(memory.memory());
            let Some(mut chain) = chain else { break };
            let head = chain.head_index();
            let guard = memory.memory();
            let written = match VsockPacket::from_rx_virtq_chain(&*guard, &mut chain, MAX_PKT_DATA)
            {
                Ok(buffer) => {
                    let room = buffer.data_slice().map_or(0, |slice| slice.len());
                    match self.inner.mux.next_packet(room) {
                        Some(packet) => {
                            buffer.header_slice().copy_from(&packet.header.encode()[..]);
                            if let Some(slice) = buffer.data_slice() {
                                slice.copy_from(&packet.data[..]);
                            }
                            HEADER_BYTES + packet.data.len()
                        }
                        None => 0,
                    }
                }
                Err(e) => {
                    tracing::debug!(cid = self.inner.mux.cid(), "malformed RX chain: {e}");
                    0
                }
            };
            vring
                .add_used(head, u32::try_from(written).unwrap_or(0))
                .map_err(|e| io::Error::other(e.to_string()))?;
            used = true;
            if written == 0 {
                break;
            }
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

impl VhostUserBackend for VsockDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        ne_vhost::FEATURES
    }

    /// The config space (the CID), and memory regions one at a time: an enclave's RAM is
    /// its donated regions, often more than the 8 regions vhost-user allows without it.
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, _enabled: bool) {}

    /// `struct virtio_vsock_config`: the little-endian 64-bit `guest_cid`.
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.inner.mux.cid().to_le_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(size).unwrap_or(0));
        config
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&self, memory: Memory) -> io::Result<()> {
        *self
            .inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(memory);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        ne_vhost::exit_event()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let (Some(rx), Some(tx)) = (
            vrings.get(usize::from(RX_QUEUE)),
            vrings.get(usize::from(TX_QUEUE)),
        ) else {
            return Ok(());
        };
        match device_event {
            TX_QUEUE => {
                self.process_tx(tx)?;
                self.process_rx(rx)
            }
            RX_QUEUE => self.process_rx(rx),
            MUX_EVENT => {
                let _ = self.inner.mux.kick_event().read();
                self.process_rx(rx)
            }
            _ => Ok(()),
        }
    }
}

/// A TX chain that is not a packet: why, and its header when that much was readable.
#[derive(Debug)]
struct TxError {
    header: Option<Header>,
    why: String,
}

/// Reads one packet the enclave sent: the header, then `len` bytes of data from wherever
/// the chain holds them — after the header in the same descriptor, in one descriptor after
/// it, or spread over several (Linux sends large packets as page-sized fragments).
fn read_tx_packet<T>(
    mem: &T::Target,
    chain: DescriptorChain<T>,
) -> Result<(Header, Vec<u8>), TxError>
where
    T: Deref,
    T::Target: GuestMemory + Sized,
{
    let failed = |header: Option<Header>, why: String| TxError { header, why };
    let mut reader = chain
        .reader(mem)
        .map_err(|e| failed(None, format!("unreadable chain: {e}")))?;
    let mut raw = [0u8; HEADER_BYTES];
    reader
        .read_exact(&mut raw)
        .map_err(|e| failed(None, format!("no header: {e}")))?;
    let header = Header::decode(&raw);
    if header.len > MAX_PKT_DATA {
        let why = format!("{} bytes of data, beyond {MAX_PKT_DATA}", header.len);
        return Err(failed(Some(header), why));
    }
    let mut data = vec![0u8; header.len as usize];
    reader.read_exact(&mut data).map_err(|e| {
        failed(
            Some(header),
            format!("{} bytes of data announced: {e}", header.len),
        )
    })?;
    Ok((header, data))
}

/// Serves the parent as a VM (`nectl serve`'s guest, CID 3) on `socket`, for the life of
/// the process: a vhost-user-vsock device for each front-end that connects in turn, whose
/// connections `router` routes to the enclaves and their consoles.
pub fn serve_parent_vm(router: Arc<Router>, socket: &Path) -> io::Result<()> {
    // The first device listens before this returns, so the guest's QEMU may start at once.
    let mut mux = router.attach_parent_vm()?;
    let mut served = serve(socket, Arc::clone(&mux))?;
    let socket = socket.to_owned();
    thread::Builder::new()
        .name("ne-vsock-parent".to_owned())
        .spawn(move || loop {
            served.wait();
            router.detach_parent_vm(&mux);
            tracing::info!("the parent VM's vsock front-end went away; serving the next");
            let next = router
                .attach_parent_vm()
                .and_then(|next| serve(&socket, Arc::clone(&next)).map(|s| (next, s)));
            match next {
                Ok((next, next_served)) => (mux, served) = (next, next_served),
                Err(e) => {
                    tracing::error!("cannot serve the parent VM's vsock again: {e}");
                    return;
                }
            }
        })?;
    Ok(())
}

/// Listens on `socket` (before returning, so QEMU can connect at once) and serves the
/// device of `mux` to the one front-end that connects, in a thread.
pub fn serve(socket: &Path, mux: Arc<Mux>) -> io::Result<Served> {
    let kick = Arc::clone(&mux);
    let closing = Arc::clone(&mux);
    ne_vhost::serve_one(
        socket,
        &format!("ne-vsock-{}", mux.cid()),
        VsockDevice::new(mux),
        |daemon| {
            for handler in daemon.get_epoll_handlers() {
                handler
                    .register_listener(
                        kick.kick_event().as_raw_fd(),
                        EventSet::IN,
                        u64::from(MUX_EVENT),
                    )
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            Ok(())
        },
        move || closing.close(),
    )
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::packet::{Op, TYPE_STREAM};

    const BUFFERS: u64 = 0x10_0000;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn header(len: u32) -> Header {
        Header {
            src_cid: 16,
            dst_cid: 3,
            src_port: 1234,
            dst_port: 5006,
            len,
            type_: TYPE_STREAM,
            op: Op::Rw.value(),
            buf_alloc: 256 * 1024,
            ..Header::default()
        }
    }

    /// A TX chain of device-readable descriptors of these lengths, laid out one after
    /// another from `BUFFERS`, holding `bytes`; returns the packet it reads as.
    fn read(
        mem: &GuestMemoryMmap,
        lengths: &[u32],
        bytes: &[u8],
    ) -> Result<(Header, Vec<u8>), TxError> {
        mem.write_slice(bytes, GuestAddress(BUFFERS)).unwrap();
        let mut at = BUFFERS;
        let descs: Vec<RawDescriptor> = lengths
            .iter()
            .map(|&len| {
                let desc = RawDescriptor::from(SplitDescriptor::new(at, len, 0, 0));
                at += u64::from(len);
                desc
            })
            .collect();
        let queue = MockSplitQueue::new(mem, 64);
        let chain = queue.build_desc_chain(&descs).unwrap();
        read_tx_packet(mem, chain)
    }

    fn packet(len: u32) -> Vec<u8> {
        let mut bytes = header(len).encode().to_vec();
        bytes.extend((0..len).map(|i| (i % 251) as u8));
        bytes
    }

    #[test]
    fn test_header_and_data_in_one_descriptor_read_as_one_packet() {
        let mem = memory();
        let (header, data) = read(&mem, &[44 + 100], &packet(100)).unwrap();
        assert_eq!(header.len, 100);
        assert_eq!(data, packet(100)[44..]);
    }

    #[test]
    fn test_data_spread_over_page_sized_fragments_reads_whole() {
        // As Linux sends a 64 KiB write: the header, then sixteen 4 KiB fragments.
        let mem = memory();
        let mut lengths = vec![44];
        lengths.extend([4096; 16]);
        let (header, data) = read(&mem, &lengths, &packet(65_536)).unwrap();
        assert_eq!(header.len, 65_536);
        assert_eq!(data, packet(65_536)[44..]);
    }

    #[test]
    fn test_data_beyond_the_largest_packet_is_refused_with_its_header() {
        let mem = memory();
        let error = read(&mem, &[44, 70_000], &packet(70_000)).unwrap_err();
        assert_eq!(error.header.map(|h| h.len), Some(70_000));
    }

    #[test]
    fn test_a_chain_shorter_than_its_header_says_is_refused() {
        let mem = memory();
        let mut bytes = packet(100);
        bytes.truncate(44 + 60);
        let error = read(&mem, &[44, 60], &bytes).unwrap_err();
        assert!(error.header.is_some());
        assert!(
            error.why.contains("100 bytes of data announced"),
            "{}",
            error.why
        );
        let error = read(&mem, &[20], &bytes).unwrap_err();
        assert!(error.header.is_none(), "no header in 20 bytes");
    }
}
