// SPDX-License-Identifier: Apache-2.0
//! One enclave's connections: the vsock connection state machine with credit-based flow
//! control, between the enclave (packets from and to its virtqueues) and host streams
//! (Unix sockets in this process).
//!
//! The guest side is driven by the device's queue thread ([`Mux::guest_packet`],
//! [`Mux::next_packet`]); each connected host stream has a reader and a writer thread, so
//! a host peer that stops reading blocks only its own writer — and, once the credit this
//! device advertised is used up, the enclave's sender — never anyone else. Everything a
//! peer can make grow is bounded: connections per enclave, bytes queued per connection,
//! control packets queued.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use vmm_sys_util::eventfd::EventFd;

use crate::packet::{Header, Op, Packet, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer this device advertises per connection: how many bytes the enclave
/// may send before the host side has consumed them.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// The most bytes of host data queued for the enclave per connection, whatever credit the
/// enclave advertises.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;
/// The most connections one enclave may have.
pub const MAX_CONNECTIONS: usize = 256;
/// The most control packets (responses, resets, credit updates) waiting for the enclave.
pub const MAX_CONTROL_PACKETS: usize = 4096;
/// How much a reader thread reads at once.
const READ_CHUNK: usize = 64 * 1024;
/// The first port given to connections the host opens.
const FIRST_EPHEMERAL_PORT: u32 = 49_152;

/// Where a VM's connection requests to ports outside it go.
pub trait HostPorts: Send + Sync {
    /// A stream to the service at `key.host_cid`:`key.host_port` for a new connection
    /// from port `key.guest_port` of the VM at `guest_cid`, or `None` when nothing listens
    /// there. May block briefly (it may connect a Unix socket, or wait for another VM to
    /// accept); it is called off the queue thread.
    fn open(&self, key: ConnKey, guest_cid: u64) -> Option<UnixStream>;
}

/// A connection, named by its two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    /// The CID of the host side (3: the parent; 0: the hypervisor).
    pub host_cid: u64,
    /// The host side's port.
    pub host_port: u32,
    /// The enclave's port.
    pub guest_port: u32,
}

#[derive(Debug)]
enum State {
    /// The enclave asked; the host side is being opened.
    Opening,
    /// The host asked; waiting for the enclave's answer. The greeting is written to the
    /// host stream before any data, once the enclave accepted.
    Requested(Sender<io::Result<u32>>, Vec<u8>),
    /// Both sides can send.
    Connected,
}

#[derive(Debug)]
struct Conn {
    state: State,
    /// The enclave's receive buffer and what it has consumed, from its last packet.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent (queued) to the enclave.
    tx_cnt: u32,
    /// Bytes of host data queued and not yet delivered.
    queued: usize,
    /// Bytes received from the enclave, and passed on to the host.
    rx_cnt: u32,
    fwd_cnt: u32,
    /// The `fwd_cnt` the enclave last heard of.
    reported_fwd_cnt: u32,
    /// Data for the host's writer thread.
    to_host: Option<Sender<Vec<u8>>>,
    /// The host stream, kept to shut it down.
    host: Option<UnixStream>,
}

impl Conn {
    fn new(state: State) -> Conn {
        Conn {
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            queued: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            reported_fwd_cnt: 0,
            to_host: None,
            host: None,
        }
    }

    /// How many more bytes may be sent to the enclave now.
    fn credit(&self) -> usize {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        let peer = self.peer_buf_alloc.saturating_sub(in_flight) as usize;
        peer.min(MAX_QUEUED_BYTES.saturating_sub(self.queued))
    }

