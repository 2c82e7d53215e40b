// SPDX-License-Identifier: Apache-2.0
//! A container image from an archive, without a daemon: the OCI image layout
//! (`skopeo copy … oci-archive:`, `docker save` since Docker 25) or Docker's older
//! `docker save` layout (`manifest.json`). Layers are applied in order — whiteouts
//! (`.wh.NAME`) delete, opaque markers (`.wh..wh..opq`) empty a directory, hard links copy
//! their target — into a [`Tree`]; the image's config gives the command, environment and
//! working directory. Every blob is checked against its SHA-256 digest; nothing is written
//! to disk, and no entry may leave the root.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The most bytes an archive, and the files of its layers together, may hold.
pub const MAX_IMAGE_BYTES: u64 = 4 << 30;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The archive or a layer is not a readable tar.
    #[error("{what} is not a readable tar archive: {source}")]
    Tar {
        /// Which archive.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The archive is neither layout.
    #[error("neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")]
    UnknownLayout,
    /// A JSON document is missing or malformed.
    #[error("{what}: {why}")]
    Document {
        /// Which document.
        what: String,
        /// Why.
        why: String,
    },
    /// A blob's content does not match its digest.
    #[error("blob {0} does not match its digest")]
    Digest(String),
    /// A layer entry names a path outside the root.
    #[error("layer entry {0:?} leaves the image's root")]
    Escape(String),
    /// A layer uses a compression this reader does not know.
    #[error("{0}")]
    Unsupported(String),
    /// The image is larger than [`MAX_IMAGE_BYTES`].
    #[error("the image holds more than {MAX_IMAGE_BYTES} bytes")]
    TooLarge,
}

/// One node of a root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory and its mode.
    Dir(u32),
    /// A regular file: mode and contents.
    File(u32, Vec<u8>),
    /// A symbolic link and its target.
    Symlink(String),
}

/// A root filesystem: relative `/`-separated paths to nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    bytes: u64,
}

impl Tree {
    /// The nodes, by path.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The tree as an initramfs, every path under `prefix` (none when empty).
    pub fn to_initramfs(&self, prefix: &str) -> ne_eif::Initramfs {
        let mut initramfs = ne_eif::Initramfs::new();
        if !prefix.is_empty() {
            initramfs.dir(prefix);
        }
        for (path, node) in &self.nodes {
            let path = if prefix.is_empty() {
                path.clone()
            } else {
                format!("{prefix}/{path}")
            };
            match node {
                Node::Dir(_) => initramfs.dir(&path),
                Node::File(mode, data) => initramfs.file(&path, *mode, data.clone()),
                Node::Symlink(target) => initramfs.symlink(&path, target),
            };
        }
        initramfs
    }

    /// Removes `path` and everything under it.
    fn remove(&mut self, path: &str) {
        if let Some(Node::File(_, data)) = self.nodes.remove(path) {
            self.bytes = self.bytes.saturating_sub(data.len() as u64);
        }
        self.empty(path);
    }

    /// Removes everything under the directory `path` (the root when empty), keeping it.
    fn empty(&mut self, path: &str) {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        // Everything under `prefix` sorts together, right after it.
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            if let Some(Node::File(_, data)) = self.nodes.remove(&p) {
                self.bytes = self.bytes.saturating_sub(data.len() as u64);
            }
        }
    }

    /// Puts `node` at `path` (relative, `/`-separated): what was there goes (a directory
    /// stays a directory, with its contents, when a directory replaces it).
    pub fn put(&mut self, path: &str, node: Node) -> Result<(), OciError> {
        let keep_contents = matches!(
            (self.nodes.get(path), &node),
            (Some(Node::Dir(_)), Node::Dir(_))
        );
        if !keep_contents {
            self.remove(path);
        }
        if let Node::File(_, data) = &node {
            self.bytes += data.len() as u64;
            if self.bytes > MAX_IMAGE_BYTES {
                return Err(OciError::TooLarge);
            }
        }
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Applies one layer (a tar stream).
    pub fn apply_layer(&mut self, layer: impl Read, what: &str) -> Result<(), OciError> {
        let tar_error = |source| OciError::Tar {
            what: what.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries().map_err(tar_error)? {
            let mut entry = entry.map_err(tar_error)?;
            let Some(path) = entry_path(&entry, what)? else {
                continue;
            };
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                self.empty(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.remove(&hidden);
                continue;
            }
            let mode = entry.header().mode().map_err(tar_error)? & 0o7777;
            let node = match entry.header().entry_type() {
                tar::EntryType::Directory => Node::Dir(mode),
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    Node::File(mode, entry_data(&mut entry, what)?)
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(tar_error)?.unwrap_or_default();
                    Node::Symlink(target.to_string_lossy().into_owned())
                }
                tar::EntryType::Link => {
                    let target = entry.link_name().map_err(tar_error)?.unwrap_or_default();
                    let target = clean(&target.to_string_lossy())?.unwrap_or_default();
                    match self.nodes.get(&target) {
                        Some(Node::File(mode, data)) => Node::File(*mode, data.clone()),
                        _ => {
                            return Err(OciError::Document {
                                what: what.to_owned(),
                                why: format!("hard link {path:?} to {target:?}, which is no file"),
                            })
                        }
                    }
                }
                // Devices and FIFOs: the enclave's /dev is the kernel's devtmpfs.
                _ => continue,
            };
            self.put(&path, node)?;
        }
        Ok(())
    }
}

