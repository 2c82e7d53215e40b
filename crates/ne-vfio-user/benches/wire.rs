// SPDX-License-Identifier: Apache-2.0
//! The vfio-user path, against its floor in the same run:
//! - `region_read_4`: one 4-byte read of BAR 3 (EVTCNT) through the server, as QEMU's
//!   `vfio-user-pci` sends it for one guest MMIO read: a 32-byte request, a 36-byte reply;
//! - `floor_pingpong`: the same sizes between two threads over a Unix socket pair, one
//!   write and one read on each side — what any server on this transport costs;
//! - `slot_info_command`: one whole command as the Linux driver makes it over vfio-user —
//!   the payload written, the doorbell, vector 0 on its eventfd, then the 72-byte reply read
//!   in Linux's `memcpy_fromio` pattern (4-byte reads while aligned), one message each.
//!
//! - `sample_lifecycle`: the Linux sample's 262 commands (`SLOT_ALLOC`, 256 × `SLOT_ADD_MEM`
//!   of 2 MiB, 2 × `SLOT_ADD_VCPU`, `ENCLAVE_START`, `ENCLAVE_STOP`, `SLOT_FREE`) made as that
//!   command is, each BAR access one message, against the simulated backend.
//!
//! `cargo bench -p ne-vfio-user --bench wire`

#![allow(missing_docs)] // criterion's macros define undocumented functions

use std::io::{IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ne_abi::cmd::{
    EnclaveStartReq, EnclaveStopReq, Request, SlotAddMemReq, SlotAddVcpuReq, SlotAllocReq,
    SlotFreeReq,
};
use ne_abi::{regs, Command};
use ne_vfio_user::wire::{DmaMap, Header, IrqSet, RegionAccess, Version};
use ne_vfio_user::{default_device_config, NeServer};
use rustix::event::{eventfd, EventfdFlags};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use std::os::fd::OwnedFd;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

const BAR3: u32 = 3;
const VERSION: u16 = 1;
const DMA_MAP: u16 = 2;
const SET_IRQS: u16 = 8;
const REGION_READ: u16 = 9;
const REGION_WRITE: u16 = 10;
const MSIX_INDEX: u32 = 2;
const IRQ_FLAGS: u32 = (1 << 2) | (1 << 5); // DATA_EVENTFD | ACTION_TRIGGER

/// A raw vfio-user client: one `write` per request, one `read` per reply.
struct Client {
    stream: UnixStream,
    id: u16,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                break stream;
            }
            assert!(Instant::now() < deadline, "the server did not listen");
            thread::sleep(Duration::from_millis(10));
        };
        let mut client = Client { stream, id: 0 };
        let mut body = Version {
            major: U16::new(0),
            minor: U16::new(1),
        }
        .as_bytes()
        .to_vec();
        body.extend_from_slice(b"{}\0");
        client.call(VERSION, &body, &[]);
        client
    }

    fn message(&mut self, command: u16, body: &[u8]) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        let header = Header {
            message_id: U16::new(self.id),
            command: U16::new(command),
            message_size: U32::new(u32::try_from(16 + body.len()).unwrap()),
            flags: U32::new(0),
            error_no: U32::new(0),
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    /// Sends a command (with `fds`) and returns its reply's body.
    fn call(&mut self, command: u16, body: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> Vec<u8> {
        let bytes = self.message(command, body);
        if fds.is_empty() {
            self.stream.write_all(&bytes).unwrap();
        } else {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut ancillary = SendAncillaryBuffer::new(&mut space);
            assert!(ancillary.push(SendAncillaryMessage::ScmRights(fds)));
            sendmsg(
                &self.stream,
                &[IoSlice::new(&bytes)],
                &mut ancillary,
                SendFlags::empty(),
            )
            .unwrap();
        }
        let mut head = [0u8; 16];
        self.stream.read_exact(&mut head).unwrap();
        let size = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
        let mut reply = vec![0u8; size - 16];
        self.stream.read_exact(&mut reply).unwrap();
        assert_eq!(
            u32::from_le_bytes(head[12..16].try_into().unwrap()),
            0,
            "an error reply"
        );
        reply
    }

    fn read_u32(&mut self, offset: u64) -> u32 {
        let access = RegionAccess {
            offset: U64::new(offset),
            region: U32::new(BAR3),
            count: U32::new(4),
        };
        let reply = self.call(REGION_READ, access.as_bytes(), &[]);
        u32::from_le_bytes(reply[16..20].try_into().unwrap())
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let access = RegionAccess {
            offset: U64::new(offset),
            region: U32::new(BAR3),
            count: U32::new(u32::try_from(data.len()).unwrap()),
        };
        let mut body = access.as_bytes().to_vec();
        body.extend_from_slice(data);
        self.call(REGION_WRITE, &body, &[]);
    }
}

const HUGEPAGE: u64 = 2 << 20;
/// Guest RAM the client maps: the sample's regions, one after another from 0, with a small
/// valid image at 8 MiB (the hypervisor checks it at `ENCLAVE_START`).
const RAM: u64 = 1 << 30;
const SAMPLE_REGIONS: u64 = 256;

/// One command as Linux's `ne_do_request` makes it over BAR 3: the payload written as
/// `memcpy_toio` does, the doorbell, vector 0, the 72-byte reply read as `memcpy_fromio`
/// does; returns the reply's `rc` and `slot_uid`.
fn request<R: Request>(client: &mut Client, reply: &OwnedFd, req: &R) -> (i32, u64) {
    let bytes = req.as_bytes();
    for chunk in regs::io_chunks(bytes.len()) {
        client.write(regs::SEND_DATA + chunk.start as u64, &bytes[chunk]);
    }
    client.write(regs::COMMAND, &R::COMMAND.number().to_le_bytes());
    let mut count = [0u8; 8];
    while rustix::io::read(reply, &mut count).is_err() {
        std::hint::spin_loop();
    }
    let mut words = [0u32; 18];
    for (i, word) in words.iter_mut().enumerate() {
        *word = client.read_u32(regs::RECV_DATA + 4 * i as u64);
    }
    let rc = words[0].cast_signed();
    let uid = u64::from(words[2]) | (u64::from(words[3]) << 32);
    (rc, uid)
}

/// A small valid EIF.
fn sample_eif() -> Vec<u8> {
    ne_eif::EifBuilder {
        kernel: vec![0x5a; 4096],
        cmdline: "console=ttyS0".to_owned(),
        ramdisks: vec![vec![7; 4096]],
        metadata: ne_eif::Metadata::new("bench", "1", "2026-12-01T00:00:00Z"),
        flags: 0,
    }
    .build()
    .unwrap()
    .0
}

/// The Linux sample's commands, checked.
fn lifecycle(client: &mut Client, reply: &OwnedFd) {
    let (rc, uid) = request(client, reply, &SlotAllocReq::default());
    assert_eq!(rc, 0, "SLOT_ALLOC");
    let slot_uid = U64::new(uid);
    for index in 0..SAMPLE_REGIONS {
        let add = SlotAddMemReq {
            slot_uid,
            paddr: U64::new(index * HUGEPAGE),
            size: U64::new(HUGEPAGE),
        };
        assert_eq!(request(client, reply, &add).0, 0, "SLOT_ADD_MEM");
    }
    for vcpu in [1, 2] {
        let add = SlotAddVcpuReq {
            slot_uid,
            vcpu_id: U32::new(vcpu),
            padding: [0; 4],
        };
        assert_eq!(request(client, reply, &add).0, 0, "SLOT_ADD_VCPU");
    }
    let start = EnclaveStartReq {
        slot_uid,
        enclave_cid: U64::new(0),
        flags: U64::new(0),
    };
    let (rc, _) = request(client, reply, &start);
    assert_eq!(rc, 0, "ENCLAVE_START");
    assert_eq!(
        request(client, reply, &EnclaveStopReq { slot_uid }).0,
        0,
        "ENCLAVE_STOP"
    );
    assert_eq!(
        request(client, reply, &SlotFreeReq { slot_uid }).0,
        0,
        "SLOT_FREE"
    );
}

/// A server in a thread and a client connected to it, with vector 0 on `reply` and
/// [`RAM`] mapped at 0.
fn served() -> (Client, OwnedFd, OwnedFd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ne.sock");
    let server = NeServer::new(&socket, default_device_config()).unwrap();
    thread::spawn(move || server.serve_one());
    let mut client = Client::connect(&socket);
    let reply = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
    let event = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
    let set = IrqSet {
        argsz: U32::new(20 + 8),
        flags: U32::new(IRQ_FLAGS),
        index: U32::new(MSIX_INDEX),
        start: U32::new(0),
        count: U32::new(2),
    };
    client.call(SET_IRQS, set.as_bytes(), &[reply.as_fd(), event.as_fd()]);
    let ram = tempfile::tempfile().unwrap();
    ram.set_len(RAM).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&ram, &sample_eif(), 8 << 20).unwrap();
    let map = DmaMap {
        argsz: U32::new(32),
        flags: U32::new(3),
        offset: U64::new(0),
        address: U64::new(0),
        size: U64::new(RAM),
    };
    client.call(DMA_MAP, map.as_bytes(), &[ram.as_fd()]);
    client.write(regs::ENABLE, &[1]);
    (client, reply, event, dir)
}