    fn close_host(&mut self) {
        self.to_host = None;
        if let Some(host) = self.host.take() {
            let _ = host.shutdown(Shutdown::Both);
        }
        if let State::Requested(reply, _) = std::mem::replace(&mut self.state, State::Opening) {
            let _ = reply.send(Err(io::Error::from(io::ErrorKind::ConnectionRefused)));
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    conns: BTreeMap<ConnKey, Conn>,
    rx: VecDeque<(ConnKey, Packet)>,
    control_packets: usize,
    next_port: u32,
    closed: bool,
}

/// One enclave's vsock connections.
pub struct Mux {
    cid: u64,
    inner: Mutex<Inner>,
    credit: Condvar,
    kick: EventFd,
    ports: Arc<dyn HostPorts>,
    spoken: AtomicBool,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("cid", &self.cid)
            .finish_non_exhaustive()
    }
}

impl Mux {
    /// The connections of the enclave at `cid`, whose requests to host ports `ports` opens.
    pub fn new(cid: u64, ports: Arc<dyn HostPorts>) -> io::Result<Arc<Mux>> {
        Ok(Arc::new(Mux {
            cid,
            inner: Mutex::new(Inner {
                next_port: FIRST_EPHEMERAL_PORT,
                ..Inner::default()
            }),
            credit: Condvar::new(),
            kick: EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?,
            ports,
            spoken: AtomicBool::new(false),
        }))
    }

    /// The enclave's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Signalled when packets wait for the enclave.
    pub fn kick_event(&self) -> &EventFd {
        &self.kick
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the enclave is gone.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many connections exist.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether packets wait for the enclave.
    pub fn has_packets(&self) -> bool {
        !self.lock().rx.is_empty()
    }

    /// Takes the next packet for the enclave, with at most `room` bytes of data (the rest
    /// stays queued), its header completed with the connection's current credit.
    pub fn next_packet(&self, room: usize) -> Option<Packet> {
        let mut inner = self.lock();
        let (key, mut packet) = inner.rx.pop_front()?;
        if packet.data.len() > room {
            let rest = packet.data.split_off(room);
            inner.rx.push_front((
                key,
                Packet {
                    header: packet.header,
                    data: rest,
                },
            ));
        } else if packet.header.op() != Some(Op::Rw) {
            inner.control_packets = inner.control_packets.saturating_sub(1);
        }
        packet.header.dst_cid = self.cid;
        packet.header.len = u32::try_from(packet.data.len()).unwrap_or(u32::MAX);
        packet.header.buf_alloc = BUF_ALLOC;
        if let Some(conn) = inner.conns.get_mut(&key) {
            packet.header.fwd_cnt = conn.fwd_cnt;
            conn.reported_fwd_cnt = conn.fwd_cnt;
            if packet.header.op() == Some(Op::Rw) {
                conn.queued = conn.queued.saturating_sub(packet.data.len());
            }
        }
        drop(inner);
        self.credit.notify_all();
        Some(packet)
    }

    /// Whether the enclave has sent a valid packet: its kernel booted and something in it
    /// used vsock (an enclave's init connects for the heartbeat first).
    pub fn has_spoken(&self) -> bool {
        self.spoken.load(Ordering::Relaxed)
    }

    /// A packet the enclave sent that could not be read whole: its connection, if it has
    /// one, is reset (the enclave hears RST rather than waiting for credit that lost data
    /// would never return).
    pub fn refuse_packet(&self, header: &Header) {
        let key = ConnKey {
            host_cid: header.dst_cid,
            host_port: header.dst_port,
            guest_port: header.src_port,
        };
        let known = header.src_cid == self.cid && self.lock().conns.contains_key(&key);
        if known {
            self.reset(key);
        } else {
            self.reset_reply(header);
        }
    }

    /// A packet the enclave sent.
    pub fn guest_packet(self: &Arc<Self>, header: &Header, data: &[u8]) {
        if header.src_cid != self.cid || header.type_ != TYPE_STREAM {
            // A CID the enclave does not own, or a socket type it cannot use.
            self.reset_reply(header);
            return;
        }
        self.spoken.store(true, Ordering::Relaxed);
        let key = ConnKey {
            host_cid: header.dst_cid,
            host_port: header.dst_port,
            guest_port: header.src_port,
        };
        match header.op() {
            Some(Op::Request) => self.guest_request(key, header),
            Some(Op::Response) => self.guest_response(key, header),
            Some(Op::Rw) => self.guest_data(key, header, data),
            Some(Op::CreditUpdate) => self.guest_credit(key, header, false),
            Some(Op::CreditRequest) => self.guest_credit(key, header, true),
            Some(Op::Shutdown) => self.guest_shutdown(key, header),
            Some(Op::Rst) => self.remove(key),
            None => self.reset_reply(header),
        }
    }

    fn guest_request(self: &Arc<Self>, key: ConnKey, header: &Header) {
        let mut inner = self.lock();
        if inner.closed || inner.conns.contains_key(&key) || inner.conns.len() >= MAX_CONNECTIONS {
            drop(inner);
            self.reset_reply(header);
            return;
        }
        let mut conn = Conn::new(State::Opening);
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = header.fwd_cnt;
        inner.conns.insert(key, conn);
        drop(inner);
        let mux = Arc::clone(self);
        let opened = thread::Builder::new()
            .name("ne-vsock-open".to_owned())
            .spawn(move || {
                let stream = mux.ports.open(key, mux.cid);
                mux.host_opened(key, stream);
            });
        if opened.is_err() {
            self.reset(key);
        }
    }

    /// The host side of a connection the enclave asked for is open (or refused).
    fn host_opened(self: &Arc<Self>, key: ConnKey, stream: Option<UnixStream>) {
        let Some(stream) = stream else {
            self.reset(key);
            return;
        };
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            return;
        };
        conn.state = State::Connected;
        let started = start_io(self, key, conn, stream);
        let queued = started && push_control(&mut inner, key, Op::Response, 0);
        drop(inner);
        if queued {
            self.notify();
        } else {
            self.reset(key);
        }
    }

