// SPDX-License-Identifier: Apache-2.0
//! Reading the files a user names, bounded: only regular files, opened without blocking
//! (a FIFO cannot park a thread), checked for size before a byte is read, and read no
//! further than the size they had.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rustix::fs::{open, Mode, OFlags};

use crate::error::{CliError, Code, Result};

/// The largest EIF `nectl` reads: 4 GiB, far beyond what fits a parent's hugepages.
pub const MAX_EIF_BYTES: u64 = 4 << 30;

/// The largest kernel or ramdisk `build-eif` reads: 4 GiB.
pub const MAX_INPUT_BYTES: u64 = 4 << 30;

/// Reads the EIF at `path` if it is a regular file of 1 to `max` bytes.
pub fn read_eif(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_regular(path, max, Code::EifParsing, "an EIF")
}

/// Opens `path` without blocking if it is a regular file; returns it and its size.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let cannot = |why: String| cannot_read(path, &why);
    let fd = open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| cannot(std::io::Error::from(e).to_string()))?;
    let file = File::from(fd);
    let metadata = file.metadata().map_err(|e| cannot(e.to_string()))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let kind_name = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "something else"
        };
        return Err(cannot(format!("it is {kind_name}, not a regular file")));
    }
    Ok((file, metadata.len()))
}

fn cannot_read(path: &Path, why: &str) -> CliError {
    CliError::new(
        Code::FileOperation,
        format!("cannot read {}: {why}", path.display()),
    )
    .hint("check the path, and that it names a regular file you may read")
}

/// Reads `path` if it is a regular file of 1 to `max` bytes; an empty or oversized file
/// fails with `code`, as what it should have been (`what`).
pub fn read_regular(path: &Path, max: u64, code: Code, what: &str) -> Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    if size == 0 {
        return Err(CliError::new(
            code,
            format!("{} is empty, not {what}", path.display()),
        ));
    }
    if size > max {
        return Err(CliError::new(
            code,
            format!(
                "{} is {size} bytes; {what} here may have at most {max}",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot_read(path, &e.to_string()))?;
    Ok(bytes)
}
