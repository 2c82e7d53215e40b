// SPDX-License-Identifier: Apache-2.0
//! `build-enclave`: a runnable EIF from a container's files — a root directory, or an OCI
//! or `docker save` image archive — and a command, with the project's kernel and init. No
//! daemon, no network: the same inputs give the same PCRs.
//!
//! The image has nitro-cli's layout. The first ramdisk (PCR1 with the kernel and command
//! line) is the bootstrap: `/init` (ne-init, static) and the vsock modules it loads. The
//! second (PCR2) is the application: the container's files under `/rootfs`, and `/cmd`,
//! `/env` and `/workdir`, which ne-init reads before it chroots into `/rootfs`.

use std::path::{Path, PathBuf};

use ne_eif::{EifBuilder, Initramfs, Metadata};
use serde_json::{json, Value};

use crate::error::{CliError, Code, Result};
use crate::files::{read_regular, MAX_INPUT_BYTES};
use crate::json::MeasurementsJson;
use crate::oci::{RunConfig, Tree};

/// The kernel modules the bootstrap carries, in load order: vsock and its virtio
/// transport, which the heartbeat needs.
pub const MODULES: [&str; 3] = [
    "vsock.ko",
    "vmw_vsock_virtio_transport_common.ko",
    "vmw_vsock_virtio_transport.ko",
];
/// Modules carried (and loaded after those) when the modules directory has them: the NSM
/// driver, which gives the enclave `/dev/nsm`.
pub const OPTIONAL_MODULES: [&str; 1] = ["nsm.ko"];

/// The kernel command line of the images built here (x86-64: the 8250 UART).
pub const CMDLINE: &str = "console=ttyS0 quiet";
/// The same for an arm64 kernel (QEMU `virt`'s PL011 UART).
pub const CMDLINE_ARM64: &str = "console=ttyAMA0 quiet";

/// Where the application's files come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory that becomes the root.
    Rootfs(PathBuf),
    /// An image archive.
    Archive(PathBuf),
}

/// What `build-enclave` needs.
#[derive(Clone, Debug)]
pub struct BuildEnclave {
    /// The application's files.
    pub source: Source,
    /// The command; empty: the image config's entry point and command.
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs added to the image config's.
    pub env: Vec<String>,
    /// Where to write the EIF.
    pub output: PathBuf,
    /// The kernel (default: the kit's, from `scripts/provision.sh`).
    pub kernel: Option<PathBuf>,
    /// ne-init, statically linked (default: `$NE_INIT`, else beside `nectl`, else the
    /// static release build in `target/`).
    pub init: Option<PathBuf>,
    /// The directory holding [`MODULES`] (default: the kit's).
    pub modules: Option<PathBuf>,
    /// The image's name in its metadata (default: the output's file stem).
    pub name: Option<String>,
    /// Its version.
    pub version: String,
}

fn building(message: String) -> CliError {
    CliError::new(Code::EifBuilding, message)
}

