// SPDX-License-Identifier: Apache-2.0
//! `build-eif`, `describe-eif` and `pcr`: local work on image files, no parent needed.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ne_eif::{Eif, EifBuilder, Metadata};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::files::{open_regular, read_eif, read_regular, MAX_EIF_BYTES, MAX_INPUT_BYTES};
use crate::json::{BuiltJson, EifJson, MeasurementsJson, SectionJson};
use crate::oci::{Node, Tree};

/// `sign-eif`: signs the image at `eif_path` with `key` (P-384, PEM) of `certificate`
/// (PEM), as nitro-cli's `sign-eif` does, replacing any signature; writes `output` (the
/// image itself when `None`, replaced whole once the new one is written).
pub fn sign(
    eif_path: &Path,
    certificate: &Path,
    key: &Path,
    output: Option<&Path>,
) -> Result<Value> {
    let bytes = read_eif(eif_path, MAX_EIF_BYTES)?;
    let eif = Eif::parse(&bytes).map_err(|e| not_an_eif(eif_path, &e))?;
    let pem = |path: &Path, what: &str| {
        read_regular(path, MAX_CERTIFICATE_BYTES, Code::FileOperation, what)
    };
    let signed = eif
        .signed(
            &pem(certificate, "a PEM certificate")?,
            &pem(key, "a PEM private key")?,
        )
        .map_err(|e| {
            CliError::new(
                Code::EifSigning,
                format!("cannot sign {}: {e}", eif_path.display()),
            )
            .hint("give the P-384 EC private key (PEM) of the --signing-certificate")
        })?;
    let output = output.unwrap_or(eif_path);
    let partial = output.with_extension("eif.partial");
    std::fs::write(&partial, &signed)
        .and_then(|()| std::fs::rename(&partial, output))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            CliError::new(
                Code::FileOperation,
                format!("cannot write {}: {e}", output.display()),
            )
        })?;
    let measurements = Eif::parse(&signed)
        .map(|eif| eif.measurements())
        .map_err(|e| CliError::new(Code::EifSigning, format!("the signed image: {e}")))?;
    Ok(json!({ "Path": output, "Measurements": MeasurementsJson::from(&measurements) }))
}

/// The largest signing certificate `pcr --signing-certificate` reads.
const MAX_CERTIFICATE_BYTES: u64 = 1 << 20;

