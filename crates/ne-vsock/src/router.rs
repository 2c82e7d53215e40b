// SPDX-License-Identifier: Apache-2.0
//! Routing as Nitro routes: an enclave reaches CID 3 (the parent) and nothing else; the
//! parent reaches each enclave at its CID.
//!
//! On the parent's side (CID 3), a port is served either by a listener in this process
//! ([`Router::listen`], e.g. nitro-cli's heartbeat on 9000) or, in the style of
//! Firecracker's hybrid vsock, by a Unix socket `<dir>/<port>.sock` that someone listens
//! on. The parent reaches an enclave from this process ([`Router::connect`]) or by
//! connecting to `<dir>/enclave-<cid>.sock` and writing `CONNECT <port>\n`; the answer is
//! `OK <host port>\n`, then the stream carries the connection.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use thiserror::Error;

use crate::mux::{ConnKey, HostPorts, Mux};
use crate::{console_port, HYPERVISOR_CID, PARENT_CID};

/// How long a `CONNECT` client may take to send its line.
const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `CONNECT` line.
const MAX_CONNECT_LINE: u64 = 64;
/// How long a host-initiated connection waits for the enclave's answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a routing request failed.
#[derive(Debug, Error)]
pub enum RouteError {
    /// Another listener has the port.
    #[error("Port {0} of the parent already has a listener")]
    PortTaken(u32),
    /// No enclave has the CID.
    #[error("No enclave has CID {0}")]
    NoSuchEnclave(u64),
    /// An enclave already has the CID.
    #[error("An enclave already has CID {0}")]
    CidTaken(u64),
    /// The enclave refused or did not answer.
    #[error("The enclave at CID {cid} did not accept a connection on port {port}")]
    Refused {
        /// The enclave.
        cid: u64,
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("vsock routing failed")]
    Io(#[from] io::Error),
}

/// Opens a stream that carries an enclave's console (history, then live output).
pub type ConsoleSource = Arc<dyn Fn() -> Option<UnixStream> + Send + Sync>;

#[derive(Default)]
struct Inner {
    listeners: BTreeMap<u32, Sender<UnixStream>>,
    enclaves: BTreeMap<u64, Arc<Mux>>,
    /// The parent as a VM (`nectl serve`'s guest): when attached, it is CID 3.
    parent_vm: Option<Arc<Mux>>,
    /// Debug enclaves' consoles, served at CID 0, port `cid + 10000`, by CID.
    consoles: BTreeMap<u64, ConsoleSource>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("listeners", &self.listeners.keys().collect::<Vec<_>>())
            .field("enclaves", &self.enclaves.keys().collect::<Vec<_>>())
            .field("parent_vm", &self.parent_vm.is_some())
            .field("consoles", &self.consoles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The vsock routes of one parent: its ports, and its enclaves by CID.
#[derive(Debug)]
pub struct Router {
    inner: Mutex<Inner>,
    uds_dir: Option<PathBuf>,
}

/// A port of the parent listened on in this process. Dropping it closes the port.
#[derive(Debug)]
pub struct PortListener {
    port: u32,
    connections: Receiver<UnixStream>,
    router: Weak<Router>,
}

impl PortListener {
    /// The next connection from an enclave, waiting at most `timeout`.
    pub fn accept(&self, timeout: Duration) -> Option<UnixStream> {
        self.connections.recv_timeout(timeout).ok()
    }

    /// The port.
    pub fn port(&self) -> u32 {
        self.port
    }
}

impl Drop for PortListener {
    fn drop(&mut self) {
        if let Some(router) = self.router.upgrade() {
            router.lock().listeners.remove(&self.port);
        }
    }
}

/// The router as the enclaves' muxes see it: without keeping it alive.
struct Ports(Weak<Router>);

impl HostPorts for Ports {
    fn open(&self, key: ConnKey, guest_cid: u64) -> Option<UnixStream> {
        if key.host_cid != PARENT_CID {
            return None;
        }
        let router = self.0.upgrade()?;
        let parent_vm = router.lock().parent_vm.clone();
        match parent_vm {
            Some(parent_vm) => bridge(&parent_vm, guest_cid, key),
            None => router.open_parent_port(key.host_port),
        }
    }
}

/// The router as the parent VM's mux sees it: the enclaves at their CIDs, and the
/// consoles of debug enclaves at CID 0.
struct ParentVmPorts(Weak<Router>);

impl HostPorts for ParentVmPorts {
    fn open(&self, key: ConnKey, guest_cid: u64) -> Option<UnixStream> {
        let router = self.0.upgrade()?;
        if key.host_cid == HYPERVISOR_CID {
            let source = {
                let inner = router.lock();
                let cid = inner
                    .consoles
                    .keys()
                    .find(|&&cid| console_port(cid) == u64::from(key.host_port))
                    .copied()?;
                inner.consoles.get(&cid).cloned()?
            };
            return source();
        }
        let enclave = router.lock().enclaves.get(&key.host_cid).cloned()?;
        bridge(&enclave, guest_cid, key)
    }
}

/// Passes a connection that the VM at `from_cid` asked for (`key`, as its mux names it)
/// on to `to`, the VM it is for; the stream to give the asking mux once `to` accepted.
fn bridge(to: &Mux, from_cid: u64, key: ConnKey) -> Option<UnixStream> {
    let (ours, theirs) = UnixStream::pair().ok()?;
    let answer = to
        .connect_from(
            from_cid,
            Some(key.guest_port),
            key.host_port,
            theirs,
            |_| Vec::new(),
        )
        .ok()?;
    match answer.recv_timeout(CONNECT_TIMEOUT) {
        Ok(Ok(_)) => Some(ours),
        _ => None,
    }
}

impl Router {
    /// A router whose Unix sockets (if any) live in `uds_dir`.
    pub fn new(uds_dir: Option<PathBuf>) -> Arc<Router> {
        Arc::new(Router {
            inner: Mutex::new(Inner::default()),
            uds_dir,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory of the hybrid Unix sockets.
    pub fn uds_dir(&self) -> Option<&Path> {
        self.uds_dir.as_deref()
    }

    /// Listens on `port` of the parent (CID 3) in this process.
    pub fn listen(self: &Arc<Self>, port: u32) -> Result<PortListener, RouteError> {
        let mut inner = self.lock();
        if inner.listeners.contains_key(&port) {
            return Err(RouteError::PortTaken(port));
        }
        let (sender, connections) = channel();
        inner.listeners.insert(port, sender);
        Ok(PortListener {
            port,
            connections,
            router: Arc::downgrade(self),
        })
    }

    /// Makes a VM the parent (CID 3): from now on enclaves' connections to CID 3 go to it
    /// (not to this process's listeners or Unix sockets), and it reaches the enclaves at
    /// their CIDs and debug consoles at CID 0. Returns its connections, for its vsock
    /// device; a parent VM attached before is closed.
    pub fn attach_parent_vm(self: &Arc<Self>) -> io::Result<Arc<Mux>> {
        let mux = Mux::new(PARENT_CID, Arc::new(ParentVmPorts(Arc::downgrade(self))))?;
        if let Some(old) = self.lock().parent_vm.replace(Arc::clone(&mux)) {
            old.close();
        }
        Ok(mux)
    }

    /// The parent VM of `mux` went away: CID 3 is this process again.
    pub fn detach_parent_vm(&self, mux: &Arc<Mux>) {
        let mut inner = self.lock();
        if inner
            .parent_vm
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, mux))
        {
            inner.parent_vm = None;
        }
    }

    /// Serves the console of the debug enclave at `cid` at CID 0, port `cid + 10000`, to
    /// the parent VM, until the enclave is removed.
    pub fn add_console(&self, cid: u64, source: ConsoleSource) {
        self.lock().consoles.insert(cid, source);
    }

    /// A stream for a new connection from an enclave to `port` of the parent.
    fn open_parent_port(&self, port: u32) -> Option<UnixStream> {
        let listener = self.lock().listeners.get(&port).cloned();
        if let Some(listener) = listener {
            let (ours, theirs) = UnixStream::pair().ok()?;
            return listener.send(theirs).ok().map(|()| ours);
        }
        let path = self.uds_dir.as_ref()?.join(format!("{port}.sock"));
        UnixStream::connect(path).ok()
    }

    /// Adds the enclave at `cid`: its connections, and (with a socket directory) its
    /// `CONNECT` socket.
    pub fn add_enclave(self: &Arc<Self>, cid: u64) -> Result<Arc<Mux>, RouteError> {
        let mut inner = self.lock();
        if inner.enclaves.contains_key(&cid) {
            return Err(RouteError::CidTaken(cid));
        }
        let mux = Mux::new(cid, Arc::new(Ports(Arc::downgrade(self))))?;
        if let Some(dir) = &self.uds_dir {
            std::fs::create_dir_all(dir)?;
            serve_connect_socket(&dir.join(format!("enclave-{cid}.sock")), &mux)?;
        }
        inner.enclaves.insert(cid, Arc::clone(&mux));
        Ok(mux)
    }

    /// Removes the enclave at `cid` if its connections are `mux` (a new enclave may have
    /// taken the CID since): every connection is torn down.
    pub fn remove_enclave(&self, cid: u64, mux: &Arc<Mux>) {
        mux.close();
        let mut inner = self.lock();
        if inner
            .enclaves
            .get(&cid)
            .is_some_and(|m| Arc::ptr_eq(m, mux))
        {
            inner.enclaves.remove(&cid);
            inner.consoles.remove(&cid);
            if let Some(dir) = &self.uds_dir {
                let path = dir.join(format!("enclave-{cid}.sock"));
                // Wakes its listener, which finds the enclave closed and ends.
                let _ = UnixStream::connect(&path);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Connects this process to `port` of the enclave at `cid`.
    pub fn connect(
        &self,
        cid: u64,
        port: u32,
        timeout: Duration,
    ) -> Result<UnixStream, RouteError> {
        let mux = self
            .lock()
            .enclaves
            .get(&cid)
            .cloned()
            .ok_or(RouteError::NoSuchEnclave(cid))?;
        let (ours, theirs) = UnixStream::pair()?;
        let answer = mux.connect(port, theirs, |_| Vec::new())?;
        let refused = |source| RouteError::Refused { cid, port, source };
        match answer.recv_timeout(timeout) {
            Ok(Ok(_)) => Ok(ours),
            Ok(Err(e)) => Err(refused(e)),
            Err(_) => Err(refused(io::Error::from(io::ErrorKind::TimedOut))),
        }
    }
}

/// Serves `CONNECT <port>\n` on `path` for the enclave of `mux`, until the enclave goes.
fn serve_connect_socket(path: &Path, mux: &Arc<Mux>) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let mux = Arc::downgrade(mux);
    thread::Builder::new()
        .name("ne-vsock-connect".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                let Some(mux) = mux.upgrade() else { return };
                if mux.is_closed() {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let _ = thread::Builder::new()
                    .name("ne-vsock-connect".to_owned())
                    .spawn(move || handle_connect(&mux, stream));
            }
        })?;
    Ok(())
}

/// One `CONNECT <port>\n` client.
fn handle_connect(mux: &Mux, stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(CONNECT_LINE_TIMEOUT));
    let mut line = String::new();
    let read = stream
        .try_clone()
        .and_then(|s| BufReader::new(s.take(MAX_CONNECT_LINE)).read_line(&mut line));
    let port = read
        .ok()
        .and_then(|_| line.trim_end().strip_prefix("CONNECT "))
        .and_then(|port| port.trim().parse::<u32>().ok());
    let Some(port) = port else {
        let mut stream = stream;
        let _ = stream.write_all(b"ERROR expected CONNECT <port>\n");
        return;
    };
    let _ = stream.set_read_timeout(None);
    let Ok(answer) = stream.try_clone().and_then(|host| {
        mux.connect(port, host, |host_port| {
            format!("OK {host_port}\n").into_bytes()
        })
    }) else {
        return;
    };
    // On refusal the stream is simply closed, as Firecracker does.
    let _ = answer.recv_timeout(CONNECT_TIMEOUT);
    drop(stream);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::packet::{Header, Op, Packet, TYPE_STREAM};

    fn request(cid: u64, guest_port: u32, host_port: u32) -> Header {
        Header {
            src_cid: cid,
            dst_cid: PARENT_CID,
            src_port: guest_port,
            dst_port: host_port,
            type_: TYPE_STREAM,
            op: Op::Request.value(),
            buf_alloc: 65_536,
            ..Header::default()
        }
    }

    fn next(mux: &Mux) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(packet) = mux.next_packet(4096) {
                return packet;
            }
            assert!(Instant::now() < deadline, "no packet");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn test_an_enclave_reaches_a_unix_socket_named_after_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("7000.sock")).unwrap();
        let router = Router::new(Some(dir.path().to_owned()));
        let mux = router.add_enclave(16).unwrap();
        mux.guest_packet(&request(16, 55, 7000), &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Response));
        let (_app, _) = listener.accept().unwrap();
    }