    fn guest_response(self: &Arc<Self>, key: ConnKey, header: &Header) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            drop(inner);
            self.reset_reply(header);
            return;
        };
        let State::Requested(reply, greeting) =
            std::mem::replace(&mut conn.state, State::Connected)
        else {
            drop(inner);
            self.reset(key);
            return;
        };
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = header.fwd_cnt;
        let greeted = conn
            .host
            .take()
            .and_then(|mut host| host.write_all(&greeting).ok().map(|()| host));
        let started = greeted.is_some_and(|host| start_io(self, key, conn, host));
        drop(inner);
        if started {
            let _ = reply.send(Ok(key.host_port));
        } else {
            let _ = reply.send(Err(io::Error::other(
                "the host end of the connection closed",
            )));
            self.reset(key);
        }
    }

    fn guest_data(&self, key: ConnKey, header: &Header, data: &[u8]) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            drop(inner);
            self.reset_reply(header);
            return;
        };
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = header.fwd_cnt;
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let unconsumed = conn.rx_cnt.wrapping_sub(conn.fwd_cnt).saturating_add(len);
        let accepted = unconsumed <= BUF_ALLOC
            && matches!(conn.state, State::Connected)
            && conn
                .to_host
                .as_ref()
                .is_some_and(|to_host| to_host.send(data.to_vec()).is_ok());
        if accepted {
            conn.rx_cnt = conn.rx_cnt.wrapping_add(len);
            drop(inner);
            self.credit.notify_all();
        } else {
            // The enclave sent past the credit it was given, or to a half-open connection.
            drop(inner);
            self.reset(key);
        }
    }

    fn guest_credit(&self, key: ConnKey, header: &Header, answer: bool) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            drop(inner);
            self.reset_reply(header);
            return;
        };
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = header.fwd_cnt;
        let queued = answer && push_control(&mut inner, key, Op::CreditUpdate, 0);
        drop(inner);
        self.credit.notify_all();
        if queued {
            self.notify();
        }
    }

    fn guest_shutdown(&self, key: ConnKey, header: &Header) {
        let both = SHUTDOWN_RCV | SHUTDOWN_SEND;
        if header.flags & both == both {
            // Closed both ways: acknowledge with RST, as the Linux host transport does — but
            // what the enclave sent before still reaches the host: its writer passes the
            // queued data on, then closes the stream (a peer that writes and closes at once,
            // as nitro-cli's heartbeat echo does, loses nothing).
            if let Some(conn) = self.lock().conns.get_mut(&key) {
                conn.to_host = None;
                conn.host = None;
            }
            self.reset(key);
            return;
        }
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            return;
        };
        if header.flags & SHUTDOWN_SEND != 0 {
            // No more data from the enclave: the host reads end of stream once the writer
            // has passed on what came before.
            conn.to_host = None;
        }
        if header.flags & SHUTDOWN_RCV != 0 {
            if let Some(host) = &conn.host {
                let _ = host.shutdown(Shutdown::Read);
            }
        }
    }

    /// Opens a connection from the host (the parent, CID 3) to the enclave's `port`, with
    /// `host` as the host end; once the enclave accepts, `greeting` is written to `host`
    /// before any data. The answer arrives on the returned channel: the host port the
    /// connection got, or why the enclave refused.
    pub fn connect(
        &self,
        port: u32,
        host: UnixStream,
        greeting: impl FnOnce(u32) -> Vec<u8>,
    ) -> io::Result<Receiver<io::Result<u32>>> {
        self.connect_from(crate::PARENT_CID, None, port, host, greeting)
    }

    /// [`Mux::connect`] from `host_cid`, port `host_port` (if it is free; else, and with
    /// `None`, an ephemeral one): how another VM's connection is passed on.
    pub fn connect_from(
        &self,
        host_cid: u64,
        host_port: Option<u32>,
        port: u32,
        host: UnixStream,
        greeting: impl FnOnce(u32) -> Vec<u8>,
    ) -> io::Result<Receiver<io::Result<u32>>> {
        let (reply, answer) = channel();
        let mut inner = self.lock();
        if inner.closed || inner.conns.len() >= MAX_CONNECTIONS {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the enclave takes no more connections",
            ));
        }
        let wanted = host_port.map(|host_port| ConnKey {
            host_cid,
            host_port,
            guest_port: port,
        });
        let key = match wanted {
            Some(key) if !inner.conns.contains_key(&key) => key,
            _ => ConnKey {
                host_cid,
                host_port: free_port(&mut inner, host_cid, port),
                guest_port: port,
            },
        };
        let host_port = key.host_port;
        let mut conn = Conn::new(State::Requested(reply, greeting(host_port)));
        conn.host = Some(host);
        inner.conns.insert(key, conn);
        let queued = push_control(&mut inner, key, Op::Request, 0);
        drop(inner);
        if queued {
            self.notify();
        } else {
            self.remove(key);
        }
        Ok(answer)
    }

    /// Tears every connection down (the enclave is gone); later requests are refused.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for conn in inner.conns.values_mut() {
            conn.close_host();
        }
        inner.conns.clear();
        inner.rx.clear();
        inner.control_packets = 0;
        drop(inner);
        self.credit.notify_all();
    }

    /// Drops a connection and tells the enclave (RST).
    fn reset(&self, key: ConnKey) {
        let mut inner = self.lock();
        if let Some(mut conn) = inner.conns.remove(&key) {
            conn.close_host();
        }
        drop_packets(&mut inner, key);
        let queued = push_control(&mut inner, key, Op::Rst, 0);
        drop(inner);
        self.credit.notify_all();
        if queued {
            self.notify();
        }
    }

    /// Drops a connection the enclave reset.
    fn remove(&self, key: ConnKey) {
        let mut inner = self.lock();
        if let Some(mut conn) = inner.conns.remove(&key) {
            conn.close_host();
        }
        drop_packets(&mut inner, key);
        drop(inner);
        self.credit.notify_all();
    }

    /// Answers a packet that names no connection with RST.
    fn reset_reply(&self, header: &Header) {
        if header.op() == Some(Op::Rst) {
            return;
        }
        let key = ConnKey {
            host_cid: header.dst_cid,
            host_port: header.dst_port,
            guest_port: header.src_port,
        };
        let mut inner = self.lock();
        let queued = push_control(&mut inner, key, Op::Rst, 0);
        drop(inner);
        if queued {
            self.notify();
        }
    }

    fn notify(&self) {
        let _ = self.kick.write(1);
    }

    /// Waits until `key` may send more to the enclave; returns how much, or `None` once the
    /// connection is gone.
    fn wait_credit(&self, key: ConnKey) -> Option<usize> {
        let mut inner = self.lock();
        loop {
            let conn = inner.conns.get(&key)?;
            let credit = conn.credit();
            if credit > 0 {
                return Some(credit);
            }
            inner = self
                .credit
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Host data read on `key`, to send to the enclave.
    fn host_data(&self, key: ConnKey, data: Vec<u8>) -> bool {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            return false;
        };
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        conn.tx_cnt = conn.tx_cnt.wrapping_add(len);
        conn.queued += data.len();
        inner.rx.push_back((key, packet(key, Op::Rw, 0, data)));
        drop(inner);
        self.notify();
        true
    }

    /// The host will send no more on `key` (it closed, or shut down its writing half):
    /// the enclave reads end of stream, and may still send until it closes.
    fn host_closed(&self, key: ConnKey) {
        let mut inner = self.lock();
        if !inner.conns.contains_key(&key) {
            return;
        }
        let queued = push_control(&mut inner, key, Op::Shutdown, SHUTDOWN_SEND);
        drop(inner);
        if queued {
            self.notify();
        }
    }

    /// The host consumed `len` bytes of `key`: the enclave may send that much more, and hears
    /// of it once a quarter of the buffer has been consumed.
    fn host_consumed(&self, key: ConnKey, len: usize) {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.get_mut(&key) else {
            return;
        };
        conn.fwd_cnt = conn
            .fwd_cnt
            .wrapping_add(u32::try_from(len).unwrap_or(u32::MAX));
        let unreported = conn.fwd_cnt.wrapping_sub(conn.reported_fwd_cnt);
        let queued =
            unreported >= BUF_ALLOC / 4 && push_control(&mut inner, key, Op::CreditUpdate, 0);
        drop(inner);
        if queued {
            self.notify();
        }
    }
}

