// SPDX-License-Identifier: Apache-2.0
//! `nectl`: run and manage Nitro Enclaves with nitro-cli's conventions, on an emulated
//! parent instance that runs anywhere.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ne_cli::cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(Some(value)) => {
            cli::print_json(&value);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nectl: error {error}");
            ExitCode::FAILURE
        }
    }
}
