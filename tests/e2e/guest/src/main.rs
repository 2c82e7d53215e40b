// SPDX-License-Identifier: Apache-2.0
//! The guest half of the end-to-end suite. Runs inside a QEMU guest whose NE device is
//! `nectl serve`, against the unmodified Linux `nitro_enclaves` driver, and prints one
//! `STEP <name> PASS|FAIL <detail>` line per check for the host to collect. Lines starting
//! with `HOST` ask the host to act (crash an enclave) and say what to look for.
//!
//! `ne-e2e-guest boot EIF` is for a guest with a vsock device of its own (CID 3 to its
//! enclaves): the kernel sample's sequence on a real image that boots.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ne_abi::uapi::{EIF_IMAGE, EIF_LOAD_OFFSET, MIN_MEM_REGION_SIZE};
use ne_abi::{NeError, NeUserMemoryRegion};
use ne_driver::sys::{AnonMapping, KernelDevice, KernelEnclave};
use ne_driver::{EnclaveDevice, EnclaveFd};
use ne_parent::conformance::{self, Verdict};
use ne_parent::KernelParent;

const DEVICE: &str = "/dev/nitro_enclaves";
const PAGE: usize = 2 << 20;
/// Pool CPUs: the guest has 7 CPUs of one thread each; CPU 0 stays with the parent, and
/// CPU 6 stays out of the pool so the conformance list can name a CPU outside it.
const POOL: &str = "1-5";

type Step = Result<String, String>;

fn report(name: &str, result: Step) -> bool {
    match &result {
        Ok(detail) => println!("STEP {name} PASS {detail}"),
        Err(detail) => println!("STEP {name} FAIL {detail}"),
    }
    result.is_ok()
}

fn errno(result: ne_driver::Result<impl std::fmt::Debug>) -> Result<i32, String> {
    match result {
        Ok(value) => Err(format!("succeeded ({value:?}) where it should fail")),
        Err(e) => Ok(e.errno()),
    }
}

fn expect_errno(
    what: &str,
    result: ne_driver::Result<impl std::fmt::Debug>,
    expected: i32,
) -> Result<(), String> {
    let got = errno(result).map_err(|e| format!("{what}: {e}"))?;
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what}: errno {got}, expected {expected}"))
    }
}

fn probe() -> Step {
    if !Path::new(DEVICE).exists() {
        return Err(format!("{DEVICE} is missing"));
    }
    let interrupts = std::fs::read_to_string("/proc/interrupts").map_err(|e| e.to_string())?;
    let msix = ["enclave_cmd", "enclave_evt"]
        .iter()
        .filter(|name| interrupts.contains(*name))
        .count();
    if msix != 2 {
        return Err(format!("{msix} of the 2 MSI-X interrupts are registered"));
    }
    Ok(format!(
        "{DEVICE} present, enclave_cmd and enclave_evt registered"
    ))
}

fn setup() -> Step {
    std::fs::write("/sys/module/nitro_enclaves/parameters/ne_cpus", POOL)
        .map_err(|e| format!("ne_cpus: {e}"))?;
    std::fs::write("/proc/sys/vm/nr_hugepages", "700").map_err(|e| format!("nr_hugepages: {e}"))?;
    let got = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").map_err(|e| e.to_string())?;
    Ok(format!("ne_cpus={POOL}, nr_hugepages={}", got.trim()))
}

/// A small valid EIF: what the device's hypervisor checks before it starts an enclave.
fn sample_eif() -> Vec<u8> {
    ne_eif::EifBuilder {
        kernel: vec![0x5a; 64 * 1024],
        cmdline: "console=ttyS0".to_owned(),
        ramdisks: vec![vec![7; 64 * 1024]],
        metadata: ne_eif::Metadata::new("e2e", "1", "2026-12-01T00:00:00Z"),
        flags: 0,
    }
    .build()
    .map(|(eif, _)| eif)
    .unwrap_or_default()
}

/// Donates `pages` hugepages to `enclave`, one `NE_SET_USER_MEMORY_REGION` each, with a
/// sample EIF at 8 MiB of them (as nitro-cli places it), so the enclave can start.
fn donate(enclave: &KernelEnclave, pages: usize) -> Result<Vec<AnonMapping>, String> {
    donate_image(enclave, pages, &sample_eif())
}

