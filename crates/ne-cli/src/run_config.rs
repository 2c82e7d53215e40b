// SPDX-License-Identifier: Apache-2.0
//! `run-enclave --config FILE`: run-enclave's options as nitro-cli reads them from a JSON
//! file — `eif_path`, `memory_mib`, `cpu_count` or `cpu_ids`, and optionally
//! `enclave_cid`, `debug_mode`, `enclave_name`. A field nitro-cli does not know is refused
//! (it is most likely a misspelling), as is a file over 64 KiB.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CliError, Code, Result};

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// run-enclave's options from a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The EIF (a relative path is taken from the working directory, as nitro-cli does).
    pub eif_path: PathBuf,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// How many vCPUs.
    #[serde(default)]
    pub cpu_count: Option<u32>,
    /// Which vCPUs.
    #[serde(default)]
    pub cpu_ids: Option<Vec<u32>>,
    /// The CID wanted.
    #[serde(default)]
    pub enclave_cid: Option<u64>,
    /// Debug mode.
    #[serde(default)]
    pub debug_mode: Option<bool>,
    /// A name for the enclave.
    #[serde(default)]
    pub enclave_name: Option<String>,
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<RunConfig> {
    let unreadable = |why: String| {
        CliError::new(
            Code::FileOperation,
            format!("cannot read the configuration {}: {why}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| unreadable(e.to_string()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(unreadable(format!(
            "it is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let config: RunConfig = serde_json::from_str(&text).map_err(|e| {
        CliError::new(
            Code::InvalidArgument,
            format!("the configuration {} is not valid: {e}", path.display()),
        )
        .hint("fields: eif_path, memory_mib, cpu_count or cpu_ids, enclave_cid, debug_mode, enclave_name")
    })?;
    if config.cpu_count.is_some() == config.cpu_ids.is_some() {
        return Err(CliError::new(
            Code::InvalidArgument,
            format!(
                "the configuration {} needs exactly one of cpu_count and cpu_ids",
                path.display()
            ),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<RunConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn test_nitro_clis_fields_are_read() {
        let config = load_text(
            r#"{"eif_path": "app.eif", "memory_mib": 512, "cpu_ids": [1, 5],
                "enclave_cid": 20, "debug_mode": true, "enclave_name": "app"}"#,
        )
        .unwrap();
        assert_eq!(config.cpu_ids, Some(vec![1, 5]));
        assert_eq!(config.debug_mode, Some(true));
    }

    #[test]
    fn test_a_misspelt_field_is_named() {
        let error = load_text(r#"{"eif_path": "a", "memory_mb": 512, "cpu_count": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `memory_mb`"), "{error}");
    }

    #[test]
    fn test_exactly_one_cpu_request_is_needed() {
        let both = r#"{"eif_path": "a", "memory_mib": 64, "cpu_count": 2, "cpu_ids": [1]}"#;
        load_text(both).unwrap_err();
        let neither = r#"{"eif_path": "a", "memory_mib": 64}"#;
        load_text(neither).unwrap_err();
    }

    #[test]
    fn test_an_oversized_file_is_refused_unread() {
        let error = load_text(&" ".repeat(100_000)).unwrap_err().to_string();
        assert!(error.contains("larger than 65536 bytes"), "{error}");
    }
}
