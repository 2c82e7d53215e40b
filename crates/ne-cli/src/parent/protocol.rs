// SPDX-License-Identifier: Apache-2.0
//! What `nectl` and the emulated parent say to each other: one JSON request line, one JSON
//! response line, over a Unix stream socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// Which CPUs to give an enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cpus {
    /// This many from the pool.
    Count(u32),
    /// These.
    Ids(Vec<u32>),
}

/// The bounds of the parent socket: request lines up to 64 KiB, a request read within
/// 5 s, at most 32 requests at once.
pub fn limits() -> ne_jsonl::Limits {
    ne_jsonl::Limits::default()
}

/// Which enclaves to terminate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// By ID.
    Id(String),
    /// By name.
    Name(String),
    /// Every one.
    All,
}

impl Target {
    /// The target in words: `with ID "…"`, `named "…"`, `at all`.
    pub fn describe(&self) -> String {
        match self {
            Target::Id(id) => format!("has the ID {id:?}"),
            Target::Name(name) => format!("is named {name:?}"),
            Target::All => "runs".to_owned(),
        }
    }
}

/// A request to the parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Launch an enclave from the EIF at `eif_path` (absolute).
    Run {
        /// The image.
        eif_path: PathBuf,
        /// Memory in MiB.
        memory_mib: u64,
        /// CPUs.
        cpus: Cpus,
        /// The CID wanted; 0 lets the device pick.
        cid: u64,
        /// Debug mode.
        debug: bool,
        /// The enclave's name; `None`: the EIF's file stem.
        name: Option<String>,
    },
    /// Describe every enclave; with `metadata`, each image's metadata too.
    Describe {
        /// Add `ImageName`, `ImageVersion` and `Metadata`, as nitro-cli's `--metadata`.
        #[serde(default)]
        metadata: bool,
    },
    /// Terminate enclaves.
    Terminate(Target),
    /// Make an enclave crash or exit on its own (as the hypervisor would report it).
    End {
        /// Its ID or name.
        enclave: String,
        /// Crash (true) or a clean exit.
        crash: bool,
    },
    /// Describe the parent.
    Status,
    /// Stream the console of a debug-mode enclave (its ID or name): after the answer
    /// line, the console's bytes follow until the enclave ends.
    Console {
        /// Its ID or name.
        enclave: String,
    },
    /// Terminate every enclave and exit.
    Stop,
}

/// The parent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Success, with the JSON to print.
    Ok(serde_json::Value),
    /// Failure.
    Err(CliError),
}