/// Donates `pages` hugepages to `enclave`, one region each, with `eif` at 8 MiB of them.
fn donate_image(
    enclave: &KernelEnclave,
    pages: usize,
    eif: &[u8],
) -> Result<Vec<AnonMapping>, String> {
    let first = usize::try_from(EIF_LOAD_OFFSET).unwrap_or(usize::MAX) / PAGE;
    let mut memory = Vec::with_capacity(pages);
    for index in 0..pages {
        let mut page = AnonMapping::hugepages(PAGE).map_err(|e| format!("mmap hugepage: {e}"))?;
        if let Some(chunk) = index
            .checked_sub(first)
            .and_then(|n| eif.chunks(PAGE).nth(n))
        {
            page.as_mut_slice()[..chunk.len()].copy_from_slice(chunk);
        }
        let region = NeUserMemoryRegion {
            flags: 0,
            memory_size: MIN_MEM_REGION_SIZE,
            userspace_addr: page.addr(),
        };
        enclave
            .set_user_memory_region(region)
            .map_err(|e| format!("NE_SET_USER_MEMORY_REGION: {e}"))?;
        memory.push(page);
    }
    Ok(memory)
}

/// An enclave with `pages` hugepages and `vcpus` auto vCPUs, not started.
fn build(
    device: &KernelDevice,
    pages: usize,
    vcpus: usize,
) -> Result<(KernelEnclave, Vec<AnonMapping>), String> {
    let enclave = device
        .create_vm()
        .map_err(|e| format!("NE_CREATE_VM: {e}"))?;
    let memory = donate(&enclave, pages)?;
    for _ in 0..vcpus {
        enclave
            .add_vcpu(0)
            .map_err(|e| format!("NE_ADD_VCPU: {e}"))?;
    }
    Ok((enclave, memory))
}

/// The kernel sample's sequence: 256 separate hugepages, 2 auto vCPUs, start with CID 0.
fn sample(device: &KernelDevice) -> Step {
    let enclave = device
        .create_vm()
        .map_err(|e| format!("NE_CREATE_VM: {e}"))?;
    let offset = enclave
        .image_load_info(EIF_IMAGE)
        .map_err(|e| format!("NE_GET_IMAGE_LOAD_INFO: {e}"))?;
    if offset != EIF_LOAD_OFFSET {
        return Err(format!("image offset {offset:#x}, expected 8 MiB"));
    }
    let _memory = donate(&enclave, 256)?;
    let cpus = [enclave.add_vcpu(0), enclave.add_vcpu(0)];
    let cpus: Vec<u32> = cpus
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("NE_ADD_VCPU: {e}"))?;
    let cid = enclave
        .start(0, 0)
        .map_err(|e| format!("NE_START_ENCLAVE: {e}"))?;
    if cid <= 3 || cid >= u64::from(u32::MAX) {
        return Err(format!("start returned CID {cid}"));
    }
    let slot = enclave.slot_uid();
    drop(enclave);
    Ok(format!(
        "slot {slot}: 256 regions, vCPUs {cpus:?}, CID {cid}; closed"
    ))
}

/// Errors the device itself answers (through the driver), and ones the driver answers
/// before it asks the device.
fn errors(device: &KernelDevice) -> Step {
    let (first, _m1) = build(device, 32, 1)?;
    first
        .start(0, 100)
        .map_err(|e| format!("start with CID 100: {e}"))?;
    let (second, _m2) = build(device, 32, 1)?;
    expect_errno("a second enclave with CID 100", second.start(0, 100), 98)?;
    expect_errno(
        "CID 3",
        second.start(0, 3),
        NeError::InvalidEnclaveCid.code().cast_signed(),
    )?;
    expect_errno(
        "start flags 2",
        second.start(2, 0),
        NeError::InvalidFlagValue.code().cast_signed(),
    )?;
    second
        .start(0, 0)
        .map_err(|e| format!("second start: {e}"))?;
    let (third, _m3) = build(device, 32, 1)?;
    third.start(0, 0).map_err(|e| format!("third start: {e}"))?;
    let (fourth, _m4) = build(device, 32, 1)?;
    fourth
        .start(0, 0)
        .map_err(|e| format!("fourth start: {e}"))?;
    expect_errno(
        "a fifth enclave",
        device.create_vm().map(|e| e.slot_uid()),
        28,
    )?;
    Ok("CID in use: EADDRINUSE; reserved CID and bad flags: NE_ERR_*; 4 enclaves ran at once; the 5th: ENOSPC".to_owned())
}

/// Asks the host to make the device answer the next `command` with `rc`, and gives it
/// time to do so (it polls the serial console every 0.2 s).
fn arm_fault(command: &str, rc: i32) {
    println!("HOST fault {command} {rc}");
    std::thread::sleep(std::time::Duration::from_secs(2));
}