    #[test]
    fn test_an_in_process_listener_gets_the_enclaves_connection_and_takes_the_port() {
        let router = Router::new(None);
        let listener = router.listen(9000).unwrap();
        assert!(matches!(
            router.listen(9000),
            Err(RouteError::PortTaken(9000))
        ));
        let mux = router.add_enclave(17).unwrap();
        mux.guest_packet(&request(17, 56, 9000), &[]);
        assert_eq!(next(&mux).header.op(), Some(Op::Response));
        assert!(listener.accept(Duration::from_secs(5)).is_some());
        drop(listener);
        router.listen(9000).unwrap();
    }

    #[test]
    fn test_removing_an_enclave_keeps_a_newer_one_with_the_same_cid() {
        let router = Router::new(None);
        let old = router.add_enclave(18).unwrap();
        router.remove_enclave(18, &old);
        let new = router.add_enclave(18).unwrap();
        router.remove_enclave(18, &old);
        assert!(!new.is_closed());
        assert!(matches!(
            router.add_enclave(18),
            Err(RouteError::CidTaken(18))
        ));
    }

    #[test]
    fn test_connect_line_other_than_connect_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(Some(dir.path().to_owned()));
        let _mux = router.add_enclave(19).unwrap();
        let mut stream = UnixStream::connect(dir.path().join("enclave-19.sock")).unwrap();
        stream.write_all(b"HELLO\n").unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        assert!(answer.starts_with("ERROR"), "{answer}");
    }

