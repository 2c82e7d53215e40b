// SPDX-License-Identifier: Apache-2.0
//! The NSM as a vhost-user device (virtio device id 33, one queue, no config space), on
//! rust-vmm's `vhost-user-backend`: QEMU attaches it with
//! `-device vhost-user-test-device-pci,virtio-id=33,num_vqs=1,chardev=…` and Linux's
//! `nsm.ko` binds it as `/dev/nsm`.
//!
//! A request is the readable part of a chain and its response goes to a writable part.
//! Linux 6.12's `nsm.ko` queues them as two chains — the request, then the 0x3000-byte
//! response buffer — and expects the request chain back first (length 0), then the
//! response chain; a driver that puts both in one chain gets it back with the response's
//! length. What the device offers: `VIRTIO_F_VERSION_1` and the vhost-user protocol
//! features, with memory slots given one at a time (an enclave's RAM may be many regions).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Response};
use ne_vhost::Served;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::module::{encode, NsmModule, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// The virtio device id of the NSM.
pub const VIRTIO_ID_NSM: u16 = 33;
/// The one queue.
const REQUEST_QUEUE: u16 = 0;
/// The largest queue.
const MAX_QUEUE_SIZE: usize = 64;

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// A half of a request that waits for its other half.
#[derive(Default)]
enum Pending {
    #[default]
    Nothing,
    /// A request chain (its head, and its bytes — `None` when over the limit) waiting for
    /// a response buffer.
    Request(u16, Option<Vec<u8>>),
    /// A response buffer waiting for a request.
    Response(Chain),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Nothing => f.write_str("Nothing"),
            Pending::Request(head, bytes) => write!(
                f,
                "Request({head}, {:?} bytes)",
                bytes.as_ref().map(Vec::len)
            ),
            Pending::Response(chain) => write!(f, "Response({})", chain.head_index()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    module: Mutex<NsmModule>,
    memory: Mutex<Option<Memory>>,
    pending: Mutex<Pending>,
}

/// One enclave's NSM device. Clones share it.
#[derive(Clone, Debug)]
pub struct NsmDevice {
    inner: Arc<Inner>,
}

/// What a chain holds: a request (its bytes, `None` when over the limit), room for a
/// response, or both.
struct Parts {
    request: Option<Option<Vec<u8>>>,
    room: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NsmDevice {
    /// The device answering with `module`.
    pub fn new(module: NsmModule) -> Self {
        NsmDevice {
            inner: Arc::new(Inner {
                module: Mutex::new(module),
                memory: Mutex::new(None),
                pending: Mutex::new(Pending::Nothing),
            }),
        }
    }

    /// The response to `request` (`None`: over the limit), fitted to `room` bytes.
    fn answer(&self, request: Option<&[u8]>, room: usize) -> Vec<u8> {
        let response = match request {
            Some(bytes) => lock(&self.inner.module).handle(bytes),
            None => encode(&Response::Error(ErrorCode::InputTooLarge)),
        };
        if response.len() <= room.min(MAX_RESPONSE_BYTES) {
            return response;
        }
        let too_small = encode(&Response::Error(ErrorCode::BufferTooSmall));
        if too_small.len() <= room {
            too_small
        } else {
            Vec::new()
        }
    }

    /// Takes every chain the driver queued, answering each request once its response
    /// buffer is there.
    fn process_queue(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(memory) = lock(&self.inner.memory).clone() else {
            return Ok(());
        };
        let mut used = false;
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(memory.memory());
            let Some(chain) = chain else { break };
            self.take_chain(vring, chain)?;
            used = true;
        }
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    fn take_chain(&self, vring: &VringRwLock, chain: Chain) -> io::Result<()> {
        let head = chain.head_index();
        let parts = match read_parts(&chain) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::debug!("malformed NSM chain: {e}");
                return used(vring, head, 0);
            }
        };
        let mut pending = lock(&self.inner.pending);
        match (parts.request, parts.room) {
            (Some(request), room) if room > 0 => {
                let response = self.answer(request.as_deref(), room);
                let written = write_response(chain, &response);
                used(vring, head, written)
            }
            (Some(request), _) => match std::mem::take(&mut *pending) {
                Pending::Response(buffer) => {
                    used(vring, head, 0)?;
                    self.respond_into(vring, buffer, request.as_deref())
                }
                displaced => {
                    discard(vring, displaced)?;
                    *pending = Pending::Request(head, request);
                    Ok(())
                }
            },
            (None, _) => match std::mem::take(&mut *pending) {
                Pending::Request(request_head, request) => {
                    used(vring, request_head, 0)?;
                    self.respond_into(vring, chain, request.as_deref())
                }
                displaced => {
                    discard(vring, displaced)?;
                    *pending = Pending::Response(chain);
                    Ok(())
                }
            },
        }
    }

    fn respond_into(
        &self,
        vring: &VringRwLock,
        buffer: Chain,
        request: Option<&[u8]>,
    ) -> io::Result<()> {
        let head = buffer.head_index();
        let room = buffer
            .clone()
            .writer(buffer.memory())
            .map_or(0, |w| w.available_bytes());
        let response = self.answer(request, room);
        let written = write_response(buffer, &response);
        used(vring, head, written)
    }
}

/// Gives back, unanswered, a half that another of its kind replaced (a driver that queues
/// two requests before a response buffer): the queue never loses a descriptor.
fn discard(vring: &VringRwLock, displaced: Pending) -> io::Result<()> {
    match displaced {
        Pending::Nothing => Ok(()),
        Pending::Request(head, _) => used(vring, head, 0),
        Pending::Response(chain) => used(vring, chain.head_index(), 0),
    }
}

fn used(vring: &VringRwLock, head: u16, len: usize) -> io::Result<()> {
    vring
        .add_used(head, u32::try_from(len).unwrap_or(0))
        .map_err(|e| io::Error::other(e.to_string()))
}

/// The request in `chain`'s readable part (read up to one byte past the limit) and the
/// room of its writable part.
fn read_parts(chain: &Chain) -> Result<Parts, String> {
    let memory = chain.memory();
    let reader = chain
        .clone()
        .reader(memory)
        .map_err(|e| format!("unreadable chain: {e}"))?;
    let readable = reader.available_bytes();
    let room = chain
        .clone()
        .writer(memory)
        .map_or(0, |w| w.available_bytes());
    if readable == 0 && room == 0 {
        return Err("an empty chain".to_owned());
    }
    let request = if readable == 0 {
        None
    } else if readable > MAX_REQUEST_BYTES {
        Some(None)
    } else {
        let mut bytes = Vec::with_capacity(readable);
        reader
            .take(MAX_REQUEST_BYTES as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("unreadable request: {e}"))?;
        Some(Some(bytes))
    };
    Ok(Parts { request, room })
}

/// Writes `response` into `chain`'s writable part; the bytes written.
fn write_response(chain: Chain, response: &[u8]) -> usize {
    let memory = chain.memory();
    match chain.clone().writer(memory) {
        Ok(mut writer) if writer.available_bytes() >= response.len() => {
            match writer.write_all(response) {
                Ok(()) => response.len(),
                Err(e) => {
                    tracing::debug!("cannot write the NSM response: {e}");
                    0
                }
            }
        }
        _ => 0,
    }
}

impl VhostUserBackend for NsmDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        ne_vhost::FEATURES
    }

    /// Memory regions one at a time: an enclave's RAM is its donated regions.
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, memory: Memory) -> io::Result<()> {
        *lock(&self.inner.memory) = Some(memory);
        // Chains held across a memory update would point into the old map.
        *lock(&self.inner.pending) = Pending::Nothing;
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
        match (device_event, vrings.first()) {
            (REQUEST_QUEUE, Some(vring)) => self.process_queue(vring),
            _ => Ok(()),
        }
    }
}