fn bench(c: &mut Criterion) {
    let (mut client, reply, _event, _dir) = served();
    let mut group = c.benchmark_group("vfio_user");
    group.bench_function("region_read_4", |b| {
        b.iter(|| client.read_u32(regs::EVTCNT));
    });

    group.bench_function("slot_info_command", |b| {
        b.iter(|| {
            client.write(regs::SEND_DATA, &0u64.to_le_bytes());
            client.write(regs::COMMAND, &Command::SlotInfo.number().to_le_bytes());
            let mut count = [0u8; 8];
            while rustix::io::read(&reply, &mut count).is_err() {
                std::hint::spin_loop();
            }
            // Linux's memcpy_fromio of the 72-byte reply: 4-byte reads.
            let mut rc = 0;
            for offset in (0..72).step_by(4) {
                rc |= client.read_u32(regs::RECV_DATA + offset);
            }
            rc
        });
    });

    let (mut near, mut far) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut request = [0u8; 32];
        let reply = [0u8; 36];
        while far.read_exact(&mut request).is_ok() {
            if far.write_all(&reply).is_err() {
                return;
            }
        }
    });
    let request = [0u8; 32];
    let mut answer = [0u8; 36];
    group.bench_function("floor_pingpong", |b| {
        b.iter(|| {
            near.write_all(&request).unwrap();
            near.read_exact(&mut answer).unwrap();
        });
    });
    group.finish();

    // 262 commands of some 25 messages each: ten samples are plenty.
    let mut group = c.benchmark_group("vfio_user_lifecycle");
    group.sample_size(10);
    group.bench_function("sample_262_commands", |b| {
        b.iter(|| lifecycle(&mut client, &reply));
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
