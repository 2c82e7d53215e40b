// SPDX-License-Identifier: Apache-2.0
//! Failures as the user sees them: a stable code (nitro-cli's `Exx` where one exists),
//! what went wrong, and what to do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable error code. Where nitro-cli has an equivalent, the code is nitro-cli's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Code {
    /// E03: an argument is not valid.
    InvalidArgument,
    /// E19: a file could not be read or written.
    FileOperation,
    /// E20: the same CPU is listed more than once.
    InvalidCpuConfiguration,
    /// E21: a CPU asked for is not in the CPU pool.
    NoSuchCpuInPool,
    /// E22: the pool has fewer free CPUs than asked for.
    InsufficientCpus,
    /// E26: less memory asked for than the image needs.
    InsufficientMemoryRequested,
    /// E27: less hugepage memory free than asked for.
    InsufficientMemoryAvailable,
    /// E28: the enclave could not be created (`NE_CREATE_VM`).
    CreateVm,
    /// E29: another driver call failed.
    Ioctl,
    /// E30: `NE_GET_IMAGE_LOAD_INFO` failed.
    ImageLoadInfo,
    /// E31: `NE_SET_USER_MEMORY_REGION` failed.
    SetMemoryRegion,
    /// E32: `NE_ADD_VCPU` failed.
    AddVcpu,
    /// E33: `NE_START_ENCLAVE` failed.
    StartEnclave,
    /// E35: the file is not a valid EIF.
    EifParsing,
    /// E36: the hypervisor refused to boot the image.
    EnclaveBoot,
    /// E39: the emulated parent could not be reached or started.
    ParentConnection,
    /// E40: no enclave has the ID or name given.
    NoSuchEnclave,
    /// E44: the enclave's console cannot be reached (a production enclave has none).
    ConsoleConnection,
    /// E48: the EIF could not be built.
    EifBuilding,
    /// E58: the enclave name cannot be used.
    EnclaveNaming,
    /// E60: the EIF could not be signed.
    EifSigning,
    /// E61: an attestation document did not verify, or the local root CA is unusable.
    Attestation,
}

impl Code {
    /// Every code, for `nectl explain`.
    pub const ALL: [Code; 22] = [
        Code::InvalidArgument,
        Code::FileOperation,
        Code::InvalidCpuConfiguration,
        Code::NoSuchCpuInPool,
        Code::InsufficientCpus,
        Code::InsufficientMemoryRequested,
        Code::InsufficientMemoryAvailable,
        Code::CreateVm,
        Code::Ioctl,
        Code::ImageLoadInfo,
        Code::SetMemoryRegion,
        Code::AddVcpu,
        Code::StartEnclave,
        Code::EifParsing,
        Code::EnclaveBoot,
        Code::ParentConnection,
        Code::NoSuchEnclave,
        Code::ConsoleConnection,
        Code::EifBuilding,
        Code::EnclaveNaming,
        Code::EifSigning,
        Code::Attestation,
    ];

