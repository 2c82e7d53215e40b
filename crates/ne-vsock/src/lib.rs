// SPDX-License-Identifier: Apache-2.0
//! vsock for enclaves, routed as Nitro routes it: a vhost-user-vsock device per enclave
//! (QEMU's `vhost-user-vsock-pci` attaches it), on rust-vmm's `vhost-user-backend`,
//! `virtio-queue`, `virtio-vsock` and `vm-memory`.
//!
//! - [`Router`]: the parent's vsock. An enclave reaches CID 3 (the parent) and nothing
//!   else; the parent's ports are served by listeners in this process or by Unix sockets
//!   (`<dir>/<port>.sock`); the parent reaches an enclave at its CID, from this process or
//!   through `<dir>/enclave-<cid>.sock` with `CONNECT <port>\n`.
//! - [`Mux`]: one enclave's connections, with credit-based flow control; testable without
//!   a VM.
//! - [`serve`]: the vhost-user device of one enclave, on a socket.
//! - [`serve_parent_vm`]: the device of a parent that is itself a VM (`nectl serve`'s
//!   guest): attached to the router, it is CID 3 to the enclaves, reaches them at their
//!   CIDs, and debug consoles at CID 0, port `cid + 10000`.
//!
//! The guest is untrusted: malformed chains are skipped, packets for unknown connections
//! get RST, data beyond the advertised credit resets the connection, and connections,
//! queued bytes and queued control packets are bounded.
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

mod device;
mod mux;
pub mod packet;
mod router;

pub use device::{serve, serve_parent_vm, VsockDevice};
pub use mux::{
    ConnKey, HostPorts, Mux, BUF_ALLOC, MAX_CONNECTIONS, MAX_CONTROL_PACKETS, MAX_QUEUED_BYTES,
};
pub use ne_vhost::Served;
pub use router::{ConsoleSource, PortListener, RouteError, Router, CONNECT_TIMEOUT};

/// The parent's CID (`VMADDR_CID_HOST` as enclaves see it, `NE_PARENT_VM_CID`).
pub const PARENT_CID: u64 = 3;
/// The hypervisor's CID: where a debug enclave's console is served.
pub const HYPERVISOR_CID: u64 = 0;
/// nitro-cli's heartbeat port on the parent.
pub const HEARTBEAT_PORT: u32 = 9000;
/// The byte an enclave's init sends as its heartbeat, and the parent echoes.
pub const HEARTBEAT_BYTE: u8 = 0xB7;
/// The console of the debug enclave at `cid` is at CID 0, this port.
pub fn console_port(cid: u64) -> u64 {
    cid.saturating_add(10_000)
}
