// SPDX-License-Identifier: Apache-2.0
//! Probe, remove and `ne_do_request`: the register-level protocol of `ne_pci_dev.c`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ne_abi::cmd::Request;
use ne_abi::{regs, CmdReply, Command, MsixVector};
use zerocopy::FromBytes;

use crate::bar::{Bar, Vectors};
use crate::error::{errno, Error, ProbeError, Result};

/// How often the disable sequence polls `NE_ENABLE` (`msleep_interruptible(10)`).
pub const DISABLE_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The size of the reply every caller reads (`sizeof(struct ne_pci_dev_cmd_reply)`).
const REPLY_SIZE: usize = size_of::<CmdReply>();

/// How the driver times its waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// How long a command waits for its reply (`NE_DEFAULT_TIMEOUT_MSECS`, 120 s).
    pub reply_timeout: Duration,
    /// How long the disable sequence polls `NE_ENABLE` before giving up (also 120 s).
    pub disable_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        let linux = Duration::from_millis(ne_abi::uapi::DEFAULT_TIMEOUT_MSECS);
        DriverConfig {
            reply_timeout: linux,
            disable_timeout: linux,
        }
    }
}

/// BAR 3 and the vectors of one device: the part `pci_dev_mutex` guards.
pub(crate) struct Transport<B: Bar> {
    bar: B,
    vectors: Arc<Vectors>,
    config: DriverConfig,
}

impl<B: Bar> Transport<B> {
    pub(crate) fn new(bar: B, vectors: Arc<Vectors>, config: DriverConfig) -> Self {
        Transport {
            bar,
            vectors,
            config,
        }
    }

    /// `ne_pci_dev_disable` then `ne_pci_dev_enable`, as probe runs them.
    pub(crate) fn probe(&self) -> Result<(), ProbeError> {
        self.disable();
        self.bar
            .write(regs::VERSION, &regs::VERSION_MAX.to_le_bytes());
        let version = self.read_u16(regs::VERSION);
        if version != regs::VERSION_MAX {
            return Err(ProbeError::Version { read: version });
        }
        self.bar.write(regs::ENABLE, &[regs::ENABLE_ON]);
        let enable = self.read_u8(regs::ENABLE);
        if enable != regs::ENABLE_ON {
            return Err(ProbeError::Enable { read: enable });
        }
        Ok(())
    }

    /// `ne_pci_dev_disable`: writes 0 to `NE_ENABLE` and polls until it reads 0 or the
    /// disable timeout passes. Returns whether it read 0 (Linux only logs a failure).
    pub(crate) fn disable(&self) -> bool {
        self.bar.write(regs::ENABLE, &[regs::ENABLE_OFF]);
        let deadline = Instant::now() + self.config.disable_timeout;
        loop {
            if self.read_u8(regs::ENABLE) == regs::ENABLE_OFF {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(DISABLE_POLL_INTERVAL);
        }
    }

    /// `ne_do_request` for a typed request.
    pub(crate) fn request<R: Request>(&self, req: &R) -> Result<CmdReply> {
        self.request_raw(R::COMMAND.number(), req.as_bytes())
    }

    /// `ne_do_request` with Linux's argument checks: the command must be 1 to 11 and the
    /// request must fit its 240-byte window; a failed check touches no register. The reply
    /// read is always the 72-byte `CmdReply` (Linux's callers all ask for that).
    ///
    /// Then: payload into `NE_SEND_DATA`, the doorbell, and a wait for the reply. The reply
    /// is recognised by `NE_EVTCNT`'s reply counter moving past its value before the
    /// doorbell, so a stray or late vector 0 is never taken for it (Linux cannot tell).
    pub(crate) fn request_raw(&self, command: u32, req: &[u8]) -> Result<CmdReply> {
        let command = Command::try_from(command)
            .map_err(|unknown| Error::with_errno(errno::EINVAL, unknown.to_string()))?;
        if req.len() > regs::SEND_DATA_SIZE {
            return Err(Error::with_errno(
                errno::EINVAL,
                format!("{command} request does not fit 240 bytes"),
            ));
        }
        let replies_before = regs::evtcnt_reply(self.read_u32(regs::EVTCNT));
        let mut seen = self.vectors.counts().reply;
        self.memcpy_toio(regs::SEND_DATA, req);
        self.bar
            .write(regs::COMMAND, &command.number().to_le_bytes());
        let deadline = Instant::now() + self.config.reply_timeout;
        while regs::evtcnt_reply(self.read_u32(regs::EVTCNT)) == replies_before {
            let counts = self
                .vectors
                .wait_beyond(MsixVector::Reply, seen, Some(deadline));
            if counts.reply == seen {
                // No vector before the deadline (or the driver is going away): one last
                // look at the counter, then give up.
                if regs::evtcnt_reply(self.read_u32(regs::EVTCNT)) != replies_before {
                    break;
                }
                return Err(Error::Timeout {
                    command,
                    timeout: self.config.reply_timeout,
                });
            }
            seen = counts.reply;
        }
        let mut bytes = [0u8; REPLY_SIZE];
        self.memcpy_fromio(regs::RECV_DATA, &mut bytes);
        let reply = CmdReply::read_from_bytes(&bytes).unwrap_or_default();
        let rc = reply.rc.get();
        if rc < 0 {
            return Err(Error::Device { command, rc });
        }
        Ok(reply)
    }

    /// `memcpy_toio` on x86 ([`regs::io_chunks`]).
    fn memcpy_toio(&self, offset: u64, bytes: &[u8]) {
        for chunk in regs::io_chunks(bytes.len()) {
            if let Some(part) = bytes.get(chunk.clone()) {
                self.bar.write(offset + chunk.start as u64, part);
            }
        }
    }

    /// `memcpy_fromio` on x86 ([`regs::io_chunks`]).
    fn memcpy_fromio(&self, offset: u64, bytes: &mut [u8]) {
        for chunk in regs::io_chunks(bytes.len()) {
            if let Some(part) = bytes.get_mut(chunk.clone()) {
                self.bar.read(offset + chunk.start as u64, part);
            }
        }
    }

    fn read_u8(&self, offset: u64) -> u8 {
        let mut byte = [0];
        self.bar.read(offset, &mut byte);
        byte[0]
    }

    fn read_u16(&self, offset: u64) -> u16 {
        let mut bytes = [0; 2];
        self.bar.read(offset, &mut bytes);
        u16::from_le_bytes(bytes)
    }

    fn read_u32(&self, offset: u64) -> u32 {
        let mut bytes = [0; 4];
        self.bar.read(offset, &mut bytes);
        u32::from_le_bytes(bytes)
    }
}
