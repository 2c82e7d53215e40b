// SPDX-License-Identifier: Apache-2.0
//! The hello enclave's application: prints `hello from the enclave` on the console, then
//! answers on vsock port 5005 — for each line a client sends, one line back:
//! `hello from the enclave: <line>` — and counts on port 5006: it reads what a client sends
//! until the client closes its side, then answers the byte count as one decimal line
//! (`nectl bench vsock` measures throughput with it). On port 5007 it attests: for each
//! line (a nonce in hex, possibly empty) it asks `/dev/nsm` for an attestation document
//! with that nonce and the user data `hello`, through `aws-nitro-enclaves-nsm-api`'s
//! driver helpers, and answers the document in hex on one line (or `error: …`).
//!
//! `hello --exit` prints its line and ends (the enclave powers off); `hello --panic` prints
//! its line and crashes the enclave's kernel. The tests use both.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::thread;

/// The port the application answers on.
const PORT: u32 = 5005;
/// The port that counts what it receives.
const SINK_PORT: u32 = 5006;
/// The port that answers attestation documents.
const ATTEST_PORT: u32 = 5007;

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
    let sink = listen(SINK_PORT);
    thread::spawn(move || {
        for stream in sink.incoming().flatten() {
            thread::spawn(move || count(stream));
        }
    });
    let attest_listener = listen(ATTEST_PORT);
    thread::spawn(move || {
        for stream in attest_listener.incoming().flatten() {
            thread::spawn(move || attest(stream));
        }
    });
    let listener = listen(PORT);
    println!(
        "hello: answering on vsock port {PORT}, counting on {SINK_PORT}, attesting on {ATTEST_PORT}"
    );
    for stream in listener.incoming().flatten() {
        thread::spawn(move || answer(stream));
    }
}

/// Listens on `port` of every CID, or ends the application.
fn listen(port: u32) -> vsock::VsockListener {
    match vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, port) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hello: cannot listen on vsock port {port}: {e}");
            std::process::exit(1);
        }
    }
}

/// Reads one client's bytes until it closes its side, then answers how many there were.
fn count(mut stream: vsock::VsockStream) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = writeln!(stream, "{total}");
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

/// Answers each line (a hex nonce) of one client with an attestation document, in hex.
fn attest(stream: vsock::VsockStream) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = match hex::decode(line.trim()) {
            Ok(nonce) => document(nonce).map_or_else(|e| format!("error: {e}"), hex::encode),
            Err(e) => format!("error: the nonce is not hex: {e}"),
        };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// An attestation document from `/dev/nsm` with `nonce` and the user data `hello`.
fn document(nonce: Vec<u8>) -> Result<Vec<u8>, String> {
    use aws_nitro_enclaves_nsm_api::api::{Request, Response};
    use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};
    let fd = nsm_init();
    if fd < 0 {
        return Err("cannot open /dev/nsm".to_owned());
    }
    let request = Request::Attestation {
        user_data: Some(serde_bytes::ByteBuf::from(&b"hello"[..])),
        nonce: (!nonce.is_empty()).then(|| serde_bytes::ByteBuf::from(nonce)),
        public_key: None,
    };
    let response = nsm_process_request(fd, request);
    nsm_exit(fd);
    match response {
        Response::Attestation { document } => Ok(document),
        other => Err(format!("the NSM answered {other:?}")),
    }
}
