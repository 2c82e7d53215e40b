// SPDX-License-Identifier: Apache-2.0
//! `nectl`: run and manage Nitro Enclaves with nitro-cli's conventions, on an emulated
//! parent instance that runs anywhere.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ne_cli::cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(Some(value)) => {
            let text = serde_json::to_string_pretty(&value).unwrap_or_default();
            // A reader that went away (`| head`) is not an error of ours.
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nectl: error {error}");
            ExitCode::FAILURE
        }
    }
}