    /// A packet from the VM at `src` to `dst`, with `op` and `data`.
    fn from_vm(src: (u64, u32), dst: (u64, u32), op: Op, data: &[u8]) -> Header {
        Header {
            src_cid: src.0,
            dst_cid: dst.0,
            src_port: src.1,
            dst_port: dst.1,
            len: u32::try_from(data.len()).unwrap(),
            type_: TYPE_STREAM,
            op: op.value(),
            buf_alloc: 65_536,
            ..Header::default()
        }
    }

    #[test]
    fn test_with_a_parent_vm_an_enclave_s_cid_3_is_that_vm_and_data_crosses_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let _not_used = UnixListener::bind(dir.path().join("9000.sock")).unwrap();
        let router = Router::new(Some(dir.path().to_owned()));
        let enclave = router.add_enclave(16).unwrap();
        let parent = router.attach_parent_vm().unwrap();
        let enclave_side = (16, 55);
        let parent_side = (PARENT_CID, 9000);
        enclave.guest_packet(&from_vm(enclave_side, parent_side, Op::Request, &[]), &[]);
        let request = next(&parent).header;
        assert_eq!(request.op(), Some(Op::Request));
        assert_eq!(
            (request.src_cid, request.src_port),
            (16, 55),
            "the enclave's address"
        );
        assert_eq!(request.dst_port, 9000);
        parent.guest_packet(&from_vm(parent_side, enclave_side, Op::Response, &[]), &[]);
        assert_eq!(next(&enclave).header.op(), Some(Op::Response));
        enclave.guest_packet(&from_vm(enclave_side, parent_side, Op::Rw, b"hb"), b"hb");
        let data = next(&parent);
        assert_eq!(
            (data.header.op(), data.data.as_slice()),
            (Some(Op::Rw), &b"hb"[..])
        );
        parent.guest_packet(&from_vm(parent_side, enclave_side, Op::Rw, b"ok"), b"ok");
        let reply = loop {
            let packet = next(&enclave);
            if packet.header.op() == Some(Op::Rw) {
                break packet;
            }
        };
        assert_eq!(reply.data, b"ok");
    }

    #[test]
    fn test_a_parent_vm_reaches_an_enclave_at_its_cid_and_a_debug_console_at_cid_0() {
        let router = Router::new(None);
        let enclave = router.add_enclave(17).unwrap();
        let parent = router.attach_parent_vm().unwrap();
        let (console, mut printer) = UnixStream::pair().unwrap();
        let console = std::sync::Mutex::new(Some(console));
        router.add_console(17, Arc::new(move || console.lock().unwrap().take()));
        let parent_side = (PARENT_CID, 1234);
        parent.guest_packet(&from_vm(parent_side, (17, 5005), Op::Request, &[]), &[]);
        let request = next(&enclave).header;
        assert_eq!(
            (request.op(), request.src_cid),
            (Some(Op::Request), PARENT_CID)
        );
        assert_eq!((request.src_port, request.dst_port), (1234, 5005));
        let console_side = (HYPERVISOR_CID, 10_017);
        parent.guest_packet(
            &from_vm((PARENT_CID, 1235), console_side, Op::Request, &[]),
            &[],
        );
        assert_eq!(
            next(&parent).header.op(),
            Some(Op::Response),
            "the console answers"
        );
        printer.write_all(b"Linux version").unwrap();
        let output = loop {
            let packet = next(&parent);
            if packet.header.op() == Some(Op::Rw) {
                break packet;
            }
        };
        assert_eq!(output.data, b"Linux version");
        parent.guest_packet(
            &from_vm(
                (PARENT_CID, 1236),
                (HYPERVISOR_CID, 10_099),
                Op::Request,
                &[],
            ),
            &[],
        );
        assert_eq!(
            next(&parent).header.op(),
            Some(Op::Rst),
            "no console for CID 89"
        );
        router.detach_parent_vm(&parent);
        enclave.guest_packet(
            &from_vm((17, 56), (PARENT_CID, 9000), Op::Request, &[]),
            &[],
        );
        assert_eq!(
            next(&enclave).header.op(),
            Some(Op::Rst),
            "without the parent VM, nobody listens on 9000 here"
        );
    }
}
