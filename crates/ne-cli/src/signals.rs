// SPDX-License-Identifier: Apache-2.0
//! Ending cleanly on SIGTERM, SIGINT or SIGHUP: a long-running `nectl` (the parent process,
//! `nectl serve`) tears its enclaves down and removes its socket files instead of leaving
//! them for the next start to find.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{CliError, Code, Result};

/// Runs `shutdown` on a thread of its own when the first termination signal arrives.
pub fn on_termination(shutdown: impl FnOnce(i32) + Send + 'static) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| {
        CliError::new(
            Code::ParentConnection,
            format!("cannot handle termination signals: {e}"),
        )
    })?;
    std::thread::Builder::new()
        .name("nectl-signals".to_owned())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                shutdown(signal);
            }
        })
        .map(drop)
        .map_err(|e| {
            CliError::new(
                Code::ParentConnection,
                format!("cannot start the signal thread: {e}"),
            )
        })
}