/// A port for a host-initiated connection to `guest_port` that no connection uses.
fn free_port(inner: &mut Inner, host_cid: u64, guest_port: u32) -> u32 {
    loop {
        let port = inner.next_port;
        inner.next_port = port
            .checked_add(1)
            .unwrap_or(FIRST_EPHEMERAL_PORT)
            .max(FIRST_EPHEMERAL_PORT);
        let key = ConnKey {
            host_cid,
            host_port: port,
            guest_port,
        };
        if !inner.conns.contains_key(&key) {
            return port;
        }
    }
}

/// A packet for the enclave on `key`; its destination CID, length and credit fields are
/// filled when it is delivered ([`Mux::next_packet`]).
fn packet(key: ConnKey, op: Op, flags: u32, data: Vec<u8>) -> Packet {
    Packet {
        header: Header {
            src_cid: key.host_cid,
            dst_cid: 0,
            src_port: key.host_port,
            dst_port: key.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op.value(),
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: 0,
        },
        data,
    }
}

/// Forgets the packets queued for `key`.
fn drop_packets(inner: &mut Inner, key: ConnKey) {
    inner.rx.retain(|(k, _)| *k != key);
    inner.control_packets = inner
        .rx
        .iter()
        .filter(|(_, p)| p.header.op() != Some(Op::Rw))
        .count();
}

