// SPDX-License-Identifier: Apache-2.0
//! The init of an enclave image (PID 1), doing what an init does on Nitro:
//!
//! 1. mounts `/proc`, `/sys` and `/dev`, and makes `/dev/console` its output;
//! 2. loads the kernel modules the image lists in `/modules` (one file name of
//!    `/lib/modules` per line, in order — e.g. the vsock transport);
//! 3. connects to vsock CID 3 (the parent), port 9000, sends the heartbeat byte `0xB7` and
//!    waits for the parent to echo it, as nitro-cli expects before it reports the enclave
//!    running;
//! 4. runs the application: `/cmd` holds its arguments, one per line, `/env` its
//!    environment, `KEY=VALUE` per line, and the optional `/workdir` the directory it starts
//!    in. When the image has a `/rootfs` (the layout nitro-cli's `build-enclave` and
//!    `nectl build-enclave` use for a container's files), the application runs chrooted
//!    there, with `/proc`, `/sys` and `/dev` mounted inside;
//! 5. reaps orphans while it runs, and powers the enclave off when it ends.
//!
//! Every step says on the console what it did or why it failed; a failure before the
//! application powers the enclave off (the parent sees it exit).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{mount, MountFlags};
use rustix::process::{wait, Pid, WaitOptions};
use rustix::system::{finit_module, reboot, RebootCommand};

/// The parent's CID.
const PARENT_CID: u32 = 3;
/// nitro-cli's heartbeat port.
const HEARTBEAT_PORT: u32 = 9000;
/// The heartbeat byte.
const HEARTBEAT: u8 = 0xB7;
/// How long the vsock transport may take to come up after its module loads.
const VSOCK_WAIT: Duration = Duration::from_secs(30);

fn say(what: &str) {
    println!("ne-init: {what}");
}

fn main() {
    if let Err(why) = run() {
        say(&format!("{why}; powering off"));
    }
    power_off();
}

fn run() -> Result<(), String> {
    mount_filesystems();
    use_console();
    load_modules()?;
    heartbeat()?;
    let status = run_application()?;
    say(&format!("the application ended ({status})"));
    Ok(())
}

fn mount_filesystems() {
    let mounts = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ];
    for (source, target, fstype) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(source, target, fstype, MountFlags::empty(), None) {
            if e != rustix::io::Errno::BUSY {
                say(&format!("cannot mount {target}: {e}"));
            }
        }
    }
}

/// Points stdin, stdout and stderr at `/dev/console` (the enclave's serial port), so
/// the image needs no device nodes of its own.
fn use_console() {
    let Ok(console) =
        rustix::fs::open("/dev/console", OFlags::RDWR | OFlags::NOCTTY, Mode::empty())
    else {
        return;
    };
    let _ = rustix::stdio::dup2_stdin(console.as_fd());
    let _ = rustix::stdio::dup2_stdout(console.as_fd());
    let _ = rustix::stdio::dup2_stderr(console.as_fd());
}

fn load_modules() -> Result<(), String> {
    let Ok(list) = std::fs::read_to_string("/modules") else {
        return Ok(());
    };
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules").join(name);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match finit_module(&file, c"", 0) {
            Ok(()) => say(&format!("loaded {name}")),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(format!("cannot load {name}: {e}")),
        }
    }
    Ok(())
}

/// Sends `0xB7` to the parent's port 9000 and waits for the echo.
fn heartbeat() -> Result<(), String> {
    let deadline = Instant::now() + VSOCK_WAIT;
    let mut stream = loop {
        match vsock::VsockStream::connect_with_cid_port(PARENT_CID, HEARTBEAT_PORT) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "no heartbeat listener at {PARENT_CID}:{HEARTBEAT_PORT}: {e}"
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    };
    stream
        .write_all(&[HEARTBEAT])
        .map_err(|e| format!("cannot send the heartbeat: {e}"))?;
    let mut echo = [0u8];
    stream
        .read_exact(&mut echo)
        .map_err(|e| format!("no heartbeat echo: {e}"))?;
    if echo != [HEARTBEAT] {
        return Err(format!("the parent echoed {:#04x}, not 0xb7", echo[0]));
    }
    say("heartbeat sent to the parent");
    Ok(())
}

/// Runs the application of `/cmd` with the environment of `/env`, reaping every other
/// child meanwhile; returns how it ended.
/// Where an image built from a container keeps the container's root.
const ROOTFS: &str = "/rootfs";

/// Chroots into `/rootfs` if the image has one, with the kernel's filesystems mounted
/// inside, and changes to `workdir` there.
fn enter_rootfs(workdir: Option<&str>) -> Result<(), String> {
    if Path::new(ROOTFS).is_dir() {
        for (source, target, fstype) in [
            ("proc", "proc", "proc"),
            ("sysfs", "sys", "sysfs"),
            ("devtmpfs", "dev", "devtmpfs"),
        ] {
            let path = Path::new(ROOTFS).join(target);
            let _ = std::fs::create_dir_all(&path);
            if let Err(e) = mount(source, &path, fstype, MountFlags::empty(), None) {
                say(&format!("cannot mount {}: {e}", path.display()));
            }
        }
        rustix::process::chroot(ROOTFS).map_err(|e| format!("cannot chroot to {ROOTFS}: {e}"))?;
        std::env::set_current_dir("/").map_err(|e| format!("cannot enter {ROOTFS}: {e}"))?;
    }
    if let Some(dir) = workdir {
        std::env::set_current_dir(dir).map_err(|e| format!("cannot enter {dir}: {e}"))?;
    }
    Ok(())
}

fn run_application() -> Result<String, String> {
    let cmd = std::fs::read_to_string("/cmd").map_err(|e| format!("no /cmd: {e}"))?;
    let mut args = cmd.lines().filter(|l| !l.is_empty());
    let program = args.next().ok_or("/cmd is empty")?;
    let env = std::fs::read_to_string("/env").unwrap_or_default();
    let vars = env.lines().filter_map(|line| line.split_once('='));
    let workdir = std::fs::read_to_string("/workdir").ok();
    enter_rootfs(workdir.as_deref().map(str::trim).filter(|d| !d.is_empty()))?;
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .envs(vars)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let app = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    loop {
        match wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if Some(pid) == app => {
                return Ok(match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(signal)) => format!("signal {signal}"),
                    _ => "ended".to_owned(),
                });
            }
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the application: {e}")),
        }
    }
}

fn power_off() -> ! {
    rustix::fs::sync();
    let _ = reboot(RebootCommand::PowerOff);
    // Only reached if the kernel refused: PID 1 must not return.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