/// Builds the image.
pub fn build(args: &BuildEnclave) -> Result<Value> {
    let kit = ne_vm::cache_dir().join("kit").join("kernel");
    let kernel_path = args.kernel.clone().unwrap_or_else(|| kit.join("vmlinuz"));
    let modules_dir = args.modules.clone().unwrap_or_else(|| kit.join("modules"));
    let kernel = read_regular(&kernel_path, MAX_INPUT_BYTES, Code::EifBuilding, "a kernel")
        .map_err(|e| e.hint("give --kernel, or run scripts/provision.sh for the kit's"))?;
    let init_path = find_init(args.init.as_deref())?;
    let init = read_regular(&init_path, MAX_INPUT_BYTES, Code::EifBuilding, "ne-init")?;
    check_static(&init_path, &init)?;
    let bootstrap = bootstrap(init, &modules_dir)?;
    let (root, config) = match &args.source {
        Source::Rootfs(dir) => (crate::eif_cmds::read_tree(dir)?, RunConfig::default()),
        Source::Archive(path) => {
            let image = crate::oci::read_archive(path)
                .map_err(|e| building(format!("cannot read the image {}: {e}", path.display())))?;
            (image.root, image.config)
        }
    };
    let command = if args.command.is_empty() {
        config.command()
    } else {
        args.command.clone()
    };
    if command.is_empty() {
        return Err(building("the image names no command".to_owned())
            .hint("give the command after --entrypoint, e.g. --entrypoint /app --serve"));
    }
    let mut env = config.env.clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    let application = application(&root, &command, &env, config.working_dir.as_deref())?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.output.file_stem().map_or_else(
            || "enclave".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let arm64 = ne_eif::format::is_arm64_image(&kernel);
    let (eif, measurements) = EifBuilder {
        kernel,
        cmdline: if arm64 { CMDLINE_ARM64 } else { CMDLINE }.to_owned(),
        ramdisks: vec![bootstrap.to_bytes(), application.to_bytes()],
        metadata: Metadata::new(&name, &args.version, &crate::eif_cmds::build_time()),
        flags: if arm64 {
            ne_eif::format::FLAG_ARCH_ARM64
        } else {
            0
        },
    }
    .build()
    .map_err(|e| building(format!("cannot build the image: {e}")))?;
    std::fs::write(&args.output, &eif).map_err(|e| {
        CliError::new(
            Code::FileOperation,
            format!("cannot write {}: {e}", args.output.display()),
        )
    })?;
    Ok(json!({
        "Path": args.output,
        "Size": eif.len(),
        "Command": command,
        "Files": root.nodes().len(),
        "Measurements": MeasurementsJson::from(&measurements),
    }))
}

/// ne-init: the one given, `$NE_INIT`, one beside this `nectl`, or the static release
/// build of this checkout.
fn find_init(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("NE_INIT").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("ne-init"),
        dir.join("../x86_64-unknown-linux-gnu/release/ne-init"),
    ];
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            building("no ne-init to put in the image".to_owned()).hint(
                "build it static: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p ne-init (scripts/build-hello.sh does), or give --init",
            )
        })
}

/// Refuses an init that is not a statically linked ELF: it runs before any library exists.
fn check_static(path: &Path, init: &[u8]) -> Result<()> {
    let refuse = |why: &str| {
        Err(building(format!("{} {why}", path.display())).hint(
            "the enclave's init runs before any library exists: build ne-init with RUSTFLAGS='-C target-feature=+crt-static'",
        ))
    };
    match elf_interpreter(init) {
        None => refuse("is not a 64-bit little-endian ELF executable"),
        Some(true) => refuse("is dynamically linked"),
        Some(false) => Ok(()),
    }
}