/// A tar entry's path, cleaned ([`clean`]).
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>, what: &str) -> Result<Option<String>, OciError> {
    let raw = entry.path().map_err(|source| OciError::Tar {
        what: what.to_owned(),
        source,
    })?;
    clean(&raw.to_string_lossy())
}

/// A tar entry's contents, no more than the image may hold.
fn entry_data<R: Read>(entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>, OciError> {
    let mut data = Vec::new();
    entry
        .take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|source| OciError::Tar {
            what: what.to_owned(),
            source,
        })?;
    Ok(data)
}

/// A tar entry's path, relative and `/`-separated; `None` for the root itself.
fn clean(raw: &str) -> Result<Option<String>, OciError> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(OciError::Escape(raw.to_owned())),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// What the image's config says to run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RunConfig {
    /// The entry point.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// The command (the entry point's arguments, or the program itself).
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` pairs.
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// Where the command starts.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

impl RunConfig {
    /// The command line: the entry point, then the command.
    pub fn command(&self) -> Vec<String> {
        let mut argv = self.entrypoint.clone().unwrap_or_default();
        argv.extend(self.cmd.clone().unwrap_or_default());
        argv
    }
}

/// A container image: its root filesystem and what to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// The layers, applied.
    pub root: Tree,
    /// The config's run settings.
    pub config: RunConfig,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: RunConfig,
}

/// The regular files of an archive, by path.
type Files = HashMap<String, Vec<u8>>;

fn document<'a, T: Deserialize<'a>>(files: &'a Files, name: &str) -> Result<T, OciError> {
    let bytes = files.get(name).ok_or_else(|| OciError::Document {
        what: name.to_owned(),
        why: "missing from the archive".to_owned(),
    })?;
    serde_json::from_slice(bytes).map_err(|e| OciError::Document {
        what: name.to_owned(),
        why: e.to_string(),
    })
}

/// The blob a digest names, checked against it.
fn blob<'a>(files: &'a Files, digest: &str) -> Result<&'a [u8], OciError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| OciError::Unsupported(format!("digest {digest:?} is not sha256")))?;
    let bytes = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| OciError::Document {
            what: digest.to_owned(),
            why: "no such blob in the archive".to_owned(),
        })?;
    if hex::encode(Sha256::digest(bytes)) != hex.to_ascii_lowercase() {
        return Err(OciError::Digest(digest.to_owned()));
    }
    Ok(bytes)
}

/// A layer's tar stream, decompressed.
fn layer_stream(bytes: &[u8]) -> Result<Box<dyn Read + '_>, OciError> {
    match bytes {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(bytes))),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Err(OciError::Unsupported(
            "a zstd-compressed layer: export the image with gzip layers".to_owned(),
        )),
        _ => Ok(Box::new(bytes)),
    }
}

/// Reads the image in the archive at `path`.
pub fn read_archive(path: &Path) -> Result<Image, OciError> {
    let tar_error = |source| OciError::Tar {
        what: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(tar_error)?;
    read_image(file, &path.display().to_string())
}

/// Reads the image in the archive `archive` (named `what` in errors).
pub fn read_image(archive: impl Read, what: &str) -> Result<Image, OciError> {
    let files = archive_files(archive, what)?;
    let (config, layers): (&[u8], Vec<&[u8]>) = if files.contains_key("index.json") {
        let manifest = oci_manifest(&files)?;
        let layers = manifest
            .layers
            .iter()
            .map(|layer| blob(&files, &layer.digest))
            .collect::<Result<_, _>>()?;
        (blob(&files, &manifest.config.digest)?, layers)
    } else if files.contains_key("manifest.json") {
        let manifests: Vec<DockerManifest> = document(&files, "manifest.json")?;
        let manifest = manifests.first().ok_or_else(|| OciError::Document {
            what: "manifest.json".to_owned(),
            why: "no image in it".to_owned(),
        })?;
        let file = |name: &String| {
            files
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| OciError::Document {
                    what: name.clone(),
                    why: "missing from the archive".to_owned(),
                })
        };
        let layers = manifest.layers.iter().map(file).collect::<Result<_, _>>()?;
        (file(&manifest.config)?, layers)
    } else {
        return Err(OciError::UnknownLayout);
    };
    let config: ConfigFile = serde_json::from_slice(config).map_err(|e| OciError::Document {
        what: "the image config".to_owned(),
        why: e.to_string(),
    })?;
    let mut root = Tree::default();
    for (index, layer) in layers.into_iter().enumerate() {
        root.apply_layer(layer_stream(layer)?, &format!("layer {}", index + 1))?;
    }
    Ok(Image {
        root,
        config: config.config,
    })
}

/// The OCI layout's image manifest: the index's first, or for a multi-platform index its
/// linux/amd64 one.
fn oci_manifest(files: &Files) -> Result<Manifest, OciError> {
    let index: Index = document(files, "index.json")?;
    let mut descriptors = index.manifests;
    // An index may point at a nested index (a multi-platform image).
    for _ in 0..4 {
        let chosen = descriptors
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .or_else(|| descriptors.first())
            .ok_or_else(|| OciError::Document {
                what: "index.json".to_owned(),
                why: "no manifest in it".to_owned(),
            })?;
        let bytes = blob(files, &chosen.digest)?;
        if chosen.media_type.ends_with("image.index.v1+json")
            || chosen.media_type.ends_with("manifest.list.v2+json")
        {
            descriptors = serde_json::from_slice::<Index>(bytes)
                .map_err(|e| OciError::Document {
                    what: chosen.digest.clone(),
                    why: e.to_string(),
                })?
                .manifests;
            continue;
        }
        return serde_json::from_slice(bytes).map_err(|e| OciError::Document {
            what: chosen.digest.clone(),
            why: e.to_string(),
        });
    }
    Err(OciError::Document {
        what: "index.json".to_owned(),
        why: "indexes nested too deep".to_owned(),
    })
}

/// Every regular file of the outer archive, bounded in total.
fn archive_files(archive: impl Read, what: &str) -> Result<Files, OciError> {
    let tar_error = |source| OciError::Tar {
        what: what.to_owned(),
        source,
    };
    let mut files = Files::new();
    let mut total = 0u64;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let Some(path) = entry_path(&entry, what)? else {
            continue;
        };
        let data = entry_data(&mut entry, what)?;
        total += data.len() as u64;
        if total > MAX_IMAGE_BYTES {
            return Err(OciError::TooLarge);
        }
        files.insert(path, data);
    }
    Ok(files)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar stream of `entries`: (path, kind), where kind is `d` (directory), `f:TEXT`
    /// (file), `l:TARGET` (symlink) or `h:TARGET` (hard link).
    pub(crate) fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o755);
            header.set_mtime(0);
            let (tag, rest) = kind.split_at(1);
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            match tag {
                "d" => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, path, std::io::empty())
                        .unwrap();
                }
                "f" => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(rest.len() as u64);
                    builder
                        .append_data(&mut header, path, rest.as_bytes())
                        .unwrap();
                }
                "l" | "h" => {
                    header.set_entry_type(if tag == "l" {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    header.set_size(0);
                    builder.append_link(&mut header, path, rest).unwrap();
                }
                _ => unreachable!(),
            }
        }
        builder.into_inner().unwrap()
    }

    /// An OCI image layout archive of these layers (gzip-compressed) and this config.
    pub(crate) fn oci_archive(layers: &[Vec<u8>], config: &serde_json::Value) -> Vec<u8> {
        use std::io::Write;
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut add = |bytes: Vec<u8>| {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            blobs.push((digest.clone(), bytes));
            digest
        };
        let layer_digests: Vec<String> = layers
            .iter()
            .map(|layer| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(layer).unwrap();
                add(gz.finish().unwrap())
            })
            .collect();
        let config_digest = add(config.to_string().into_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest },
            "layers": layer_digests.iter().map(|d| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d
            })).collect::<Vec<_>>(),
        });
        let manifest_digest = add(manifest.to_string().into_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest }],
        });
        let mut builder = tar::Builder::new(Vec::new());
        let mut file = |path: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            builder.append_data(&mut header, path, bytes).unwrap();
        };
        file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        file("index.json", index.to_string().as_bytes());
        for (digest, bytes) in &blobs {
            file(&format!("blobs/sha256/{}", &digest[7..]), bytes);
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn test_layers_apply_in_order_with_whiteouts_opaque_dirs_and_hard_links() {
        let base = tar_of(&[
            ("etc", "d"),
            ("etc/keep", "f:base"),
            ("etc/gone", "f:base"),
            ("var/cache/old", "f:old"),
            ("bin/tool", "f:tool"),
        ]);
        let top = tar_of(&[
            ("etc/.wh.gone", "f:"),
            ("var/cache/.wh..wh..opq", "f:"),
            ("var/cache/new", "f:new"),
            ("bin/alias", "h:bin/tool"),
            ("bin/link", "l:tool"),
            ("etc/keep", "f:top"),
        ]);
        let archive = oci_archive(
            &[base, top],
            &serde_json::json!({"config": {"Entrypoint": ["/bin/tool"], "Cmd": ["--x"], "Env": ["A=1"], "WorkingDir": "/etc"}}),
        );
        let image = read_image(archive.as_slice(), "test").unwrap();
        let nodes = image.root.nodes();
        assert_eq!(
            nodes.get("etc/keep"),
            Some(&Node::File(0o755, b"top".to_vec()))
        );
        assert!(!nodes.contains_key("etc/gone"), "the whiteout deleted it");
        assert!(
            !nodes.contains_key("var/cache/old"),
            "the opaque directory hid it"
        );
        assert_eq!(
            nodes.get("var/cache/new"),
            Some(&Node::File(0o755, b"new".to_vec()))
        );
        assert_eq!(
            nodes.get("bin/alias"),
            Some(&Node::File(0o755, b"tool".to_vec()))
        );
        assert_eq!(
            nodes.get("bin/link"),
            Some(&Node::Symlink("tool".to_owned()))
        );
        assert_eq!(image.config.command(), ["/bin/tool", "--x"]);
        assert_eq!(image.config.working_dir.as_deref(), Some("/etc"));
    }

    #[test]
    fn test_a_whiteout_removes_a_whole_directory_and_only_it() {
        // "a-b" sorts between "a" and "a/c": the directory's contents are still found.
        let mut tree = Tree::default();
        let base = tar_of(&[("a/c", "f:1"), ("a-b", "f:2"), ("a/d/e", "f:3")]);
        tree.apply_layer(base.as_slice(), "base").unwrap();
        tree.apply_layer(tar_of(&[(".wh.a", "f:")]).as_slice(), "top")
            .unwrap();
        let paths: Vec<&String> = tree.nodes().keys().collect();
        assert_eq!(paths, ["a-b"]);
    }

    #[test]
    fn test_an_entry_leaving_the_root_is_refused() {
        let layer = tar_of(&[("ok", "d")]);
        let mut tree = Tree::default();
        tree.apply_layer(layer.as_slice(), "layer").unwrap();
        let error = clean("a/../../etc/passwd").unwrap_err();
        assert!(matches!(error, OciError::Escape(_)), "{error}");
    }

    #[test]
    fn test_a_blob_that_does_not_match_its_digest_is_refused() {
        let mut archive = oci_archive(&[tar_of(&[("f", "f:x")])], &serde_json::json!({}));
        // Flip a byte inside the gzip'd layer's data: the digest no longer matches.
        let position = archive.windows(2).position(|w| w == [0x1f, 0x8b]).unwrap() + 20;
        archive[position] ^= 0xff;
        let error = read_image(archive.as_slice(), "test").unwrap_err();
        assert!(matches!(error, OciError::Digest(_)), "{error}");
    }

    #[test]
    fn test_an_archive_of_neither_layout_says_so() {
        let archive = tar_of(&[("hello", "f:x")]);
        let error = read_image(archive.as_slice(), "test").unwrap_err();
        assert!(matches!(error, OciError::UnknownLayout), "{error}");
    }
}
