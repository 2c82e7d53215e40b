// SPDX-License-Identifier: Apache-2.0
//! Which QEMU boots enclaves, what it can do, and the command line of one enclave VM.
//!
//! QEMU is found, in order: `$NE_QEMU` (a `qemu-system-x86_64` to run as is; for arm64
//! enclaves `$NE_QEMU_AARCH64`); the kit that `scripts/provision.sh` unpacks from Debian's
//! archive into `$NE_CACHE/kit/qemu` (QEMU 11.1 from trixie-backports with its own
//! libraries, run through its own dynamic loader, so no root and no chroot); the binary on
//! `PATH`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

/// The architecture of an enclave's kernel, and so of the QEMU that boots it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`bzImage`): `qemu-system-x86_64 -M q35`.
    X86_64,
    /// arm64 (`Image`, the EIF's arm64 flag): `qemu-system-aarch64 -M virt`.
    Aarch64,
}

impl Arch {
    /// The QEMU binary for this architecture.
    pub fn binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The environment variable naming that binary.
    fn env(self) -> &'static str {
        match self {
            Arch::X86_64 => "NE_QEMU",
            Arch::Aarch64 => "NE_QEMU_AARCH64",
        }
    }
}

/// Why no usable QEMU was found.
#[derive(Debug, Error)]
pub enum QemuError {
    /// Nothing was found.
    #[error("No {binary} to boot enclaves with: not ${env}, not in {}, not on PATH; run scripts/provision.sh (QEMU 11.1 from Debian's archive into the cache, no root needed) or install Debian's {package}", .kit.display())]
    NotFound {
        /// The binary looked for.
        binary: &'static str,
        /// The environment variable that would name it.
        env: &'static str,
        /// The Debian package that has it.
        package: &'static str,
        /// Where the kit would be.
        kit: PathBuf,
    },
    /// The binary did not run.
    #[error("{} does not run", .program.display())]
    Run {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--version` printed something else.
    #[error("{} printed no version: {output:?}", .program.display())]
    Version {
        /// The program.
        program: PathBuf,
        /// What it printed.
        output: String,
    },
}

/// How enclave VMs run their vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// KVM where it really works, else TCG. `/dev/kvm` opening is not enough: on hosts
    /// without nested virtualisation (no `vmx`/`svm` CPU flag) it opens, but guests die at
    /// their first instruction QEMU cannot emulate.
    pub fn detect() -> Accel {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hardware = flags
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if hardware && usable {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// The name QEMU's `-accel` takes.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = String;

    fn from_str(name: &str) -> Result<Accel, String> {
        match name {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("unknown accelerator {other:?}: kvm or tcg")),
        }
    }
}

/// A QEMU that can run, and what it supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    /// What to execute: the binary, or the kit's dynamic loader.
    pub program: PathBuf,
    /// Arguments before QEMU's own (the loader's library path and the binary).
    pub prefix: Vec<OsString>,
    /// Environment to set (the kit's module directory).
    pub env: Vec<(OsString, OsString)>,
    /// Firmware directories (`-L`).
    pub data_dirs: Vec<PathBuf>,
    /// The version, e.g. (11, 1).
    pub version: (u32, u32),
}

/// The cache directory: `$NE_CACHE`, else `~/.cache/ne`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("ne")
}

impl Qemu {
    /// Finds the QEMU of x86-64 enclaves as the module documentation says.
    pub fn find() -> Result<Qemu, QemuError> {
        Self::find_for(Arch::X86_64)
    }

    /// Finds the QEMU of `arch`'s enclaves as the module documentation says.
    pub fn find_for(arch: Arch) -> Result<Qemu, QemuError> {
        if let Some(path) = std::env::var_os(arch.env()).filter(|p| !p.is_empty()) {
            return Self::plain(PathBuf::from(path));
        }
        let kit = cache_dir().join("kit").join("qemu");
        if kit.join("usr/bin").join(arch.binary()).is_file() {
            return Self::kit(&kit, arch);
        }
        let on_path = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(arch.binary()))
            .find(|candidate| candidate.is_file());
        match on_path {
            Some(path) => Self::plain(path),
            None => Err(QemuError::NotFound {
                binary: arch.binary(),
                env: arch.env(),
                package: match arch {
                    Arch::X86_64 => "qemu-system-x86",
                    Arch::Aarch64 => "qemu-system-arm",
                },
                kit,
            }),
        }
    }

    /// A QEMU binary run as is.
    pub fn plain(program: PathBuf) -> Result<Qemu, QemuError> {
        let mut qemu = Qemu {
            program,
            prefix: Vec::new(),
            env: Vec::new(),
            data_dirs: Vec::new(),
            version: (0, 0),
        };
        qemu.version = qemu.query_version()?;
        Ok(qemu)
    }

    /// The QEMU of `arch` unpacked from Debian's packages under `root`, run with its own
    /// loader and libraries.
    pub fn kit(root: &Path, arch: Arch) -> Result<Qemu, QemuError> {
        let libs = root.join("usr/lib/x86_64-linux-gnu");
        let mut prefix = vec![
            OsString::from("--library-path"),
            libs.clone().into_os_string(),
        ];
        prefix.push(root.join("usr/bin").join(arch.binary()).into_os_string());
        let mut qemu = Qemu {
            program: root.join("usr/lib64/ld-linux-x86-64.so.2"),
            prefix,
            env: vec![(
                OsString::from("QEMU_MODULE_DIR"),
                libs.join("qemu").into_os_string(),
            )],
            data_dirs: vec![root.join("usr/share/qemu"), root.join("usr/share/seabios")],
            version: (0, 0),
        };
        qemu.version = qemu.query_version()?;
        Ok(qemu)
    }

    /// A command running this QEMU, before any QEMU argument.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        for dir in &self.data_dirs {
            command.arg("-L").arg(dir);
        }
        command
    }

    fn query_version(&self) -> Result<(u32, u32), QemuError> {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix).arg("--version");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| QemuError::Run {
                program: self.program.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        parse_version(&text).ok_or(QemuError::Version {
            program: self.program.clone(),
            output: text,
        })
    }

    /// Whether `memory-backend-file` takes `offset=` (QEMU 8.1 and later), so donated
    /// pages can be the enclave's RAM in place.
    pub fn has_file_offset(&self) -> bool {
        self.version >= (8, 1)
    }

    /// Whether `-run-with exit-with-parent=on` exists (QEMU 9.1 and later).
    pub fn has_exit_with_parent(&self) -> bool {
        self.version >= (9, 1)
    }
}

/// `QEMU emulator version 11.1.3 (…)` → (11, 1).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_version_reads_major_and_minor() {
        let text = "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-2~bpo13+1)\nCopyright";
        assert_eq!(parse_version(text), Some((11, 1)));
        assert_eq!(parse_version("QEMU emulator version 7.2.15"), Some((7, 2)));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn test_offset_and_exit_with_parent_need_recent_qemu() {
        let qemu = |version| Qemu {
            program: PathBuf::new(),
            prefix: Vec::new(),
            env: Vec::new(),
            data_dirs: Vec::new(),
            version,
        };
        assert!(!qemu((7, 2)).has_file_offset());
        assert!(qemu((8, 1)).has_file_offset());
        assert!(!qemu((8, 2)).has_exit_with_parent());
        assert!(qemu((11, 1)).has_exit_with_parent());
    }

    #[test]
    fn test_accel_names_round_trip() {
        for accel in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(accel.name().parse::<Accel>(), Ok(accel));
        }
        "hvf".parse::<Accel>().unwrap_err();
    }
}
