// SPDX-License-Identifier: Apache-2.0
//! The emulated parent as a background process, and how `nectl` reaches it.

pub mod causes;
pub mod client;
pub mod protocol;
pub mod server;
