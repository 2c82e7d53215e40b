// SPDX-License-Identifier: Apache-2.0
//! `nectl connect`: stdin and stdout joined to a vsock port of an enclave, through the
//! emulated parent's hybrid-vsock socket `<dir>/enclave-<cid>.sock` (`CONNECT <port>\n`,
//! answered `OK <host port>\n`), or, on a parent with the kernel's driver, over its vsock.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::error::{CliError, Code, Result};

/// How long the enclave may take to accept.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to `port` of the enclave at `cid` and copies stdin to it and it to stdout,
/// until both ends are done.
pub fn connect(dir: &Path, cid: u64, port: u32) -> Result<()> {
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
    let failed = |e: io::Error| {
        CliError::new(
            Code::ParentConnection,
            format!("the connection to {cid}:{port} failed: {e}"),
        )
    };
    (&stream)
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(failed)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(failed)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(failed)?);
    let mut answer = String::new();
    reader
        .by_ref()
        .take(64)
        .read_line(&mut answer)
        .map_err(failed)?;
    if !answer.starts_with("OK ") {
        return Err(CliError::new(
            Code::ParentConnection,
            format!("enclave {cid} refused a connection to port {port}"),
        )
        .hint("is the application in the enclave listening on that port?"));
    }
    stream.set_read_timeout(None).map_err(failed)?;
    let mut to_enclave = stream.try_clone().map_err(failed)?;
    pipe_stdio(reader, move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_enclave);
        let _ = to_enclave.shutdown(Shutdown::Write);
    })
    .map_err(failed)
}

/// Connects to `port` of the enclave at `cid` over this machine's own vsock (a parent
/// with the kernel's driver), and copies stdin to it and it to stdout.
pub fn connect_vsock(cid: u64, port: u32) -> Result<()> {
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
    let mut to_enclave = stream.try_clone().map_err(failed)?;
    pipe_stdio(stream, move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_enclave);
        let _ = to_enclave.shutdown(Shutdown::Write);
    })
    .map_err(failed)
}

/// Runs `send` (stdin to the enclave) on a thread and copies `from_enclave` to stdout.
fn pipe_stdio(mut from_enclave: impl Read, send: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let sending = thread::spawn(send);
    let mut stdout = io::stdout();
    let copied = io::copy(&mut from_enclave, &mut stdout).and_then(|_| stdout.flush());
    drop(sending);
    copied
}
