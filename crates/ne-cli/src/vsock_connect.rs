// SPDX-License-Identifier: Apache-2.0
//! Reaching a vsock port of an enclave from the parent's side: through the emulated
//! parent's hybrid-vsock socket `<dir>/enclave-<cid>.sock` (`CONNECT <port>\n`, answered
//! `OK <host port>\n`), or, on a parent with the kernel's driver, over its own vsock.
//! `nectl connect` joins stdin and stdout to such a connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::error::{CliError, Code, Result};

/// How long the enclave may take to accept.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// How this parent reaches its enclaves' vsock ports.
#[derive(Clone, Debug)]
pub enum Route {
    /// The emulated parent's hybrid vsock: the directory of its `enclave-<cid>.sock`.
    Hybrid(PathBuf),
    /// This machine's own vsock (a parent with the kernel's driver).
    Vsock,
}

/// A connection to one port of an enclave: its bytes, buffered past the handshake, and
/// the way to send.
pub struct EnclaveStream {
    /// What the enclave sends.
    pub from_enclave: Box<dyn BufRead + Send>,
    /// Where to write to the enclave.
    pub to_enclave: Box<dyn HalfClose>,
}

impl std::fmt::Debug for EnclaveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveStream").finish_non_exhaustive()
    }
}

/// A stream whose sending side can be closed on its own.
pub trait HalfClose: Write + Send {
    /// Says to the enclave that nothing more comes.
    fn close_write(&mut self) -> io::Result<()>;
}

impl HalfClose for UnixStream {
    fn close_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl HalfClose for vsock::VsockStream {
    fn close_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Route {
    /// Connects to `port` of the enclave at `cid`.
    pub fn open(&self, cid: u64, port: u32) -> Result<EnclaveStream> {
        match self {
            Route::Hybrid(dir) => open_hybrid(dir, cid, port),
            Route::Vsock => open_vsock(cid, port),
        }
    }
}

fn open_hybrid(dir: &Path, cid: u64, port: u32) -> Result<EnclaveStream> {
    let path = dir.join(format!("enclave-{cid}.sock"));
    let stream = UnixStream::connect(&path).map_err(|e| {
        CliError::new(
            Code::ParentConnection,
            format!(
                "cannot reach the vsock of enclave {cid} at {}: {e}",
                path.display()
            ),
        )
        .hint("is an enclave with this CID running on this parent (`nectl describe-enclaves`)?")
    })?;
    let failed = connection_failed(cid, port);
    (&stream)
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(&failed)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(&failed)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(&failed)?);
    let mut answer = String::new();
    reader
        .by_ref()
        .take(64)
        .read_line(&mut answer)
        .map_err(&failed)?;
    if !answer.starts_with("OK ") {
        return Err(CliError::new(
            Code::ParentConnection,
            format!("enclave {cid} refused a connection to port {port}"),
        )
        .hint("is the application in the enclave listening on that port?"));
    }
    stream.set_read_timeout(None).map_err(&failed)?;
    Ok(EnclaveStream {
        from_enclave: Box::new(reader),
        to_enclave: Box::new(stream),
    })
}

fn open_vsock(cid: u64, port: u32) -> Result<EnclaveStream> {
    let failed = |e: io::Error| {
        CliError::new(
            Code::ParentConnection,
            format!("the vsock connection to {cid}:{port} failed: {e}"),
        )
        .hint("is the enclave running, and its application listening on that port?")
    };
    let cid32 = u32::try_from(cid)
        .map_err(|_| CliError::new(Code::InvalidArgument, format!("CID {cid} is too large")))?;
    let stream = vsock::VsockStream::connect_with_cid_port(cid32, port).map_err(failed)?;
    let to_enclave = stream.try_clone().map_err(failed)?;
    Ok(EnclaveStream {
        from_enclave: Box::new(BufReader::new(stream)),
        to_enclave: Box::new(to_enclave),
    })
}

/// The error of a connection to `cid:port` that broke.
pub fn connection_failed(cid: u64, port: u32) -> impl Fn(io::Error) -> CliError {
    move |e| {
        CliError::new(
            Code::ParentConnection,
            format!("the connection to {cid}:{port} failed: {e}"),
        )
    }
}

/// Connects to `port` of the enclave at `cid` and copies stdin to it and it to stdout,
/// until both ends are done.
pub fn connect(route: &Route, cid: u64, port: u32) -> Result<()> {
    let EnclaveStream {
        mut from_enclave,
        mut to_enclave,
    } = route.open(cid, port)?;
    let sending = thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_enclave);
        let _ = to_enclave.close_write();
    });
    let mut stdout = io::stdout();
    let copied = io::copy(&mut from_enclave, &mut stdout).and_then(|_| stdout.flush());
    drop(sending);
    copied.map_err(connection_failed(cid, port))
}