/// `pcr --input FILE`: the PCR that measures the file alone, as `{"PCR": …}`.
pub fn pcr_of_file(path: &Path) -> Result<Value> {
    use std::io::Read;
    let (file, size) = open_regular(path)?;
    // No further than the size it had: a file that grows cannot keep this reading.
    let pcr = ne_eif::pcr_of_reader(file.take(size)).map_err(|e| {
        CliError::new(
            Code::FileOperation,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(json!({ "PCR": pcr.to_string() }))
}

/// `pcr --signing-certificate FILE`: PCR8, the measure of a PEM X.509 certificate (of its
/// DER encoding), as an image signed with it reports, as `{"PCR8": …}`.
pub fn pcr8_of_certificate(path: &Path) -> Result<Value> {
    let pem = read_regular(
        path,
        MAX_CERTIFICATE_BYTES,
        Code::FileOperation,
        "a PEM certificate",
    )?;
    let pcr = ne_eif::certificate_pcr(&pem).map_err(|why| {
        CliError::new(
            Code::InvalidArgument,
            format!("{} is {why}", path.display()),
        )
        .hint("give the signing certificate as `-----BEGIN CERTIFICATE-----` PEM")
    })?;
    Ok(json!({ "PCR8": pcr.to_string() }))
}

/// Reads a kernel or ramdisk for `build-eif`.
fn read(path: &Path) -> Result<Vec<u8>> {
    read_regular(
        path,
        MAX_INPUT_BYTES,
        Code::EifBuilding,
        "a kernel or ramdisk",
    )
}

/// What `build-eif` needs.
#[derive(Clone, Debug)]
pub struct BuildArgs {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The ramdisks, bootstrap first.
    pub ramdisks: Vec<PathBuf>,
    /// Where to write the EIF.
    pub output: PathBuf,
    /// The image name for the metadata (default: the output's file stem).
    pub name: Option<String>,
    /// The image version for the metadata.
    pub version: String,
    /// Mark the kernel as arm64.
    pub arm64: bool,
}

/// Builds an EIF and prints its measurements.
pub fn build(args: &BuildArgs) -> Result<Value> {
    let kernel = read(&args.kernel)?;
    let ramdisks = args
        .ramdisks
        .iter()
        .map(|path| read(path))
        .collect::<Result<Vec<_>>>()?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.output.file_stem().map_or_else(
            || "enclave".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let builder = EifBuilder {
        kernel,
        cmdline: args.cmdline.clone(),
        ramdisks,
        metadata: Metadata::new(&name, &args.version, &build_time()),
        flags: if args.arm64 {
            ne_eif::format::FLAG_ARCH_ARM64
        } else {
            0
        },
    };
    let (image, measurements) = builder.build().map_err(|e| {
        CliError::new(Code::EifBuilding, e.to_string())
            .hint("give a kernel and at least one --ramdisk")
    })?;
    std::fs::write(&args.output, image).map_err(|e| {
        CliError::new(
            Code::FileOperation,
            format!("cannot write {}: {e}", args.output.display()),
        )
    })?;
    Ok(json!(BuiltJson {
        measurements: MeasurementsJson::from(&measurements),
    }))
}

/// E35: the file at `path` is not a valid EIF, and why.
pub(crate) fn not_an_eif(path: &Path, error: &ne_eif::EifError) -> CliError {
    CliError::new(
        Code::EifParsing,
        format!("{} is not a valid EIF: {error}", path.display()),
    )
}

/// Validates an EIF and describes it.
pub fn describe(path: &Path) -> Result<Value> {
    let bytes = read_eif(path, MAX_EIF_BYTES)?;
    let eif = Eif::parse(&bytes)
        .map_err(|e| not_an_eif(path, &e).hint("rebuild it with `nectl build-eif`"))?;
    let metadata = eif
        .metadata()
        .ok()
        .flatten()
        .and_then(|m| serde_json::to_value(m).ok());
    let measurements = eif.measurements();
    Ok(json!(EifJson {
        version: eif.header().version,
        measurements: MeasurementsJson::from(&measurements),
        is_signed: eif.is_signed(),
        check_crc: true,
        sign_check: eif
            .signature_check(&measurements.pcr0)
            .map(|check| check.unwrap_or(false)),
        arm_kernel: eif.is_arm64(),
        size: bytes.len() as u64,
        sections: eif
            .sections()
            .iter()
            .map(|s| SectionJson {
                kind: s.kind.name().to_owned(),
                size: s.data.len() as u64,
            })
            .collect(),
        metadata,
    }))
}

/// Now (or `$SOURCE_DATE_EPOCH`, for reproducible images) in RFC 3339, UTC.
pub(crate) fn build_time() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    rfc3339(seconds)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS+00:00` (proleptic Gregorian).
fn rfc3339(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `build-initramfs`: packs the tree under `root` into a newc archive at `output`.
pub fn build_initramfs(root: &Path, output: &Path) -> Result<Value> {
    let tree = read_tree(root)?;
    let count = tree.nodes().len();
    let bytes = tree.to_initramfs("").to_bytes();
    std::fs::write(output, &bytes).map_err(|e| {
        CliError::new(
            Code::FileOperation,
            format!("cannot write {}: {e}", output.display()),
        )
    })?;
    Ok(json!({ "Path": output, "Entries": count, "Size": bytes.len() }))
}

/// Every directory, regular file and symbolic link under `root`.
pub(crate) fn read_tree(root: &Path) -> Result<Tree> {
    let mut tree = Tree::default();
    add_tree(&mut tree, root, root)?;
    Ok(tree)
}

/// Adds every directory, regular file and symbolic link under `dir`.
fn add_tree(tree: &mut Tree, root: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |path: &Path, e: std::io::Error| {
        CliError::new(
            Code::FileOperation,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    let entries = std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(dir, e))?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let metadata = std::fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
        let kind = metadata.file_type();
        let too_large = |_| {
            CliError::new(
                Code::EifBuilding,
                format!("{} holds more than 4 GiB of files", root.display()),
            )
        };
        if kind.is_dir() {
            tree.put(&relative, Node::Dir(metadata.permissions().mode() & 0o7777))
                .map_err(too_large)?;
            add_tree(tree, root, &path)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| unreadable(&path, e))?;
            tree.put(
                &relative,
                Node::Symlink(target.to_string_lossy().into_owned()),
            )
            .map_err(too_large)?;
        } else if kind.is_file() {
            let contents = read_regular(&path, MAX_INPUT_BYTES, Code::EifBuilding, "a file")
                .or_else(|e| {
                    if metadata.len() == 0 {
                        Ok(Vec::new())
                    } else {
                        Err(e)
                    }
                })?;
            tree.put(
                &relative,
                Node::File(metadata.permissions().mode() & 0o7777, contents),
            )
            .map_err(too_large)?;
        } else {
            return Err(CliError::new(
                Code::EifBuilding,
                format!(
                    "{} is neither a file, a directory nor a link",
                    path.display()
                ),
            )
            .hint("device nodes are made by the enclave's init (ne-init mounts /dev)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn test_rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(rfc3339(1_795_700_000), "2026-11-26T13:33:20+00:00");
    }
}
