// SPDX-License-Identifier: Apache-2.0
//! Where the parent process listens: `--socket`, else `$NECTL_SOCKET`, else
//! `$XDG_RUNTIME_DIR/nectl/parent.sock`, else `$TMPDIR/nectl-<uid>/parent.sock`. A lock
//! file beside it (`parent.lock`) makes one parent own the socket. Its log is
//! `parent.log` beside the socket, its VMs' files `vms/`, its vsock sockets `vsock/`.
//!
//! A directory this module chooses is private, as ssh-agent and tmux keep theirs: created
//! with mode 0700, and before it is used, checked to be a real directory (not a link)
//! owned by this user with no access for others — otherwise another user could have
//! planted a socket or a log there, and `nectl` refuses it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Code, Result};

/// The environment variable naming the parent's socket.
pub const SOCKET_ENV: &str = "NECTL_SOCKET";

/// The socket path to use; a default one's directory is made private and checked.
pub fn socket_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(absolute(path));
    }
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return Ok(absolute(Path::new(&path)));
    }
    let uid = rustix::process::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("nectl"),
        None => std::env::temp_dir().join(format!("nectl-{uid}")),
    };
    private_dir(&dir, uid)?;
    Ok(dir.join("parent.sock"))
}

/// `path` made absolute against the working directory, so a relative `NECTL_SOCKET`
/// names one socket wherever `nectl` runs from next.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Creates `dir` (mode 0700) if missing, then checks it is a directory, not a symbolic
/// link, owned by `uid`, and closed to group and others.
pub fn private_dir(dir: &Path, uid: u32) -> Result<()> {
    let refuse = |why: String| {
        CliError::new(
            Code::FileOperation,
            format!("refusing the runtime directory {}: {why}", dir.display()),
        )
        .hint("remove it (another user may have made it), or choose --socket / NECTL_SOCKET")
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot create it: {e}"))),
    }
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if metadata.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".to_owned()));
    }
    if !metadata.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    if metadata.uid() != uid {
        return Err(refuse(format!(
            "it belongs to uid {}, not to you ({uid})",
            metadata.uid()
        )));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode is {mode:o}: others may write or read it"
        )));
    }
    Ok(())
}

/// The parent's log file for a socket: `<socket's stem>.log` beside it
/// (`parent.log` for `parent.sock`).
pub fn log_path(socket: &Path) -> PathBuf {
    socket.with_extension("log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_private_dir_is_made_0700_and_accepted() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nectl");
        let uid = rustix::process::getuid().as_raw();
        private_dir(&dir, uid).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn test_a_dir_open_to_others_or_a_link_or_owned_by_another_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let open = parent.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&open, uid)
            .unwrap_err()
            .to_string()
            .contains("mode is 777"));
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(private_dir(&link, uid)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        let mine = parent.path().join("mine");
        private_dir(&mine, uid).unwrap();
        assert!(private_dir(&mine, uid + 1)
            .unwrap_err()
            .to_string()
            .contains("belongs to uid"));
    }

    #[test]
    fn test_the_log_is_named_after_the_socket() {
        assert_eq!(
            log_path(Path::new("/r/parent.sock")),
            Path::new("/r/parent.log")
        );
        assert_eq!(
            log_path(Path::new("/r/other.sock")),
            Path::new("/r/other.log")
        );
    }
}
