// SPDX-License-Identifier: Apache-2.0
//! The driver's errors, each with the errno Linux user space would see.

use std::time::Duration;

use ne_abi::{Command, NeError};
use thiserror::Error;

/// The Linux errno values the driver fails with: one table, in `ne-abi`.
pub use ne_abi::errno;

/// Why probing the device failed (`ne_pci_probe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// `NE_VERSION` did not echo version 1 ("Error in pci dev version cmd").
    #[error("The device did not accept interface version 1 (VERSION read {read:#06x})")]
    Version {
        /// What `NE_VERSION` read back.
        read: u16,
    },
    /// `NE_ENABLE` did not read 1 right after it was written ("Error in pci dev enable cmd").
    #[error("The device did not enable (ENABLE read {read:#04x})")]
    Enable {
        /// What `NE_ENABLE` read back.
        read: u8,
    },
}

/// A driver failure. [`Error::errno`] is what the equivalent ioctl would set `errno` to.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    /// The device answered a command with a negative `rc`.
    #[error("The device rejected {command} with errno {}", -rc)]
    Device {
        /// The command.
        command: Command,
        /// The reply's rc (negative).
        rc: i32,
    },
    /// A plain errno, with what was wrong.
    #[error("{context} (errno {errno})")]
    Errno {
        /// The errno (positive).
        errno: i32,
        /// What was wrong, for a person.
        context: String,
    },
    /// One of the driver's own `NE_ERR_*` codes.
    #[error("{0}")]
    Ne(NeError),
    /// Probing the device failed.
    #[error("Probing the NE device failed")]
    Probe(#[from] ProbeError),
    /// The device did not reply in time (`NE_DEFAULT_TIMEOUT_MSECS`).
    #[error("The device did not answer {command} within {timeout:?}")]
    Timeout {
        /// The command.
        command: Command,
        /// How long the driver waited.
        timeout: Duration,
    },
}

impl Error {
    /// The errno user space would see from the equivalent ioctl.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Device { rc, .. } => rc.checked_neg().unwrap_or(errno::EIO),
            Error::Errno { errno, .. } => *errno,
            Error::Ne(error) => i32::try_from(error.code()).unwrap_or(errno::EIO),
            Error::Probe(_) => errno::EIO,
            Error::Timeout { .. } => errno::ETIMEDOUT,
        }
    }

    /// The `NE_ERR_*` code, if this is one.
    pub fn ne_error(&self) -> Option<NeError> {
        match self {
            Error::Ne(error) => Some(*error),
            _ => None,
        }
    }

    pub(crate) fn with_errno(errno: i32, context: impl Into<String>) -> Error {
        Error::Errno {
            errno,
            context: context.into(),
        }
    }
}

impl From<NeError> for Error {
    fn from(error: NeError) -> Self {
        Error::Ne(error)
    }
}

/// The driver's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
