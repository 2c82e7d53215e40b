// SPDX-License-Identifier: Apache-2.0
//! The hello enclave's application: prints `hello from the enclave` on the console, then
//! answers on vsock port 5005 — for each line a client sends, one line back:
//! `hello from the enclave: <line>`.
//!
//! `hello --exit` prints its line and ends (the enclave powers off); `hello --panic` prints
//! its line and crashes the enclave's kernel. The tests use both.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::thread;

/// The port the application answers on.
const PORT: u32 = 5005;

fn main() {
    println!("hello from the enclave");
    match std::env::args().nth(1).as_deref() {
        Some("--exit") => return,
        Some("--panic") => {
            // The kernel's magic SysRq crash: the enclave panics.
            let _ = std::fs::write("/proc/sysrq-trigger", b"c");
            return;
        }
        _ => {}
    }
    let listener = match vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, PORT) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hello: cannot listen on vsock port {PORT}: {e}");
            std::process::exit(1);
        }
    };
    println!("hello: answering on vsock port {PORT}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || answer(stream));
    }
}

/// Answers each line of one client.
fn answer(stream: vsock::VsockStream) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if writeln!(out, "hello from the enclave: {line}").is_err() {
            return;
        }
    }
}