    /// The code as printed, e.g. `E26` (the same as nitro-cli's).
    pub fn id(self) -> &'static str {
        match self {
            Code::InvalidArgument => "E03",
            Code::FileOperation => "E19",
            Code::InvalidCpuConfiguration => "E20",
            Code::NoSuchCpuInPool => "E21",
            Code::InsufficientCpus => "E22",
            Code::InsufficientMemoryRequested => "E26",
            Code::InsufficientMemoryAvailable => "E27",
            Code::CreateVm => "E28",
            Code::Ioctl => "E29",
            Code::ImageLoadInfo => "E30",
            Code::SetMemoryRegion => "E31",
            Code::AddVcpu => "E32",
            Code::StartEnclave => "E33",
            Code::EifParsing => "E35",
            Code::EnclaveBoot => "E36",
            Code::ParentConnection => "E39",
            Code::NoSuchEnclave => "E40",
            Code::ConsoleConnection => "E44",
            Code::EifBuilding => "E48",
            Code::EnclaveNaming => "E58",
            Code::EifSigning => "E60",
            Code::Attestation => "E61",
        }
    }

    /// What the code means, for `nectl explain`.
    pub fn explanation(self) -> &'static str {
        match self {
            Code::InvalidArgument => "An argument is not valid: a count of zero, a malformed enclave ID, a CID out of range.",
            Code::FileOperation => "A file could not be read or written: the EIF given, or an output path.",
            Code::InvalidCpuConfiguration => "--cpu-ids lists the same CPU more than once.",
            Code::NoSuchCpuInPool => "A CPU in --cpu-ids is not a free CPU of the NE CPU pool (ne_cpus). Pick CPUs from the pool that no other enclave holds; `nectl parent status` shows the pool.",
            Code::InsufficientCpus => "The CPU pool has fewer free CPUs than asked for. Enclaves take whole cores. Ask for fewer CPUs or terminate an enclave.",
            Code::InsufficientMemoryRequested => "--memory is below what the image needs: 4 times the EIF's size and at least 64 MiB, in whole 2 MiB hugepages.",
            Code::InsufficientMemoryAvailable => "Fewer hugepages are free than --memory asks for. Ask for less or terminate an enclave.",
            Code::CreateVm => "NE_CREATE_VM failed: the device refused a new slot. At most 4 enclaves run at once by default.",
            Code::Ioctl => "A driver call failed; the message carries the errno and the driver's explanation.",
            Code::ImageLoadInfo => "NE_GET_IMAGE_LOAD_INFO failed.",
            Code::SetMemoryRegion => "NE_SET_USER_MEMORY_REGION failed: the message says which check refused the memory.",
            Code::AddVcpu => "NE_ADD_VCPU failed: the message says which check refused the CPU.",
            Code::StartEnclave => "NE_START_ENCLAVE failed: the message carries the errno (an NE_ERR_* code or one from the device).",
            Code::EifParsing => "The file is not a valid Enclave Image Format file: the message says which check failed.",
            Code::EnclaveBoot => "The hypervisor refused to boot the image it found in enclave memory (ENOEXEC): the message says what is wrong with it. Rebuild it with `nectl build-eif` and check it with `nectl describe-eif`.",
            Code::ParentConnection => "The emulated parent (the background process holding the enclaves) could not be reached or started. Its socket and log are named in the message.",
            Code::NoSuchEnclave => "No enclave has the ID or name given. `nectl describe-enclaves` lists them.",
            Code::ConsoleConnection => "The enclave's console cannot be reached. Only enclaves started with --debug-mode have one, served by the hypervisor at CID 0, port 10000 + the enclave's CID.",
            Code::EifBuilding => "The EIF could not be built from the kernel, command line and ramdisks given.",
            Code::EifSigning => "The EIF could not be signed: the private key must be the P-384 EC key (PEM, PKCS#8 or SEC1) of the --signing-certificate (PEM X.509).",
            Code::Attestation => "An attestation document did not verify — its signature, its certificate chain to the root given (or this installation's, `nectl attestation-root`), its fields, or an expected PCR or nonce — or the local root CA could not be read or made (its key must be readable by its owner only).",
            Code::EnclaveNaming => "The --enclave-name cannot be used: it is empty, longer than 128 characters, or holds control characters (newlines, tabs, terminal escapes). A name another enclave has is not an error: the new one gets a suffix (_1, _2, …), as with nitro-cli.",
        }
    }

    /// The code named `id` (case-insensitive).
    pub fn from_id(id: &str) -> Option<Code> {
        Code::ALL
            .into_iter()
            .find(|code| code.id().eq_ignore_ascii_case(id))
    }
}

/// A failure to report: the code, what happened, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliError {
    /// The stable code.
    pub code: Code,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// A failure with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code.id(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        write!(f, "\n  more: nectl explain {}", self.code.id())
    }
}

impl std::error::Error for CliError {}

/// The CLI's result type.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