/// Listens on `socket` (before returning, so QEMU can connect at once) and serves
/// `module` to the one front-end that connects, in a thread named `name`.
pub fn serve(socket: &Path, module: NsmModule, name: &str) -> io::Result<Served> {
    ne_vhost::serve_one(socket, name, NsmDevice::new(module), |_| Ok(()), || {})
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use aws_nitro_enclaves_nsm_api::api::Request;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::module::ModuleConfig;
    use crate::RootCa;

    const REQUEST_AT: u64 = 0x10_0000;
    const RESPONSE_AT: u64 = 0x20_0000;
    // The virtio descriptor flags (2 and 1).
    const WRITE: u16 = 2;
    const NEXT: u16 = 1;
    const _: () = assert!(WRITE as u32 == VRING_DESC_F_WRITE && NEXT as u32 == VRING_DESC_F_NEXT);

    fn root() -> Arc<RootCa> {
        static ROOT: OnceLock<Arc<RootCa>> = OnceLock::new();
        Arc::clone(ROOT.get_or_init(|| Arc::new(RootCa::generate().unwrap())))
    }

    /// A device whose queue is the mock's, in `mem`.
    fn device(
        mem: &GuestMemoryMmap,
        queue: &MockSplitQueue<'_, GuestMemoryMmap>,
    ) -> (NsmDevice, VringRwLock) {
        let module = NsmModule::new(ModuleConfig {
            module_id: "i-0-enc1".to_owned(),
            measurements: Vec::new(),
            debug: false,
            root: root(),
        });
        let device = NsmDevice::new(module);
        let atomic = GuestMemoryAtomic::new(mem.clone());
        device.update_memory(atomic.clone()).unwrap();
        let vring = VringRwLock::new(atomic, 64).unwrap();
        vring.set_queue_size(64);
        vring
            .set_queue_info(
                queue.desc_table_addr().0,
                queue.avail_addr().0,
                queue.used_addr().0,
            )
            .unwrap();
        vring.set_queue_ready(true);
        (device, vring)
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn request_bytes(mem: &GuestMemoryMmap, request: &Request) -> u32 {
        let bytes = serde_cbor::to_vec(request).unwrap();
        mem.write_slice(&bytes, GuestAddress(REQUEST_AT)).unwrap();
        u32::try_from(bytes.len()).unwrap()
    }

    /// The used ring's entries: (descriptor head, length).
    fn used(queue: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u32, u32)> {
        let count = queue.used().idx().load();
        (0..usize::from(count))
            .map(|i| {
                let element = queue.used().ring().ref_at(i).unwrap().load();
                (element.id(), element.len())
            })
            .collect()
    }

    /// Queues `descs` as the driver would, lets the device take them, and returns the used
    /// ring's entries.
    fn run(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Vec<(u32, u32)> {
        let queue = MockSplitQueue::new(mem, 64);
        queue.add_desc_chains(descs, 0).unwrap();
        let (device, vring) = device(mem, &queue);
        device.process_queue(&vring).unwrap();
        used(&queue)
    }

    fn response(mem: &GuestMemoryMmap, len: u32) -> Response {
        let mut bytes = vec![0u8; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(RESPONSE_AT))
            .unwrap();
        serde_cbor::from_slice(&bytes).unwrap()
    }

    #[test]
    fn test_two_chains_complete_the_request_with_zero_then_the_response() {
        // As Linux 6.12's nsm.ko queues them: the request, then the response buffer.
        let mem = memory();
        let len = request_bytes(&mem, &Request::DescribePCR { index: 0 });
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESPONSE_AT, 0x3000, WRITE, 0)),
        ];
        let used = run(&mem, &descs);
        assert_eq!(used.len(), 2);
        assert_eq!(used[0], (0, 0), "the request chain first, with length 0");
        assert_eq!(used[1].0, 1);
        assert!(matches!(
            response(&mem, used[1].1),
            Response::DescribePCR { lock: true, .. }
        ));
    }

    #[test]
    fn test_one_chain_with_both_parts_gets_the_response_length() {
        let mem = memory();
        let len = request_bytes(&mem, &Request::GetRandom);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len, NEXT, 1)),
            RawDescriptor::from(SplitDescriptor::new(RESPONSE_AT, 0x3000, WRITE, 0)),
        ];
        let used = run(&mem, &descs);
        assert_eq!(used.len(), 1);
        let Response::GetRandom { random } = response(&mem, used[0].1) else {
            panic!("not random bytes")
        };
        assert_eq!(random.len(), 256);
    }

    #[test]
    fn test_two_requests_in_a_row_give_the_first_back_and_answer_the_second() {
        let mem = memory();
        let len = request_bytes(&mem, &Request::DescribeNSM);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESPONSE_AT, 0x3000, WRITE, 0)),
        ];
        let used = run(&mem, &descs);
        assert_eq!(used.len(), 3, "no descriptor kept: {used:?}");
        assert_eq!(&used[..2], &[(0, 0), (1, 0)]);
        assert!(matches!(
            response(&mem, used[2].1),
            Response::DescribeNSM { .. }
        ));
    }

    #[test]
    fn test_a_response_buffer_too_small_gets_buffer_too_small() {
        let mem = memory();
        let len = request_bytes(&mem, &Request::GetRandom);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len, NEXT, 1)),
            RawDescriptor::from(SplitDescriptor::new(RESPONSE_AT, 64, WRITE, 0)),
        ];
        let used = run(&mem, &descs);
        assert!(matches!(
            response(&mem, used[0].1),
            Response::Error(ErrorCode::BufferTooSmall)
        ));
    }

    #[test]
    fn test_an_oversized_request_is_answered_input_too_large_without_reading_it() {
        let mem = memory();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, 0x1001, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESPONSE_AT, 0x3000, WRITE, 0)),
        ];
        let used = run(&mem, &descs);
        assert_eq!(used[0], (0, 0));
        assert!(matches!(
            response(&mem, used[1].1),
            Response::Error(ErrorCode::InputTooLarge)
        ));
    }
}
