// SPDX-License-Identifier: Apache-2.0
//! The Nitro Enclaves PCI device model: the hypervisor's side of the interface.
//!
//! [`NePciDevice`] is the whole PCI function: configuration space (ids, BAR 3 sizing, an
//! MSI-X capability with two vectors), BAR 3 (the registers, the MSI-X table and PBA),
//! the command engine and the slot table. It is sans-I/O: the host passes it config-space
//! and BAR accesses (offsets relative to the BAR), it raises vectors through an injected
//! [`Interrupt`] sink, and a [`Hypervisor`] backend decides what starting an enclave
//! means. Any VMM can embed it; `ne-vfio-user` serves it over a socket.
//!
//! It is not a driver (see `ne-driver`) and knows nothing of sockets, threads or time.
//!
//! # BAR 3
//!
//! 8 KiB, 32-bit non-prefetchable memory. Registers at 0x000–0x1EF as in `ne_pci_dev.h`
//! ([`ne_abi::regs`]); the MSI-X table at 0x1000, the PBA at 0x1800.
//!
//! | register | read | write |
//! |---|---|---|
//! | `NE_ENABLE` | 1 while enabled, else 0 | 0: stop every enclave, free every slot, forget a pending command; 1: enable; other values ignored |
//! | `NE_VERSION` | 1 after 1 was written, else 0 | selects the version |
//! | `NE_COMMAND` | 0 | doorbell: the value is the command |
//! | `NE_EVTCNT` | replies in bits 15:0, events in 31:16, each wrapping | ignored |
//! | `NE_SEND_DATA` | what was written | stored; a command reads only its own bytes |
//! | `NE_RECV_DATA` | the last reply, zeros after its 72 bytes | ignored |
//! | reserved | 0 | ignored |
//!
//! Accesses of any width at any offset are split across the registers they cover. A
//! doorbell rung while the device is **disabled** is answered with `-ENODEV` (a reply and
//! vector 0, like any other). A doorbell rung while a command is **pending** (a start the
//! hypervisor has not finished, or a reply held by fault injection) is ignored: no reply and
//! no vector, and the pending command's reply is the one that follows. Both are counted in
//! [`DeviceStats`].
//!
//! # Interrupts
//!
//! Exactly one vector-0 request per reply, after `NE_RECV_DATA` holds all of it; one
//! vector-1 request per started enclave that stopped by itself. Nothing else raises a
//! vector (except [`NePciDevice::raise_spurious`]), so no vector comes before the first
//! command. With [`DeviceConfig::msix_gating`] (the default) a request is raised only
//! while MSI-X is enabled, the function unmasked and the vector unmasked; otherwise it waits
//! in the PBA until it is. The Bus Master bit is not consulted (older drivers never set it).
//!
//! # Commands
//!
//! Every command decodes exactly its own request bytes, checks everything before it changes
//! anything, and answers with a whole 72-byte reply: `rc` 0 and the fields below on
//! success, `rc` = −errno and zeros elsewhere on rejection. A rejected command changes no
//! state. An unknown command number (0, ≥ 12) gets `-EINVAL`.
//!
//! | command | request fields checked | reply fields set | rejections (errno) |
//! |---|---|---|---|
//! | `ENCLAVE_START` (1) | `slot_uid`, `flags`, `enclave_cid` | `slot_uid`, `enclave_cid` (the CID in use; chosen when 0 was asked) | no such slot `ENOENT`; flags not 0/1 `EINVAL`; CID 1–3, ≥ `u32::MAX` `EINVAL`; slot not being set up `EBUSY`; no memory, < 64 MiB, no vCPU `EINVAL`; CID used by a live enclave `EADDRINUSE`; no CID free `EADDRNOTAVAIL`; hypervisor refused: its errno |
//! | `ENCLAVE_GET_SLOT` (2) | `enclave_cid` | `slot_uid` | no running enclave has it `ENOENT` |
//! | `ENCLAVE_STOP` (3) | `slot_uid` | `slot_uid` | no such slot `ENOENT`; never started `EINVAL`; already stopped: success, nothing done |
//! | `SLOT_ALLOC` (4) | — (its byte is unused) | `slot_uid` (never 0, never reused), `mem_regions` (the per-slot limit) | `max_slots` slots exist `ENOSPC` |
//! | `SLOT_FREE` (5) | `slot_uid` | `slot_uid` | no such slot `ENOENT`; enclave starting or running `EBUSY` |
//! | `SLOT_ADD_MEM` (6) | `slot_uid`, `paddr`, `size` | `slot_uid` | no such slot `ENOENT`; not being set up `EBUSY`; empty or not 2 MiB aligned `EINVAL`; outside parent RAM or wrapping `EFAULT`; overlaps any slot's region `EBUSY`; `max_mem_regions` reached `ENOSPC` |
//! | `SLOT_ADD_VCPU` (7) | `slot_uid`, `vcpu_id` | `slot_uid` | no such slot `ENOENT`; not being set up `EBUSY`; id ≥ parent CPUs or 0 (the parent's boot CPU) `EINVAL`; owned by a slot `EBUSY`; `max_vcpus_per_slot` reached `ENOSPC` |
//! | `SLOT_COUNT` (8) | — | `slot_count` | — |
//! | `NEXT_SLOT` (9) | `slot_uid` (0 starts) | `slot_uid`: the smallest uid above the given one | none follows `ENOENT` (the end of the iteration) |
//! | `SLOT_INFO` (10) | `slot_uid` | `slot_uid`, `enclave_cid` (0 before start), `mem_regions` (count), `mem_size`, `nr_vcpus`, `flags`, `state` (0 set-up, 2 running, 0xFFFF stopped) | no such slot `ENOENT` |
//! | `SLOT_ADD_BULK_VCPUS` (11) | `slot_uid`, `nr_vcpus` | `slot_uid`, `nr_vcpus` (the slot's total) | no such slot `ENOENT`; not being set up `EBUSY`; 0 asked `EINVAL`; over `max_vcpus_per_slot` or fewer free CPUs `ENOSPC` |
//!
//! Choices where the protocol leaves freedom: slot uids count up from 1 and are never
//! reused while the device lives (they become user-visible enclave IDs); CID 0 gets the
//! next free CID from 16 up (4–15 are left for explicit choices); regions are kept in
//! arrival order (the enclave's memory is their concatenation); bulk vCPUs are the
//! lowest-numbered free parent CPUs above 0; `NEXT_SLOT` iterates in increasing uid order.
//!
//! # Limits
//!
//! [`DeviceConfig`] bounds every table: slots (default 4), regions per slot (default
//! 32 768: 64 GiB of 2 MiB pages) and vCPUs per slot (default 256), so the device's memory
//! is bounded by them whatever the driver sends.
//!
//! # Faults
//!
//! [`FaultPlan`] (through [`NePciDevice::faults_mut`]) makes the next N commands of a type
//! answer a given rc, hold their reply until released, or lose it;
//! [`NePciDevice::raise_spurious`] raises a vector out of turn.
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

mod bar;
pub mod config;
pub mod config_space;
mod device;
mod dispatch;
pub mod error;
pub mod events;
pub mod faults;
pub mod hypervisor;
pub mod interrupt;
pub mod msix;
pub mod pci_core;
pub mod slots;
pub mod state;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use config::{ConfigError, DeviceConfig};
pub use device::NePciDevice;
pub use error::{CmdError, Error};
pub use events::{
    CommandRecord, DeviceLog, DeviceStats, NeEvents, NoEvents, Rejection, HISTORY_LEN,
};
pub use faults::{FaultAction, FaultPlan, FaultRule};
pub use hypervisor::{
    EnclaveSpec, Hypervisor, HypervisorEvent, MemRegion, SimulatedHypervisor, StartProgress,
    StartRefused, StopReason,
};
pub use interrupt::{Interrupt, MsixVector, NoInterrupts, RecordingInterrupts};
pub use slots::{Slot, SlotState, SlotTable};
pub use state::{DeviceState, PendingState, ReplyFate, SlotRecord, StateError};
