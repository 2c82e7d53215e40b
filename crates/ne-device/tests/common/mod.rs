// SPDX-License-Identifier: Apache-2.0
//! Shared set-up for the device's integration tests: a probed device and short-hands for
//! the commands, each going through BAR 3 as the Linux driver does.
#![allow(dead_code, unreachable_pub)]

use ne_abi::{
    CmdReply, EnclaveStartReq, SlotAddMemReq, SlotAddVcpuReq, SlotAllocReq, SlotFreeReq,
    SlotInfoReq,
};
use ne_device::test_utils::{probe, request};
use std::sync::Arc;

use ne_device::{
    DeviceConfig, DeviceLog, Hypervisor, NePciDevice, RecordingInterrupts, SimulatedHypervisor,
};
use zerocopy::little_endian::{U32, U64};

/// 2 MiB: the region granule.
pub const MIB2: u64 = 2 << 20;
/// 64 MiB: the least memory an enclave starts with.
pub const MIB64: u64 = 64 << 20;

/// The device under test: interrupts recorded, events kept in a [`DeviceLog`].
pub type TestDevice<H = SimulatedHypervisor> = NePciDevice<RecordingInterrupts, H, Arc<DeviceLog>>;

/// A device with `config`, probed as Linux does, with an empty interrupt record.
pub fn probed_with<H: Hypervisor>(
    config: DeviceConfig,
    hypervisor: H,
) -> (TestDevice<H>, RecordingInterrupts) {
    let irq = RecordingInterrupts::new();
    let mut device =
        NePciDevice::with_events(config, irq.clone(), hypervisor, Arc::new(DeviceLog::new()))
            .unwrap();
    probe(&mut device);
    (device, irq)
}

/// A device with the default configuration, probed.
pub fn probed() -> (TestDevice, RecordingInterrupts) {
    probed_with(DeviceConfig::default(), SimulatedHypervisor::new())
}

pub fn alloc<H: Hypervisor>(device: &mut TestDevice<H>) -> CmdReply {
    request(device, &SlotAllocReq::default())
}

pub fn add_mem<H: Hypervisor>(
    device: &mut TestDevice<H>,
    uid: u64,
    paddr: u64,
    size: u64,
) -> CmdReply {
    let req = SlotAddMemReq {
        slot_uid: U64::new(uid),
        paddr: U64::new(paddr),
        size: U64::new(size),
    };
    request(device, &req)
}

pub fn add_vcpu<H: Hypervisor>(device: &mut TestDevice<H>, uid: u64, vcpu: u32) -> CmdReply {
    let req = SlotAddVcpuReq {
        slot_uid: U64::new(uid),
        vcpu_id: U32::new(vcpu),
        padding: [0; 4],
    };
    request(device, &req)
}

pub fn start<H: Hypervisor>(
    device: &mut TestDevice<H>,
    uid: u64,
    cid: u64,
    flags: u64,
) -> CmdReply {
    let req = EnclaveStartReq {
        slot_uid: U64::new(uid),
        enclave_cid: U64::new(cid),
        flags: U64::new(flags),
    };
    request(device, &req)
}

pub fn info<H: Hypervisor>(device: &mut TestDevice<H>, uid: u64) -> CmdReply {
    request(
        device,
        &SlotInfoReq {
            slot_uid: U64::new(uid),
        },
    )
}

pub fn free<H: Hypervisor>(device: &mut TestDevice<H>, uid: u64) -> CmdReply {
    request(
        device,
        &SlotFreeReq {
            slot_uid: U64::new(uid),
        },
    )
}

/// A slot with 64 MiB at `paddr` and vCPU `vcpu`, ready to start; returns its uid.
pub fn ready_slot<H: Hypervisor>(device: &mut TestDevice<H>, paddr: u64, vcpu: u32) -> u64 {
    let uid = alloc(device).slot_uid.get();
    assert_eq!(add_mem(device, uid, paddr, MIB64).rc.get(), 0);
    assert_eq!(add_vcpu(device, uid, vcpu).rc.get(), 0);
    uid
}

/// A running enclave with 64 MiB at `paddr`, vCPU `vcpu` and an auto CID; returns (uid, cid).
pub fn running_slot<H: Hypervisor>(
    device: &mut TestDevice<H>,
    paddr: u64,
    vcpu: u32,
) -> (u64, u64) {
    let uid = ready_slot(device, paddr, vcpu);
    let reply = start(device, uid, 0, 0);
    assert_eq!(reply.rc.get(), 0);
    (uid, reply.enclave_cid.get())
}