/// Whether a 64-bit little-endian ELF asks for a dynamic loader (`PT_INTERP`); `None`
/// when it is no such ELF.
fn elf_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(0x20)?).ok()?;
    let size = usize::from(u16_at(0x36)?);
    let count = usize::from(u16_at(0x38)?);
    for index in 0..count {
        if u32_at(table.checked_add(index.checked_mul(size)?)?)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// The first ramdisk: `/init` and the modules, listed in `/modules` in load order.
fn bootstrap(init: Vec<u8>, modules_dir: &Path) -> Result<Initramfs> {
    let mut bootstrap = Initramfs::new();
    bootstrap.file("init", 0o755, init);
    let optional = OPTIONAL_MODULES
        .into_iter()
        .filter(|module| modules_dir.join(module).is_file());
    let modules: Vec<&str> = MODULES.into_iter().chain(optional).collect();
    for module in &modules {
        let path = modules_dir.join(module);
        let bytes = read_regular(&path, MAX_INPUT_BYTES, Code::EifBuilding, "a kernel module")
            .map_err(|e| e.hint("give --modules DIR, or run scripts/provision.sh for the kit's"))?;
        bootstrap.file(&format!("lib/modules/{module}"), 0o644, bytes);
    }
    bootstrap.file("modules", 0o644, (modules.join("\n") + "\n").into_bytes());
    Ok(bootstrap)
}

/// The second ramdisk: the root under `/rootfs`, and what ne-init runs there.
fn application(
    root: &Tree,
    command: &[String],
    env: &[String],
    workdir: Option<&str>,
) -> Result<Initramfs> {
    let line = |what: &str, value: &String| {
        if value.contains('\n') || value.contains('\0') {
            Err(building(format!(
                "the {what} {value:?} holds a newline or NUL, which /cmd and /env cannot carry"
            )))
        } else {
            Ok(())
        }
    };
    for argument in command {
        line("argument", argument)?;
    }
    for pair in env {
        line("variable", pair)?;
    }
    let mut application = root.to_initramfs("rootfs");
    application.file("cmd", 0o644, (command.join("\n") + "\n").into_bytes());
    application.file(
        "env",
        0o644,
        env.iter()
            .map(|pair| format!("{pair}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    if let Some(dir) = workdir.filter(|dir| !dir.is_empty()) {
        application.file("workdir", 0o644, format!("{dir}\n").into_bytes());
    }
    Ok(application)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(interp: bool) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let kind: u32 = if interp { 3 } else { 1 };
        elf[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
        elf
    }

    /// A kernel, a static init and the modules, as files in `dir`.
    fn parts(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let kernel = dir.join("bzImage");
        std::fs::write(&kernel, vec![0x4b; 4096]).unwrap();
        let init = dir.join("ne-init");
        std::fs::write(&init, elf(false)).unwrap();
        let modules = dir.join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        for module in MODULES {
            std::fs::write(modules.join(module), module.as_bytes()).unwrap();
        }
        (kernel, init, modules)
    }

    #[test]
    fn test_the_nsm_driver_is_carried_and_loaded_last_when_the_modules_have_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, modules) = parts(dir.path());
        let without = bootstrap(elf(false), &modules).unwrap().to_bytes();
        let has = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!has(&without, b"nsm.ko"));
        std::fs::write(modules.join("nsm.ko"), b"nsm").unwrap();
        let with = bootstrap(elf(false), &modules).unwrap().to_bytes();
        assert!(has(&with, b"lib/modules/nsm.ko"));
        assert!(
            has(&with, b"vmw_vsock_virtio_transport.ko\nnsm.ko\n"),
            "/modules"
        );
    }

    #[test]
    fn test_an_oci_archive_becomes_an_image_with_its_command_under_rootfs() {
        use crate::oci::tests::{oci_archive, tar_of};
        let dir = tempfile::tempdir().unwrap();
        let (kernel, init, modules) = parts(dir.path());
        let archive = dir.path().join("app.tar");
        std::fs::write(
            &archive,
            oci_archive(
                &[tar_of(&[("bin/tool", "f:#!tool"), ("etc/conf", "f:x")])],
                &serde_json::json!({"config": {"Entrypoint": ["/bin/tool"], "Cmd": ["--serve"],
                    "Env": ["MODE=enclave"], "WorkingDir": "/etc"}}),
            ),
        )
        .unwrap();
        let output = dir.path().join("app.eif");
        let built = build(&BuildEnclave {
            source: Source::Archive(archive),
            command: Vec::new(),
            env: vec!["EXTRA=1".to_owned()],
            output: output.clone(),
            kernel: Some(kernel),
            init: Some(init),
            modules: Some(modules),
            name: None,
            version: "1.0".to_owned(),
        })
        .unwrap();
        assert_eq!(
            built["Command"],
            serde_json::json!(["/bin/tool", "--serve"])
        );
        let bytes = std::fs::read(&output).unwrap();
        let eif = ne_eif::Eif::parse(&bytes).unwrap();
        let ramdisks: Vec<&[u8]> = eif.ramdisks().collect();
        assert_eq!(ramdisks.len(), 2, "bootstrap and application");
        let contains =
            |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        assert!(contains(ramdisks[0], b"lib/modules/vsock.ko"));
        assert!(contains(ramdisks[1], b"rootfs/bin/tool"));
        assert!(contains(ramdisks[1], b"/bin/tool\n--serve\n"), "/cmd");
        assert!(contains(ramdisks[1], b"MODE=enclave\nEXTRA=1\n"), "/env");
        assert!(contains(ramdisks[1], b"/etc\n"), "/workdir");
    }

    #[test]
    fn test_only_a_static_elf_is_an_init() {
        assert_eq!(elf_interpreter(&elf(false)), Some(false));
        assert_eq!(elf_interpreter(&elf(true)), Some(true));
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(
            elf_interpreter(&elf(false)[..0x30]),
            None,
            "a truncated header"
        );
    }
}
