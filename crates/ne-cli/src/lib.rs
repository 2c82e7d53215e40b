// SPDX-License-Identifier: Apache-2.0
//! `nectl`'s library: the command line, the JSON it prints, its error codes, and the
//! emulated parent as a background process. The `nectl` binary is a thin shell over
//! [`cli::run`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod attestation;
pub mod bench;
pub mod build_enclave;
pub mod cli;
pub mod eif_cmds;
pub mod error;
pub mod files;
pub mod json;
pub mod oci;
pub mod parent;
pub mod paths;
pub mod run_config;
pub mod signals;
pub mod vsock_connect;