/// Device rejections of every command the enclave ioctls send reach user space as the
/// device's errno (armed by the host through the control interface).
fn device_errors(device: &KernelDevice) -> Step {
    const EIO: i32 = 5;
    const EBUSY: i32 = 16;
    arm_fault("SLOT_ALLOC", -EBUSY);
    expect_errno(
        "NE_CREATE_VM",
        device.create_vm().map(|e| e.slot_uid()),
        EBUSY,
    )?;
    let enclave = device
        .create_vm()
        .map_err(|e| format!("NE_CREATE_VM: {e}"))?;
    arm_fault("SLOT_ADD_MEM", -EIO);
    let page = AnonMapping::hugepages(PAGE).map_err(|e| format!("mmap hugepage: {e}"))?;
    let region = NeUserMemoryRegion {
        flags: 0,
        memory_size: MIN_MEM_REGION_SIZE,
        userspace_addr: page.addr(),
    };
    expect_errno(
        "NE_SET_USER_MEMORY_REGION",
        enclave.set_user_memory_region(region),
        EIO,
    )?;
    let _memory = donate(&enclave, 32)?;
    arm_fault("SLOT_ADD_VCPU", -EIO);
    expect_errno("NE_ADD_VCPU", enclave.add_vcpu(0), EIO)?;
    // As in Linux, the core claimed for the refused vCPU stays with the enclave.
    enclave
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU after the fault: {e}"))?;
    arm_fault("ENCLAVE_START", -EIO);
    expect_errno("NE_START_ENCLAVE", enclave.start(0, 0), EIO)?;
    enclave
        .start(0, 0)
        .map_err(|e| format!("NE_START_ENCLAVE after the fault: {e}"))?;
    Ok("SLOT_ALLOC, SLOT_ADD_MEM, SLOT_ADD_VCPU and ENCLAVE_START rejections reach user space as the device's errno; each retry works".to_owned())
}

/// Starts an enclave, asks the host to crash it, and waits for POLLHUP.
fn crash(device: &KernelDevice) -> Step {
    let (enclave, _memory) = build(device, 32, 1)?;
    let cid = enclave.start(0, 777).map_err(|e| format!("start: {e}"))?;
    println!("HOST crash slot={} cid={cid}", enclave.slot_uid());
    let waited = Instant::now();
    let hup = enclave
        .wait_event(std::time::Duration::from_secs(60))
        .map_err(|e| format!("poll: {e}"))?;
    let elapsed = waited.elapsed();
    if !hup {
        return Err("no POLLHUP within 60 s".to_owned());
    }
    Ok(format!(
        "POLLHUP {:.1} s after the request",
        elapsed.as_secs_f64()
    ))
}

/// The enclave API's conformance list, through the kernel's driver.
fn conformance_list() -> Step {
    let parent = KernelParent::open(Path::new(DEVICE)).map_err(|e| format!("open: {e}"))?;
    let mut passed = 0;
    let mut not_applicable = Vec::new();
    let mut failed = Vec::new();
    for case in conformance::cases::<KernelParent>() {
        match (case.run)(&parent) {
            Ok(Verdict::Passed(_)) => passed += 1,
            Ok(Verdict::NotApplicable(why)) => {
                not_applicable.push(format!("{} ({why})", case.name));
            }
            Err(difference) => failed.push(format!("{}: {difference}", case.name)),
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    Ok(format!(
        "{passed} cases pass through /dev/nitro_enclaves; not applicable: {}",
        if not_applicable.is_empty() {
            "none".to_owned()
        } else {
            not_applicable.join(", ")
        }
    ))
}

/// The parent's port for an enclave's heartbeat, and the byte it sends (and gets back).
const HEARTBEAT_PORT: u32 = 9000;
const HEARTBEAT: u8 = 0xB7;
/// The hello enclave's memory: 128 MiB of hugepages (its kernel needs more than 64 MiB).
const HELLO_PAGES: usize = 64;

/// The hello image, told to end after its greeting (`/hello --exit`): an extra ramdisk
/// replaces its command file, so the enclave powers off once it has booted.
fn exiting_image(eif: &[u8]) -> Result<Vec<u8>, String> {
    let image = ne_eif::Eif::parse(eif).map_err(|e| format!("the image: {e}"))?;
    let mut command = ne_eif::Initramfs::new();
    command.file("cmd", 0o644, b"/hello\n--exit\n".to_vec());
    let mut ramdisks: Vec<Vec<u8>> = image.ramdisks().map(<[u8]>::to_vec).collect();
    ramdisks.push(command.to_bytes());
    ne_eif::EifBuilder {
        kernel: image.kernel().to_vec(),
        cmdline: String::from_utf8_lossy(image.cmdline())
            .trim_end_matches('\0')
            .to_owned(),
        ramdisks,
        metadata: ne_eif::Metadata::new("hello-exit", "1", "2026-12-01T00:00:00Z"),
        flags: 0,
    }
    .build()
    .map(|(eif, _)| eif)
    .map_err(|e| format!("building the image: {e}"))
}

/// Waits up to `timeout` for the enclave's connection to port 9000.
fn accept_heartbeat(
    listener: &vsock::VsockListener,
    timeout: Duration,
) -> Result<vsock::VsockStream, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(format!(
                    "no heartbeat on port {HEARTBEAT_PORT} within {timeout:?}"
                ));
            }
            Err(e) => return Err(format!("accept on port {HEARTBEAT_PORT}: {e}")),
        }
    }
}

