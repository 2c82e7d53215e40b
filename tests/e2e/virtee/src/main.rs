// SPDX-License-Identifier: Apache-2.0
//! The virtee `nitro-enclaves` crate (crates.io, unchanged) launching the enclave image
//! given as the argument through `/dev/nitro_enclaves`, in the e2e guest: its `Launcher`
//! makes the VM, donates hugepages holding the image, adds a vCPU and starts it in debug
//! mode. The enclave's heartbeat is awaited on this guest's vsock (CID 3, port 9000) and
//! echoed, as nitro-cli does. Prints one `STEP` line for the host.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nitro_enclaves::launch::{ImageType, Launcher, MemoryInfo, StartFlags};
use nitro_enclaves::Device;

/// The hello image's memory, in MiB.
const MEMORY_MIB: usize = 128;
/// nitro-cli's heartbeat port and byte.
const HEARTBEAT_PORT: u32 = 9000;
const HEARTBEAT: u8 = 0xB7;
/// How long the enclave may take to boot under emulation.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    match launch() {
        Ok(done) => println!("STEP virtee-crate-launch PASS {done}"),
        Err(why) => println!("STEP virtee-crate-launch FAIL {why}"),
    }
}

fn launch() -> Result<String, String> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: ne-e2e-virtee IMAGE.eif")?;
    let image = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let heartbeat = vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, HEARTBEAT_PORT)
        .map_err(|e| format!("listening on vsock port {HEARTBEAT_PORT}: {e}"))?;
    let device = Device::open().map_err(|e| format!("/dev/nitro_enclaves: {e}"))?;
    let mut launcher = Launcher::new(&device).map_err(|e| format!("Launcher::new: {e:?}"))?;
    launcher
        .set_memory(MemoryInfo::new(ImageType::Eif(&image), MEMORY_MIB))
        .map_err(|e| format!("set_memory: {e:?}"))?;
    launcher
        .add_vcpu(None)
        .map_err(|e| format!("add_vcpu: {e:?}"))?;
    let cid = launcher
        .start(StartFlags::DEBUG, None)
        .map_err(|e| format!("start: {e:?}"))?;
    let started = Instant::now();
    heartbeat.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = loop {
        match heartbeat.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if started.elapsed() < BOOT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("no heartbeat from CID {cid}: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut byte = [0u8];
    stream
        .read_exact(&mut byte)
        .map_err(|e| format!("reading the heartbeat: {e}"))?;
    if byte != [HEARTBEAT] {
        return Err(format!("the heartbeat was {:#04x}", byte[0]));
    }
    stream
        .write_all(&byte)
        .map_err(|e| format!("echoing the heartbeat: {e}"))?;
    Ok(format!(
        "slot {}, CID {cid}: heartbeat after {:.1} s",
        launcher.slot_uid(),
        started.elapsed().as_secs_f64()
    ))
}
