// SPDX-License-Identifier: Apache-2.0
//! The request/response protocol of `ne`'s local sockets (the served device's control
//! socket, the parent process's socket): one JSON request line, one JSON response line,
//! then the connection closes.
//!
//! Both sides are bounded: a request or response line longer than its limit is refused,
//! and every read and write has a deadline, so a peer that sends half a line and waits,
//! or never reads, costs one connection for a bounded time and blocks nobody else.
//! [`Server`] serves each connection on its own thread, at most
//! [`Limits::max_connections`] at once; the next ones are answered with a refusal. A
//! handler may keep a connection open after its answer ([`Outcome::Stream`]).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// How much a connection may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest request line, in bytes.
    pub max_request_bytes: u64,
    /// The longest response line, in bytes (for clients).
    pub max_response_bytes: u64,
    /// How long a peer may take to send its request (server) or to answer (client).
    pub timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 64 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            timeout: Duration::from_secs(5),
            max_connections: 32,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// Nothing listens at the path (or it cannot be reached).
    #[error("Cannot connect to {}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sending the request or reading the answer failed (or timed out).
    #[error("The exchange with {} failed", .path.display())]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The answer is not the expected JSON (a different protocol on that socket?).
    #[error("{} answered something that is not this protocol", .path.display())]
    Malformed {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The request cannot be encoded.
    #[error("The request cannot be encoded")]
    Encode(#[source] serde_json::Error),
}

/// Sends `request` to the socket at `path` and reads one response, within `limits`.
/// Waits at most `answer_timeout` for the answer (some requests take long on purpose).
pub fn call<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    request: &Req,
    answer_timeout: Duration,
    limits: &Limits,
) -> Result<Resp, CallError> {
    let stream = UnixStream::connect(path).map_err(|source| CallError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let exchange = |source| CallError::Exchange {
        path: path.to_owned(),
        source,
    };
    let mut line = serde_json::to_vec(request).map_err(CallError::Encode)?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(limits.timeout))
        .map_err(exchange)?;
    stream
        .set_read_timeout(Some(answer_timeout.max(Duration::from_millis(1))))
        .map_err(exchange)?;
    (&stream).write_all(&line).map_err(exchange)?;
    let answer = read_line(&stream, limits.max_response_bytes).map_err(exchange)?;
    serde_json::from_slice(&answer).map_err(|source| CallError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Listens on the Unix socket `path` without stealing it: a socket file with a live
/// listener behind it is refused (`AddrInUse`); one with nobody listening (left by a
/// process that was killed) is stale and replaced; any other file is refused.
pub fn bind_exclusive(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Reads one line of at most `max` bytes (without its newline). A line that does not end
/// within `max` bytes, or a peer that closes before the newline, is an error.
fn read_line(stream: &UnixStream, max: u64) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    BufReader::new(stream.take(max.saturating_add(1))).read_until(b'\n', &mut line)?;
    let read = line.len() as u64;
    if line.pop() != Some(b'\n') {
        let why = if read > max {
            "the line is too long"
        } else {
            "the peer closed before the end of the line"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    Ok(line)
}

/// Serves the protocol on a listening socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    limits: Limits,
}

/// What happens after a handler's answer is written.
pub enum Outcome {
    /// The connection closes; the server goes on.
    Continue,
    /// The connection closes and the server stops.
    Stop,
    /// The connection stays open and is handed over, without timeouts, to this function
    /// (for a stream that follows the answer, such as an enclave's console).
    Stream(Box<dyn FnOnce(UnixStream) + Send>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Continue => "Continue",
            Outcome::Stop => "Stop",
            Outcome::Stream(_) => "Stream",
        })
    }
}

impl Server {
    /// Serves on `listener` within `limits`.
    pub fn new(listener: UnixListener, limits: Limits) -> Self {
        Server { listener, limits }
    }

    /// Serves connections until a handler answers [`Outcome::Stop`]. Each connection runs
    /// on its own thread: `handle` gets the decoded request (or why it could not be read)
    /// and returns the response. `busy` is the response to a connection over the limit.
    pub fn run<Req, Resp, H>(&self, handle: H, busy: Resp)
    where
        Req: DeserializeOwned,
        Resp: Serialize + Send + Sync + 'static,
        H: Fn(Result<Req, String>) -> (Resp, Outcome) + Send + Sync + 'static,
    {
        let handle = Arc::new(handle);
        let busy = Arc::new(busy);
        let active = Arc::new(AtomicUsize::new(0));
        // A stop wakes the accept loop through a socket pair, not by connecting to the
        // listener's path: the client that asked for the stop may already have removed it.
        let (stop_rx, stop_tx) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("cannot serve: no socket pair for the stop signal: {e}");
                return;
            }
        };
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::warn!("cannot serve: {e}");
            return;
        }
        loop {
            match wait_readable(&self.listener, &stop_rx) {
                Ready::Stop => return,
                Ready::Listener => {}
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // Out of fds, most likely: wait for connections to end, do not spin.
                    tracing::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            // Accepted sockets do not inherit the listener's non-blocking mode on Linux;
            // make sure, as the connection's reads rely on their timeouts.
            let _ = stream.set_nonblocking(false);
            if active.fetch_add(1, Ordering::SeqCst) >= self.limits.max_connections {
                active.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(self.limits.timeout));
                let _ = write_response(&stream, busy.as_ref());
                continue;
            }
            let handle = Arc::clone(&handle);
            let active_now = Arc::clone(&active);
            let limits = self.limits;
            let Ok(mut stop_tx) = stop_tx.try_clone() else {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            };
            let spawned = thread::Builder::new()
                .name("ne-jsonl".to_owned())
                .spawn(move || {
                    let stop = serve_connection(&stream, &limits, handle.as_ref());
                    active_now.fetch_sub(1, Ordering::SeqCst);
                    if stop {
                        let _ = stop_tx.write_all(&[1]);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a connection thread: {e}");
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// What woke the accept loop.
enum Ready {
    /// A connection waits (or the wait failed: accept will say).
    Listener,
    /// A handler answered [`Outcome::Stop`].
    Stop,
}

/// Waits until a connection waits on `listener` or a stop arrives on `stop`.
fn wait_readable(listener: &UnixListener, stop: &UnixStream) -> Ready {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() => return Ready::Stop,
            Ok(_) => return Ready::Listener,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::warn!("poll failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Serves one connection; true if the server should stop.
fn serve_connection<Req, Resp, H>(stream: &UnixStream, limits: &Limits, handle: &H) -> bool
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Fn(Result<Req, String>) -> (Resp, Outcome),
{
    let _ = stream.set_read_timeout(Some(limits.timeout));
    let _ = stream.set_write_timeout(Some(limits.timeout));
    let request = read_line(stream, limits.max_request_bytes)
        .map_err(|e| format!("cannot read the request: {e}"))
        .and_then(|line| {
            serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))
        });
    let (response, outcome) = handle(request);
    if let Err(e) = write_response(stream, &response) {
        tracing::debug!("cannot answer: {e}");
        return matches!(outcome, Outcome::Stop);
    }
    match outcome {
        Outcome::Continue => false,
        Outcome::Stop => true,
        Outcome::Stream(follow) => {
            let _ = stream.set_read_timeout(None);
            let _ = stream.set_write_timeout(None);
            if let Ok(stream) = stream.try_clone() {
                follow(stream);
            }
            false
        }
    }
}

fn write_response<Resp: Serialize>(stream: &UnixStream, response: &Resp) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    (&*stream).write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn serve_echo(dir: &Path, limits: Limits) -> PathBuf {
        let path = dir.join("s.sock");
        let server = Server::new(UnixListener::bind(&path).unwrap(), limits);
        thread::spawn(move || {
            server.run(
                |request: Result<String, String>| match request {
                    Ok(text) if text == "stop" => (Ok(text), Outcome::Stop),
                    Ok(text) => (Ok(text), Outcome::Continue),
                    Err(why) => (Err::<String, String>(why), Outcome::Continue),
                },
                Err("busy".to_owned()),
            );
        });
        path
    }

    fn echo(path: &Path, text: &str) -> Result<Result<String, String>, CallError> {
        call(path, &text, Duration::from_secs(5), &Limits::default())
    }

    #[test]
    fn test_a_stop_ends_the_server_even_when_its_socket_path_is_gone() {
        // As when the client that stopped a parent removes its directory at once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let server = Server::new(UnixListener::bind(&path).unwrap(), Limits::default());
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let gone = path.clone();
        thread::spawn(move || {
            server.run(
                move |_: Result<String, String>| {
                    let _ = std::fs::remove_file(&gone);
                    (Ok::<String, String>("stopping".to_owned()), Outcome::Stop)
                },
                Err("busy".to_owned()),
            );
            let _ = ended_tx.send(());
        });
        assert_eq!(echo(&path, "stop").unwrap(), Ok("stopping".to_owned()));
        assert!(
            ended.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the server still accepts after a stop"
        );
    }

    #[test]
    fn test_call_gets_the_handlers_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = serve_echo(dir.path(), Limits::default());
        assert_eq!(echo(&path, "hi").unwrap(), Ok("hi".to_owned()));
    }

    #[test]
    fn test_a_client_that_sends_half_a_line_does_not_block_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = serve_echo(dir.path(), Limits::default());
        let mut stalled = UnixStream::connect(&path).unwrap();
        stalled.write_all(b"\"Sta").unwrap();
        let started = Instant::now();
        assert_eq!(echo(&path, "next").unwrap(), Ok("next".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn test_a_request_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_request_bytes: 16,
            ..Limits::default()
        };
        let path = serve_echo(dir.path(), limits);
        let answer = echo(&path, &"x".repeat(100)).unwrap();
        assert!(answer.unwrap_err().contains("too long"));
    }

    #[test]
    fn test_an_answer_in_another_protocol_is_malformed_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sock");
        let listener = UnixListener::bind(&path).unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"\x01\x00binary\n").unwrap();
        });
        let error = echo(&path, "hi").unwrap_err();
        assert!(matches!(error, CallError::Malformed { .. }), "{error}");
    }

    #[test]
    fn test_a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let holder = thread::spawn(move || listener.accept().map(|(s, _)| s));
        let error = call::<_, String>(&path, &"hi", Duration::from_millis(200), &Limits::default())
            .unwrap_err();
        assert!(matches!(error, CallError::Exchange { .. }), "{error}");
        drop(holder);
    }

    #[test]
    fn test_connections_over_the_cap_get_the_busy_answer() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let path = serve_echo(dir.path(), limits);
        let mut first = UnixStream::connect(&path).unwrap();
        first.write_all(b"\"wait").unwrap();
        // Let the server take the first connection before the second arrives.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let answer = echo(&path, "second").unwrap();
            if answer == Err("busy".to_owned()) {
                break;
            }
            assert!(Instant::now() < deadline, "never busy: {answer:?}");
        }
    }

    #[test]
    fn test_stop_ends_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = serve_echo(dir.path(), Limits::default());
        assert_eq!(echo(&path, "stop").unwrap(), Ok("stop".to_owned()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while echo(&path, "after").is_ok() {
            assert!(Instant::now() < deadline, "still serving");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn test_bind_exclusive_replaces_a_stale_socket_and_refuses_a_live_one_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dead listener leaves its file");
        let live = bind_exclusive(&path).unwrap();
        let error = bind_exclusive(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            bind_exclusive(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