/// Reads the heartbeat byte and echoes it, as nitro-cli does.
fn echo_heartbeat(mut stream: vsock::VsockStream) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| format!("heartbeat socket: {e}"))?;
    let mut byte = [0u8];
    stream
        .read_exact(&mut byte)
        .map_err(|e| format!("reading the heartbeat: {e}"))?;
    if byte[0] != HEARTBEAT {
        return Err(format!(
            "heartbeat byte {:#04x}, expected {HEARTBEAT:#04x}",
            byte[0]
        ));
    }
    stream
        .write_all(&byte)
        .map_err(|e| format!("echoing the heartbeat: {e}"))
}

/// The kernel sample's sequence on the hello image, listening on port 9000 as the sample
/// does: the enclave boots and its heartbeat reaches this guest. Returns the running
/// enclave and its memory for the next step.
fn sample_boot(
    device: &KernelDevice,
    eif: &Path,
) -> Result<(String, KernelEnclave, Vec<AnonMapping>), String> {
    let eif = std::fs::read(eif).map_err(|e| format!("{}: {e}", eif.display()))?;
    let image = exiting_image(&eif)?;
    let enclave = device
        .create_vm()
        .map_err(|e| format!("NE_CREATE_VM: {e}"))?;
    let memory = donate_image(&enclave, HELLO_PAGES, &image)?;
    let vcpu = enclave
        .add_vcpu(0)
        .map_err(|e| format!("NE_ADD_VCPU: {e}"))?;
    let listener = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, HEARTBEAT_PORT)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|e| format!("listening on vsock port {HEARTBEAT_PORT}: {e}"))?;
    let started = Instant::now();
    let cid = enclave
        .start(0, 0)
        .map_err(|e| format!("NE_START_ENCLAVE: {e}"))?;
    echo_heartbeat(accept_heartbeat(&listener, Duration::from_secs(120))?)?;
    Ok((
        format!(
            "slot {}: {HELLO_PAGES} hugepages holding the hello image, vCPU {vcpu}, CID {cid}: heartbeat on port {HEARTBEAT_PORT} after {:.1} s",
            enclave.slot_uid(),
            started.elapsed().as_secs_f64()
        ),
        enclave,
        memory,
    ))
}

/// The booted enclave powers off on its own (its application ends): POLLHUP.
fn power_off(enclave: &KernelEnclave) -> Step {
    let waited = Instant::now();
    let hup = enclave
        .wait_event(Duration::from_secs(60))
        .map_err(|e| format!("poll: {e}"))?;
    if !hup {
        return Err("no POLLHUP within 60 s of the heartbeat".to_owned());
    }
    Ok(format!(
        "POLLHUP {:.1} s after the heartbeat: the enclave powered off",
        waited.elapsed().as_secs_f64()
    ))
}

/// The steps of `ne-e2e-guest boot EIF`.
fn boot(eif: &Path) {
    let device = match KernelDevice::open(Path::new(DEVICE)) {
        Ok(device) => device,
        Err(e) => {
            report("vm-sample-heartbeat", Err(format!("open {DEVICE}: {e}")));
            return;
        }
    };
    match sample_boot(&device, eif) {
        Ok((detail, enclave, _memory)) => {
            report("vm-sample-heartbeat", Ok(detail));
            report("vm-poweroff-pollhup", power_off(&enclave));
        }
        Err(why) => {
            report("vm-sample-heartbeat", Err(why));
            report("vm-poweroff-pollhup", Err("no enclave booted".to_owned()));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, eif] = args.as_slice() {
        if mode == "boot" {
            boot(Path::new(eif));
            return;
        }
    }
    let mut passed = 0;
    let mut failed = 0;
    let mut count = |ok: bool| if ok { passed += 1 } else { failed += 1 };
    count(report("probe", probe()));
    count(report("setup", setup()));
    match KernelDevice::open(Path::new(DEVICE)) {
        Ok(device) => {
            count(report("sample", sample(&device)));
            count(report("errors", errors(&device)));
            count(report("device-errors", device_errors(&device)));
            count(report("crash", crash(&device)));
            count(report("conformance", conformance_list()));
        }
        Err(e) => count(report("open", Err(e.to_string()))),
    }
    println!("GUEST {passed} passed, {failed} failed");
}
