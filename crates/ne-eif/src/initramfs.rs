// SPDX-License-Identifier: Apache-2.0
//! Initramfs archives: the "newc" cpio format the kernel unpacks into its first root
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`), written
//! deterministically — entries sorted by path, every time 0, owner root — so the same
//! files always give the same bytes, and so the same PCRs.

use std::collections::BTreeMap;

/// `S_IFDIR`.
const DIR: u32 = 0o040_000;
/// `S_IFREG`.
const FILE: u32 = 0o100_000;
/// `S_IFLNK`.
const SYMLINK: u32 = 0o120_000;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// An initramfs being assembled: paths (relative, `/`-separated) to directories, files
/// and symbolic links. Parent directories are added as needed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Initramfs {
    entries: BTreeMap<String, (Kind, u32)>,
}

fn clean(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, path: &str) {
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert((Kind::Dir, 0o755));
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let path = clean(path);
        self.add_parents(&path);
        self.entries.insert(path, (Kind::Dir, 0o755));
        self
    }

    /// Adds a file with permission bits `mode` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, mode: u32, contents: Vec<u8>) -> &mut Self {
        let path = clean(path);
        self.add_parents(&path);
        self.entries
            .insert(path, (Kind::File(contents), mode & 0o7777));
        self
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let path = clean(path);
        self.add_parents(&path);
        self.entries
            .insert(path, (Kind::Symlink(target.to_owned()), 0o777));
        self
    }

    /// The archive's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, (kind, mode))) in (1u32..).zip(&self.entries) {
            let (kind_bits, data): (u32, &[u8]) = match kind {
                Kind::Dir => (DIR, &[]),
                Kind::File(bytes) => (FILE, bytes),
                Kind::Symlink(target) => (SYMLINK, target.as_bytes()),
            };
            let nlink = if matches!(kind, Kind::Dir) { 2 } else { 1 };
            entry(&mut out, ino, kind_bits | mode, nlink, path, data);
        }
        entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out
    }
}

/// Appends one newc entry: the 110-byte header, the NUL-terminated name and the data,
/// each padded to 4 bytes.
fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entries_are_newc_with_parents_sorted_and_padded() {
        let mut initramfs = Initramfs::new();
        initramfs.file("bin/hello", 0o755, b"hi".to_vec());
        let bytes = initramfs.to_bytes();
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        let bin = text.find("bin\0").unwrap();
        let hello = text.find("bin/hello\0").unwrap();
        assert!(bin < hello, "the parent directory comes first");
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
        // The file's header: mode 0100755, size 2.
        let header = &text[hello - 110..hello];
        assert_eq!(&header[14..22], "000081ED");
        assert_eq!(&header[54..62], "00000002");
    }

    #[test]
    fn test_the_same_files_give_the_same_bytes_whatever_the_order() {
        let mut a = Initramfs::new();
        a.file("init", 0o755, vec![1]).file("cmd", 0o644, vec![2]);
        let mut b = Initramfs::new();
        b.file("./cmd", 0o644, vec![2])
            .file("/init", 0o755, vec![1]);
        assert_eq!(a.to_bytes(), b.to_bytes());
    }
}
