// SPDX-License-Identifier: Apache-2.0
//! Where the emulated parent listens: `--socket`, else `$NECTL_SOCKET`, else
//! `$XDG_RUNTIME_DIR/nectl/parent.sock`, else `/tmp/nectl-<uid>/parent.sock`. A lock file
//! beside it (`parent.lock`) makes one parent own the socket. Its log is
//! `parent.log` beside the socket.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The environment variable naming the parent's socket.
pub const SOCKET_ENV: &str = "NECTL_SOCKET";

/// The socket path to use.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("nectl"),
        None => {
            let uid = std::fs::metadata("/proc/self")
                .map(|m| m.uid())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("nectl-{uid}"))
        }
    };
    dir.join("parent.sock")
}

/// The parent's log file for a socket.
pub fn log_path(socket: &Path) -> PathBuf {
    socket.with_file_name("parent.log")
}
