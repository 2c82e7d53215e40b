// SPDX-License-Identifier: Apache-2.0
//! One command: its request decoded from exactly its own bytes of `NE_SEND_DATA`, executed
//! against the slot table and the hypervisor, and its reply built.

use ne_abi::cmd::Request;
use ne_abi::{
    CmdReply, Command, EnclaveGetSlotReq, EnclaveStartReq, EnclaveStopReq, NextSlotReq,
    SlotAddBulkVcpusReq, SlotAddMemReq, SlotAddVcpuReq, SlotFreeReq, SlotInfoReq,
};
use zerocopy::little_endian::{U16, U64};

use crate::error::CmdError;
use crate::hypervisor::{Hypervisor, StartProgress, StopReason};
use crate::slots::{Slot, SlotTable};

/// What a command came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: reply now.
    Reply(CmdReply),
    /// `ENCLAVE_START` accepted, the hypervisor still booting: reply when it reports.
    Starting {
        /// The slot being started.
        slot_uid: u64,
        /// The CID it gets.
        cid: u64,
    },
}

/// Executes `command` with the request at the start of `send` (`NE_SEND_DATA`).
pub(crate) fn execute<H: Hypervisor>(
    command: Command,
    send: &[u8],
    slots: &mut SlotTable,
    hypervisor: &mut H,
) -> Result<Outcome, CmdError> {
    let reply = match command {
        Command::EnclaveStart => return start(request(send), slots, hypervisor),
        Command::EnclaveGetSlot => {
            let req: EnclaveGetSlotReq = request(send);
            uid_reply(slots.by_cid(req.enclave_cid.get())?.uid())
        }
        Command::EnclaveStop => {
            let uid = request::<EnclaveStopReq>(send).slot_uid.get();
            if slots.check_stop(uid)? {
                hypervisor.stop(uid);
                slots.mark_stopped(uid, StopReason::Requested);
            }
            uid_reply(uid)
        }
        Command::SlotAlloc => CmdReply {
            slot_uid: U64::new(slots.alloc()?),
            mem_regions: U64::new(slots.max_mem_regions()),
            ..CmdReply::default()
        },
        Command::SlotFree => {
            let uid = request::<SlotFreeReq>(send).slot_uid.get();
            slots.free(uid)?;
            uid_reply(uid)
        }
        Command::SlotAddMem => {
            let req: SlotAddMemReq = request(send);
            let uid = req.slot_uid.get();
            slots.add_mem(uid, req.paddr.get(), req.size.get())?;
            uid_reply(uid)
        }
        Command::SlotAddVcpu => {
            let req: SlotAddVcpuReq = request(send);
            let uid = req.slot_uid.get();
            slots.add_vcpu(uid, req.vcpu_id.get())?;
            uid_reply(uid)
        }
        Command::SlotCount => CmdReply {
            slot_count: U64::new(slots.len() as u64),
            ..CmdReply::default()
        },
        Command::NextSlot => {
            let req: NextSlotReq = request(send);
            uid_reply(slots.next_after(req.slot_uid.get())?.uid())
        }
        Command::SlotInfo => info_reply(slots.slot(request::<SlotInfoReq>(send).slot_uid.get())?),
        Command::SlotAddBulkVcpus => {
            let req: SlotAddBulkVcpusReq = request(send);
            let uid = req.slot_uid.get();
            slots.add_bulk_vcpus(uid, req.nr_vcpus.get())?;
            CmdReply {
                nr_vcpus: U64::new(slots.slot(uid)?.vcpus().len() as u64),
                ..uid_reply(uid)
            }
        }
    };
    Ok(Outcome::Reply(reply))
}

/// The reply to a successful `ENCLAVE_START`: the slot and the CID in use.
pub(crate) fn start_reply(slot_uid: u64, cid: u64) -> CmdReply {
    CmdReply {
        enclave_cid: U64::new(cid),
        ..uid_reply(slot_uid)
    }
}

fn start<H: Hypervisor>(
    req: EnclaveStartReq,
    slots: &mut SlotTable,
    hypervisor: &mut H,
) -> Result<Outcome, CmdError> {
    let uid = req.slot_uid.get();
    let flags = req.flags.get();
    let cid = slots.check_start(uid, req.enclave_cid.get(), flags)?;
    let progress = hypervisor.start(&slots.slot(uid)?.spec(cid, flags))?;
    slots.mark_starting(uid, cid, flags)?;
    match progress {
        StartProgress::Started => {
            slots.mark_running(uid)?;
            Ok(Outcome::Reply(start_reply(uid, cid)))
        }
        StartProgress::InProgress => Ok(Outcome::Starting { slot_uid: uid, cid }),
    }
}

fn uid_reply(slot_uid: u64) -> CmdReply {
    CmdReply {
        slot_uid: U64::new(slot_uid),
        ..CmdReply::default()
    }
}

fn info_reply(slot: &Slot) -> CmdReply {
    let state = slot.state();
    CmdReply {
        enclave_cid: U64::new(state.cid().unwrap_or(0)),
        mem_regions: U64::new(slot.regions().len() as u64),
        mem_size: U64::new(slot.mem_size()),
        nr_vcpus: U64::new(slot.vcpus().len() as u64),
        flags: U64::new(state.flags()),
        state: U16::new(state.wire().value()),
        ..uid_reply(slot.uid())
    }
}

/// Decodes request `R` from the first bytes of `send`, ignoring whatever follows it.
fn request<R: Request>(send: &[u8]) -> R {
    // SEND_DATA is 240 bytes and no request is longer than 24, so the prefix always exists;
    // a short buffer (never passed) would decode as zeros.
    R::read_from_prefix(send)
        .map(|(req, _)| req)
        .unwrap_or_else(|_| R::new_zeroed())
}