/// Queues a control packet for `key`; false when too many wait already.
fn push_control(inner: &mut Inner, key: ConnKey, op: Op, flags: u32) -> bool {
    if inner.control_packets >= MAX_CONTROL_PACKETS {
        return false;
    }
    inner.control_packets += 1;
    inner
        .rx
        .push_back((key, packet(key, op, flags, Vec::new())));
    true
}

/// Starts the reader and writer threads of a connected host stream; false if a thread
/// could not start.
fn start_io(mux: &Arc<Mux>, key: ConnKey, conn: &mut Conn, stream: UnixStream) -> bool {
    let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
        return false;
    };
    let (to_host, from_guest) = channel::<Vec<u8>>();
    conn.to_host = Some(to_host);
    conn.host = Some(stream);
    let read_mux = Arc::clone(mux);
    let reading = thread::Builder::new()
        .name("ne-vsock-read".to_owned())
        .spawn(move || read_host(&read_mux, key, reader));
    let write_mux = Arc::clone(mux);
    let writing = thread::Builder::new()
        .name("ne-vsock-write".to_owned())
        .spawn(move || write_host(&write_mux, key, writer, &from_guest));
    reading.is_ok() && writing.is_ok()
}

/// Host → enclave: reads as much as the enclave's credit allows, until end of stream.
fn read_host(mux: &Mux, key: ConnKey, mut stream: UnixStream) {
    let mut buf = vec![0u8; READ_CHUNK];
    while let Some(credit) = mux.wait_credit(key) {
        let want = credit.min(buf.len());
        match stream.read(buf.get_mut(..want).unwrap_or_default()) {
            Ok(0) => {
                mux.host_closed(key);
                return;
            }
            Ok(n) => {
                if !mux.host_data(key, buf.get(..n).unwrap_or_default().to_vec()) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                mux.reset(key);
                return;
            }
        }
    }
}

