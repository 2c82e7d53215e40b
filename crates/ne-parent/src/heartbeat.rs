// SPDX-License-Identifier: Apache-2.0
//! nitro-cli's heartbeat: before `NE_START_ENCLAVE` the parent listens on vsock port 9000;
//! the enclave's init connects from the enclave, sends `0xB7`, and the parent echoes it.
//! Only then is the enclave up. The wait scales with the image: one minute per started
//! 6 GiB of image, at least one minute (`calculate_necessary_timeout` in nitro-cli).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use ne_driver::EnclaveFd;
use ne_vsock::{PortListener, HEARTBEAT_BYTE, HEARTBEAT_PORT};
use thiserror::Error;

/// How often the heartbeat wait looks whether the enclave stopped.
const STOPPED_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long the heartbeat may take, per started 6 GiB of image.
const WAIT_PER_6_GIB: Duration = Duration::from_secs(60);
const SIX_GIB: u64 = 6 << 30;
/// How long the enclave's side may take to send its byte once connected.
const BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no heartbeat came.
#[derive(Debug, Error)]
pub enum HeartbeatError {
    /// Nothing connected in time.
    #[error("No heartbeat from the enclave within {0:?}")]
    Timeout(Duration),
    /// The enclave connected but sent something else, or nothing.
    #[error("The enclave sent {0:?} instead of the heartbeat byte 0xb7")]
    WrongByte(Option<u8>),
    /// The enclave stopped (powered off, crashed) before its heartbeat.
    #[error("The enclave stopped before it sent its heartbeat")]
    Stopped,
    /// The connection failed.
    #[error("The heartbeat connection failed")]
    Io(#[from] io::Error),
}

/// How long nitro-cli waits for the heartbeat of an image of `eif_bytes`.
pub fn heartbeat_timeout(eif_bytes: u64) -> Duration {
    let blocks = eif_bytes.div_ceil(SIX_GIB).max(1);
    WAIT_PER_6_GIB.saturating_mul(u32::try_from(blocks).unwrap_or(u32::MAX))
}

/// The parent's listener on port 9000, open before the enclave starts.
#[derive(Debug)]
pub enum HeartbeatListener {
    /// On the emulated parent's vsock router.
    Router(PortListener),
    /// On the machine's own vsock (`AF_VSOCK`, CID 3 as the enclave sees it).
    Kernel(vsock::VsockListener),
}

impl HeartbeatListener {
    /// Listens on the machine's vsock; `None` when it has no vsock transport (a parent
    /// without a vsock device cannot hear a heartbeat, and does not wait for one).
    pub fn kernel() -> io::Result<Option<HeartbeatListener>> {
        match vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, HEARTBEAT_PORT) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                Ok(Some(HeartbeatListener::Kernel(listener)))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(code) if code == rustix::io::Errno::AFNOSUPPORT.raw_os_error()
                        || code == rustix::io::Errno::ADDRNOTAVAIL.raw_os_error()
                        || code == rustix::io::Errno::NODEV.raw_os_error()
                ) =>
            {
                tracing::warn!("this parent has no vsock: not waiting for the enclave's heartbeat");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the enclave's heartbeat and echoes it.
    pub fn wait(&self, timeout: Duration) -> Result<(), HeartbeatError> {
        let deadline = Instant::now() + timeout;
        match self {
            HeartbeatListener::Router(listener) => {
                let stream = listener
                    .accept(timeout)
                    .ok_or(HeartbeatError::Timeout(timeout))?;
                echo(stream)
            }
            HeartbeatListener::Kernel(listener) => loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false)?;
                        return echo(stream);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err(HeartbeatError::Timeout(timeout));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(e.into()),
                }
            },
        }
    }
}

impl HeartbeatListener {
    /// Waits up to `timeout` for the heartbeat of `enclave` and echoes it, giving up as
    /// soon as the enclave stops (no heartbeat will come then).
    pub fn wait_while_running<E: EnclaveFd>(
        &self,
        enclave: &E,
        timeout: Duration,
    ) -> Result<(), HeartbeatError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(left.min(STOPPED_CHECK_INTERVAL)) {
                Err(HeartbeatError::Timeout(_)) => {
                    if enclave.wait_event(Duration::ZERO).unwrap_or(false) {
                        return Err(HeartbeatError::Stopped);
                    }
                    if left <= STOPPED_CHECK_INTERVAL {
                        return Err(HeartbeatError::Timeout(timeout));
                    }
                }
                other => return other,
            }
        }
    }
}

/// A stream the heartbeat exchange can use.
trait HeartbeatStream: Read + Write {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()>;
}

impl HeartbeatStream for std::os::unix::net::UnixStream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl HeartbeatStream for vsock::VsockStream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

fn echo(mut stream: impl HeartbeatStream) -> Result<(), HeartbeatError> {
    stream.set_timeout(BYTE_TIMEOUT)?;
    let mut byte = [0u8];
    match stream.read(&mut byte)? {
        1 if byte[0] == HEARTBEAT_BYTE => {}
        1 => return Err(HeartbeatError::WrongByte(Some(byte[0]))),
        _ => return Err(HeartbeatError::WrongByte(None)),
    }
    stream.write_all(&byte)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_timeout_is_a_minute_per_started_6_gib() {
        assert_eq!(heartbeat_timeout(0), Duration::from_secs(60));
        assert_eq!(heartbeat_timeout(20 << 20), Duration::from_secs(60));
        assert_eq!(heartbeat_timeout(SIX_GIB), Duration::from_secs(60));
        assert_eq!(heartbeat_timeout(SIX_GIB + 1), Duration::from_secs(120));
    }

    #[test]
    fn test_the_heartbeat_byte_is_echoed_and_anything_else_refused() {
        let router = ne_vsock::Router::new(None);
        let listener = HeartbeatListener::Router(router.listen(HEARTBEAT_PORT).unwrap());
        let (mut enclave, parent) = std::os::unix::net::UnixStream::pair().unwrap();
        enclave.write_all(&[HEARTBEAT_BYTE]).unwrap();
        echo(parent).unwrap();
        let mut back = [0u8];
        enclave.read_exact(&mut back).unwrap();
        assert_eq!(back, [HEARTBEAT_BYTE]);

        let (mut enclave, parent) = std::os::unix::net::UnixStream::pair().unwrap();
        enclave.write_all(&[0x42]).unwrap();
        assert!(matches!(
            echo(parent),
            Err(HeartbeatError::WrongByte(Some(0x42)))
        ));
        drop(listener);
    }
}