/// Enclave → host: writes what the enclave sent, and returns the credit as it goes.
fn write_host(mux: &Mux, key: ConnKey, mut stream: UnixStream, from_guest: &Receiver<Vec<u8>>) {
    for chunk in from_guest {
        if stream.write_all(&chunk).is_err() {
            mux.reset(key);
            return;
        }
        mux.host_consumed(key, chunk.len());
    }
    // The enclave sends no more; if the connection is gone altogether, nothing comes back
    // either.
    let how = if mux.lock().conns.contains_key(&key) {
        Shutdown::Write
    } else {
        Shutdown::Both
    };
    let _ = stream.shutdown(how);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const GUEST: u64 = 16;

    /// Host ports: `open` hands out one end of a pair for port 9000 and keeps the other.
    #[derive(Default)]
    struct Ports {
        opened: Mutex<Vec<UnixStream>>,
    }

    impl HostPorts for Ports {
        fn open(&self, key: ConnKey, _guest_cid: u64) -> Option<UnixStream> {
            let (host_cid, port) = (key.host_cid, key.host_port);
            if host_cid != crate::PARENT_CID || port != 9000 {
                return None;
            }
            let (ours, theirs) = UnixStream::pair().ok()?;
            self.opened.lock().unwrap().push(theirs);
            Some(ours)
        }
    }

    fn header(op: Op, guest_port: u32, host_port: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: crate::PARENT_CID,
            src_port: guest_port,
            dst_port: host_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op.value(),
            flags: 0,
            buf_alloc: 65_536,
            fwd_cnt: 0,
        }
    }

    /// Waits for the next packet for the guest.
    fn next(mux: &Mux) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(packet) = mux.next_packet(4096) {
                return packet;
            }
            assert!(Instant::now() < deadline, "no packet for the guest");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn connected(ports: &Arc<Ports>) -> (Arc<Mux>, UnixStream) {
        let mux = Mux::new(GUEST, ports.clone()).unwrap();
        mux.guest_packet(&header(Op::Request, 1234, 9000), &[]);
        let response = next(&mux);
        assert_eq!(response.header.op(), Some(Op::Response));
        assert_eq!(response.header.dst_cid, GUEST);
        assert_eq!(response.header.buf_alloc, BUF_ALLOC);
        let host = ports.opened.lock().unwrap().pop().unwrap();
        (mux, host)
    }

    #[test]
    fn test_a_request_to_a_port_nobody_listens_on_gets_rst() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        mux.guest_packet(&header(Op::Request, 1234, 7777), &[]);
        let reset = next(&mux);
        assert_eq!(reset.header.op(), Some(Op::Rst));
        assert_eq!((reset.header.src_port, reset.header.dst_port), (7777, 1234));
        assert_eq!(mux.connections(), 0);
    }

    #[test]
    fn test_a_request_to_another_cid_than_the_parent_gets_rst() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        let mut request = header(Op::Request, 1, 9000);
        request.dst_cid = 17;
        mux.guest_packet(&request, &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Rst));
    }

    #[test]
    fn test_a_packet_with_a_forged_source_cid_gets_rst() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        let mut request = header(Op::Request, 1, 9000);
        request.src_cid = 99;
        mux.guest_packet(&request, &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Rst));
        assert_eq!(mux.connections(), 0);
        assert!(
            !mux.has_spoken(),
            "a forged packet is not the enclave speaking"
        );
    }

    #[test]
    fn test_the_enclave_has_spoken_from_its_first_valid_packet() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        assert!(!mux.has_spoken());
        mux.guest_packet(&header(Op::Request, 1234, 7777), &[]);
        assert!(mux.has_spoken());
    }

    #[test]
    fn test_data_sent_just_before_a_close_both_ways_still_reaches_the_host() {
        let ports = Arc::new(Ports::default());
        for round in 0..50 {
            let (mux, mut host) = connected(&ports);
            let mut data = header(Op::Rw, 1234, 9000);
            data.len = 1;
            mux.guest_packet(&data, &[0xB7]);
            let mut shutdown = header(Op::Shutdown, 1234, 9000);
            shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
            mux.guest_packet(&shutdown, &[]);
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut received = Vec::new();
            host.read_to_end(&mut received).unwrap();
            assert_eq!(received, [0xB7], "round {round}");
        }
    }

    #[test]
    fn test_data_flows_both_ways_and_the_fwd_cnt_reports_what_the_host_consumed() {
        let ports = Arc::new(Ports::default());
        let (mux, mut host) = connected(&ports);
        let mut data = header(Op::Rw, 1234, 9000);
        data.len = 5;
        mux.guest_packet(&data, b"hello");
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        host.write_all(b"world").unwrap();
        let packet = next(&mux);
        assert_eq!(packet.header.op(), Some(Op::Rw));
        assert_eq!(packet.data, b"world");
        assert_eq!(packet.header.len, 5);
        assert_eq!(packet.header.fwd_cnt, 5, "the 5 bytes the host consumed");
    }

    #[test]
    fn test_host_data_waits_for_the_guests_credit() {
        let ports = Arc::new(Ports::default());
        let (mux, mut host) = connected(&ports);
        // The guest advertised 65 536 bytes and has consumed none.
        host.write_all(&vec![7u8; 100_000]).unwrap();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Some(packet) = mux.next_packet(usize::MAX) {
                sent += packet.data.len();
            }
        }
        assert_eq!(sent, 65_536, "no more than the credit");
        let mut credit = header(Op::CreditUpdate, 1234, 9000);
        credit.fwd_cnt = 65_536;
        mux.guest_packet(&credit, &[]);
        while sent < 100_000 {
            sent += next(&mux).data.len();
        }
        assert_eq!(sent, 100_000);
    }

    #[test]
    fn test_data_beyond_the_advertised_credit_resets_the_connection() {
        let ports = Arc::new(Ports::default());
        let (mux, _host) = connected(&ports);
        let mut flood = header(Op::Rw, 1234, 9000);
        flood.len = BUF_ALLOC + 1;
        mux.guest_packet(&flood, &vec![0; BUF_ALLOC as usize + 1]);
        assert_eq!(next(&mux).header.op(), Some(Op::Rst));
        assert_eq!(mux.connections(), 0);
    }

    #[test]
    fn test_a_host_that_stops_reading_blocks_only_its_own_connection() {
        let ports = Arc::new(Ports::default());
        let (mux, _stuck_host) = connected(&ports);
        // Fill what the stuck host's socket and the device's buffer can take.
        let mut data = header(Op::Rw, 1234, 9000);
        let chunk = vec![1u8; 32 * 1024];
        data.len = u32::try_from(chunk.len()).unwrap();
        for _ in 0..(BUF_ALLOC as usize / chunk.len()) {
            mux.guest_packet(&data, &chunk);
        }
        // Another connection on the same enclave still works at once.
        mux.guest_packet(&header(Op::Request, 4321, 9000), &[]);
        let response = loop {
            let packet = next(&mux);
            if packet.header.dst_port == 4321 {
                break packet;
            }
        };
        assert_eq!(response.header.op(), Some(Op::Response));
    }

    #[test]
    fn test_a_full_shutdown_from_the_guest_is_answered_with_rst_and_closes_the_host() {
        let ports = Arc::new(Ports::default());
        let (mux, mut host) = connected(&ports);
        let mut shutdown = header(Op::Shutdown, 1234, 9000);
        shutdown.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        mux.guest_packet(&shutdown, &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Rst));
        let mut byte = [0u8];
        assert_eq!(
            host.read(&mut byte).unwrap(),
            0,
            "the host reads end of stream"
        );
    }

    #[test]
    fn test_the_host_closing_its_end_shuts_the_guests_sending_side_only() {
        let ports = Arc::new(Ports::default());
        let (mux, host) = connected(&ports);
        host.shutdown(Shutdown::Write).unwrap();
        let packet = next(&mux);
        assert_eq!(packet.header.op(), Some(Op::Shutdown));
        assert_eq!(packet.header.flags, SHUTDOWN_SEND);
    }

    #[test]
    fn test_a_host_connection_completes_when_the_guest_accepts() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let answer = mux
            .connect(5005, theirs, |port| format!("OK {port}\n").into_bytes())
            .unwrap();
        let request = next(&mux);
        assert_eq!(request.header.op(), Some(Op::Request));
        assert_eq!(request.header.dst_port, 5005);
        let mut response = header(Op::Response, 5005, request.header.src_port);
        response.src_port = 5005;
        mux.guest_packet(&response, &[]);
        assert_eq!(answer.recv().unwrap().unwrap(), request.header.src_port);
        let mut greeting = String::new();
        BufReader::new(ours).read_line(&mut greeting).unwrap();
        assert_eq!(greeting, format!("OK {}\n", request.header.src_port));
    }

    #[test]
    fn test_a_refused_host_connection_reports_the_refusal() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let answer = mux.connect(5005, theirs, |_| Vec::new()).unwrap();
        let request = next(&mux);
        mux.guest_packet(&header(Op::Rst, 5005, request.header.src_port), &[]);
        answer.recv().unwrap().unwrap_err();
    }

    #[test]
    fn test_connections_beyond_the_limit_get_rst() {
        let ports = Arc::new(Ports::default());
        let mux = Mux::new(GUEST, ports.clone()).unwrap();
        for port in 0..MAX_CONNECTIONS {
            mux.guest_packet(
                &header(Op::Request, u32::try_from(port).unwrap(), 9000),
                &[],
            );
        }
        for _ in 0..MAX_CONNECTIONS {
            assert_eq!(next(&mux).header.op(), Some(Op::Response));
        }
        mux.guest_packet(&header(Op::Request, 99_999, 9000), &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Rst));
    }

    #[test]
    fn test_control_packets_for_a_guest_that_never_reads_are_bounded() {
        let mux = Mux::new(GUEST, Arc::new(Ports::default())).unwrap();
        for port in 0..u32::try_from(MAX_CONTROL_PACKETS + 100).unwrap() {
            mux.guest_packet(&header(Op::Request, port, 7777), &[]);
        }
        // Each refusal is decided off the queue thread; let them all land.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mux.connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(mux.lock().rx.len(), MAX_CONTROL_PACKETS);
    }
}
