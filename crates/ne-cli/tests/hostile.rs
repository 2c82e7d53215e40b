// SPDX-License-Identifier: Apache-2.0
//! The hostile-client suite: what a client, a guest or a file sends must not crash, hang or
//! mislead `ne`'s servers. Each test attacks a real process (`nectl serve`, the parent
//! process) over its socket as an attacker would, then checks that the process is alive,
//! answers a clean request within 2 s, and did not grow in fds, threads or memory.
//! Bounded: about a minute in all. RELIABILITY.md records what it tried and found.

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A clean request must be answered within this.
    const ANSWER_WITHIN: Duration = Duration::from_secs(2);

    // vfio-user commands.
    const VERSION: u16 = 1;
    const DEVICE_GET_INFO: u16 = 4;
    const SET_IRQS: u16 = 8;
    const REGION_READ: u16 = 9;
    const REGION_WRITE: u16 = 10;
    const DMA_MAP: u16 = 2;
    const REPLY: u32 = 1;
    const ERROR: u32 = 1 << 5;
    const BAR3: u32 = 3;
    /// BAR 3's COMMAND and EVTCNT registers.
    const COMMAND: u64 = 0x4;
    const EVTCNT: u64 = 0xc;
    const CONFIG: u32 = 7;
    const MSIX: u32 = 2;
    const IRQ_EVENTFD_TRIGGER: u32 = 4 | 32;

    /// A process of ours, killed and reaped on drop.
    struct Process {
        child: Child,
    }

    impl Process {
        fn pid(&self) -> u32 {
            self.child.id()
        }

        fn alive(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }

        /// File descriptors, threads and resident memory (KiB), from /proc.
        fn usage(&self) -> (usize, usize, u64) {
            let pid = self.pid();
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let field = |name: &str| -> u64 {
                status
                    .lines()
                    .find(|line| line.starts_with(name))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            (
                fds,
                usize::try_from(field("Threads:")).unwrap(),
                field("VmRSS:"),
            )
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn nectl() -> Command {
        Command::new(env!("CARGO_BIN_EXE_nectl"))
    }

    fn wait_for(path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(path).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} never listened",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nectl serve` on a socket in `dir`, with a control socket.
    fn serve(dir: &Path) -> (Process, PathBuf, PathBuf) {
        let socket = dir.join("ne.sock");
        let control = dir.join("control.sock");
        let child = nectl()
            .args(["serve", "--backend", "sim", "--socket"])
            .arg(&socket)
            .arg("--control")
            .arg(&control)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Process { child };
        wait_for(&control);
        wait_for_free(&socket);
        (process, socket, control)
    }

    /// Waits until the server has no client (our readiness probe connected and left).
    fn wait_for_free(socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = UnixStream::connect(socket) {
                stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
                if stream
                    .write_all(&message(1, DEVICE_GET_INFO, &le32(&[16]), 0))
                    .is_ok()
                    && read_reply(&mut stream).is_some()
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the server never took a client");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn le32(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A vfio-user message with `body`.
    fn message(id: u16, command: u16, body: &[u8], flags: u32) -> Vec<u8> {
        let size = u32::try_from(16 + body.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&command.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A header announcing `size` bytes, with nothing after it.
    fn bare_header(command: u16, size: u32) -> Vec<u8> {
        let mut out = message(1, command, &[], 0);
        out[4..8].copy_from_slice(&size.to_le_bytes());
        out
    }

    fn region_access(region: u32, offset: u64, count: u32) -> Vec<u8> {
        let mut body = offset.to_le_bytes().to_vec();
        body.extend_from_slice(&region.to_le_bytes());
        body.extend_from_slice(&count.to_le_bytes());
        body
    }

    /// The reply: (message id, flags, errno, body), or `None` if the connection closed.
    fn read_reply(stream: &mut UnixStream) -> Option<(u16, u32, u32, Vec<u8>)> {
        let mut header = [0u8; 16];
        stream.read_exact(&mut header).ok()?;
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        let id = u16::from_le_bytes([header[0], header[1]]);
        let mut body = vec![0u8; (word(4) as usize).saturating_sub(16)];
        stream.read_exact(&mut body).ok()?;
        Some((id, word(8), word(12), body))
    }

    fn connect(socket: &Path) -> UnixStream {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        stream
    }

    /// The server answers a clean client within 2 s: the device's vendor id.
    fn assert_serves(server: &mut Process, socket: &Path) {
        assert!(server.alive(), "the server died");
        wait_for_free(socket);
        let mut stream = connect(socket);
        let asked = Instant::now();
        stream
            .write_all(&message(9, REGION_READ, &region_access(CONFIG, 0, 4), 0))
            .unwrap();
        let (id, flags, _, body) = read_reply(&mut stream).expect("an answer");
        assert!(asked.elapsed() < ANSWER_WITHIN);
        assert_eq!((id, flags), (9, REPLY));
        assert_eq!(&body[16..20], &[0x0f, 0x1d, 0xc1, 0xe4]);
    }

    /// Sends `bytes` on a fresh connection; returns the reply or `None` if it was closed.
    fn attack(socket: &Path, bytes: &[u8]) -> Option<(u16, u32, u32, Vec<u8>)> {
        wait_for_free(socket);
        let mut stream = connect(socket);
        stream.write_all(bytes).unwrap();
        read_reply(&mut stream)
    }

    #[test]
    fn test_malformed_versions_get_errors_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, _) = serve(dir.path());
        let version = |tail: &[u8]| {
            let mut body = vec![0, 0, 2, 0];
            body.extend_from_slice(tail);
            message(1, VERSION, &body, 0)
        };
        for (what, bytes) in [
            ("JSON without its NUL", version(b"{}")),
            ("a NUL inside", version(b"{}\0x\0")),
            ("not JSON", version(b"nope\0")),
            ("no version at all", message(1, VERSION, &[], 0)),
        ] {
            let (_, flags, errno, _) = attack(&socket, &bytes).expect(what);
            assert_eq!(flags, REPLY | ERROR, "{what}");
            assert_eq!(errno, 22, "{what}: EINVAL");
        }
        for size in [0, 16 - 1, u32::MAX] {
            assert!(
                attack(&socket, &bare_header(VERSION, size)).is_none(),
                "size {size}"
            );
        }
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_interrupt_fds_that_would_block_never_hang_the_server() {
        // A pipe whose buffer is full, as vector 0's "eventfd".
        let (mut read_end, write_end) = std::io::pipe().unwrap();
        rustix::fs::fcntl_setfl(&write_end, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut filler = &write_end;
        while filler.write(&[0u8; 4096]).is_ok() {}
        rustix::fs::fcntl_setfl(&write_end, rustix::fs::OFlags::empty()).unwrap();
        doorbell_with_vector_0(&write_end);
        let mut drain = [0u8; 65536];
        assert!(read_end.read(&mut drain).unwrap() > 0, "the pipe was full");
        // A blocking eventfd one short of its maximum count.
        let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
        let preload = 0xffff_ffff_ffff_fffe_u64.to_le_bytes();
        assert_eq!(rustix::io::write(&eventfd, &preload).unwrap(), 8);
        doorbell_with_vector_0(&eventfd);
    }

    /// Serves a client that gives `fd` as vector 0's eventfd and rings a doorbell, whose
    /// reply raises vector 0: the reply, the control socket and the next client are served.
    fn doorbell_with_vector_0(fd: &impl std::os::fd::AsFd) {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, control) = serve(dir.path());
        wait_for_free(&socket);
        let mut stream = connect(&socket);
        let set_irqs = message(
            2,
            SET_IRQS,
            &le32(&[20, IRQ_EVENTFD_TRIGGER, MSIX, 0, 1]),
            0,
        );
        send_with_fd(&stream, &set_irqs, fd);
        let (_, flags, _, _) = read_reply(&mut stream).expect("SET_IRQS answered");
        assert_eq!(flags, REPLY);
        let mut enable = region_access(BAR3, 0, 1);
        enable.push(1);
        stream
            .write_all(&message(3, REGION_WRITE, &enable, 0))
            .unwrap();
        read_reply(&mut stream).expect("ENABLE answered");
        // SLOT_COUNT (8) into COMMAND: the device replies and raises vector 0.
        let mut doorbell = region_access(BAR3, COMMAND, 4);
        doorbell.extend_from_slice(&8u32.to_le_bytes());
        stream
            .write_all(&message(4, REGION_WRITE, &doorbell, 0))
            .unwrap();
        let (id, flags, _, _) = read_reply(&mut stream).expect("the doorbell was answered");
        assert_eq!((id, flags), (4, REPLY));
        let evtcnt = message(5, REGION_READ, &region_access(BAR3, EVTCNT, 4), 0);
        stream.write_all(&evtcnt).unwrap();
        let (_, _, _, body) = read_reply(&mut stream).expect("EVTCNT answered");
        assert_eq!(&body[16..18], &[1, 0], "one reply was counted");
        let status = nectl()
            .args(["control", "--control"])
            .arg(&control)
            .arg("status")
            .output()
            .unwrap();
        assert!(status.status.success(), "the control socket still answers");
        drop(stream);
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_sizes_and_counts_from_the_client_are_bounded_before_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, _) = serve(dir.path());
        let before = server.usage();
        for _ in 0..200 {
            let read_4_gib = message(1, REGION_READ, &region_access(CONFIG, 0, u32::MAX), 0);
            let (_, flags, errno, _) = attack(&socket, &read_4_gib).expect("an answer");
            assert_eq!((flags, errno), (REPLY | ERROR, 22));
            assert!(attack(&socket, &bare_header(VERSION, u32::MAX)).is_none());
        }
        let after = server.usage();
        eprintln!("400 oversized requests: (fds, threads, RSS KiB) {before:?} -> {after:?}");
        assert!(
            after.2 < before.2 + 16 * 1024,
            "RSS grew from {} to {} KiB",
            before.2,
            after.2
        );
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_a_header_split_anywhere_keeps_the_stream_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, _) = serve(dir.path());
        wait_for_free(&socket);
        let mut stream = connect(&socket);
        for cut in 1..16u16 {
            let request = message(cut, REGION_READ, &region_access(CONFIG, 0, 4), 0);
            stream.write_all(&request[..usize::from(cut)]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            stream.write_all(&request[usize::from(cut)..]).unwrap();
            let (id, flags, _, body) = read_reply(&mut stream).expect("an answer");
            assert_eq!((id, flags), (cut, REPLY), "cut at {cut}");
            assert_eq!(&body[16..18], &[0x0f, 0x1d], "cut at {cut}");
        }
        drop(stream);
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_every_error_reply_carries_a_nonzero_errno() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, _) = serve(dir.path());
        let dma_map_empty: Vec<u8> = [32u32, 3]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .chain([0u64, 0x1000, 0].iter().flat_map(|w| w.to_le_bytes()))
            .collect();
        for (what, bytes) in [
            (
                "a read past BAR 3",
                message(1, REGION_READ, &region_access(BAR3, 0x2000 - 4, 8), 0),
            ),
            (
                "a region that does not exist",
                message(1, REGION_READ, &region_access(5, 0, 4), 0),
            ),
            ("an empty DMA map", message(1, DMA_MAP, &dma_map_empty, 0)),
            ("an unknown command", message(1, 0x7777, &[], 0)),
            ("a short SET_IRQS", message(1, SET_IRQS, &[0; 4], 0)),
        ] {
            let (_, flags, errno, _) = attack(&socket, &bytes).expect(what);
            assert_eq!(flags, REPLY | ERROR, "{what}");
            assert_ne!(errno, 0, "{what}");
        }
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_a_second_client_is_closed_at_once_and_1000_reconnects_leak_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, _) = serve(dir.path());
        wait_for_free(&socket);
        let first = connect(&socket);
        let mut second = connect(&socket);
        let mut byte = [0u8];
        let closed = second.read(&mut byte);
        assert!(
            matches!(closed, Ok(0))
                || closed.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
        );
        drop(first);
        wait_for_free(&socket);
        let before = server.usage();
        for round in 0..1000u32 {
            let mut stream = UnixStream::connect(&socket).expect("a reconnect is accepted");
            stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
            let id = u16::try_from(round % 60_000).unwrap();
            stream
                .write_all(&message(id, DEVICE_GET_INFO, &le32(&[16]), 0))
                .unwrap();
            let (answered, flags, _, _) = read_reply(&mut stream)
                .unwrap_or_else(|| panic!("reconnect {round} was not served"));
            assert_eq!((answered, flags), (id, REPLY));
        }
        wait_for_free(&socket);
        let after = server.usage();
        eprintln!("1000 reconnects: (fds, threads, RSS KiB) {before:?} -> {after:?}");
        assert!(after.0 <= before.0 + 2, "fds {} -> {}", before.0, after.0);
        assert!(
            after.1 <= before.1 + 2,
            "threads {} -> {}",
            before.1,
            after.1
        );
        assert!(
            after.2 < before.2 + 16 * 1024,
            "RSS {} -> {} KiB",
            before.2,
            after.2
        );
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_a_killed_server_restarts_on_its_socket_and_sigterm_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, socket, control) = serve(dir.path());
        first.child.kill().unwrap();
        first.child.wait().unwrap();
        assert!(socket.exists(), "kill -9 leaves the socket file");
        let (mut second, socket, control_again) = serve(dir.path());
        assert_eq!(control, control_again);
        assert_serves(&mut second, &socket);
        let term = Command::new("kill")
            .args(["-TERM", &second.pid().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while socket.exists() || control.exists() {
            assert!(Instant::now() < deadline, "SIGTERM left the sockets");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn test_a_control_socket_in_use_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, control) = serve(dir.path());
        let other = nectl()
            .args(["serve", "--backend", "sim", "--socket"])
            .arg(dir.path().join("other.sock"))
            .arg("--control")
            .arg(&control)
            .output()
            .unwrap();
        assert!(!other.status.success());
        assert!(String::from_utf8_lossy(&other.stderr).contains("another process listens"));
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_the_wrong_protocol_on_a_socket_fails_fast_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, socket, control) = serve(dir.path());
        wait_for_free(&socket);
        let asked = Instant::now();
        let wrong = nectl()
            .args(["control", "--control"])
            .arg(&socket)
            .arg("status")
            .output()
            .unwrap();
        assert!(!wrong.status.success());
        assert!(asked.elapsed() < Duration::from_secs(15));
        let mut half = UnixStream::connect(&control).unwrap();
        half.write_all(b"\"Sta").unwrap();
        let status = nectl()
            .args(["control", "--control"])
            .arg(&control)
            .arg("status")
            .output()
            .unwrap();
        assert!(status.status.success(), "a half-sent request blocks no one");
        assert_serves(&mut server, &socket);
    }

    /// The parent process on a socket in `dir`, simulated.
    fn parent(dir: &Path) -> (Process, PathBuf) {
        let socket = dir.join("parent.sock");
        let child = nectl()
            .args(["parent", "run", "--backend", "sim", "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&socket);
        (Process { child }, socket)
    }

    fn small_eif(dir: &Path) -> PathBuf {
        let (eif, _) = ne_eif::EifBuilder {
            kernel: vec![1; 4096],
            cmdline: String::new(),
            ramdisks: vec![vec![2; 4096]],
            metadata: ne_eif::Metadata::new("x", "1", "2026-12-01T00:00:00Z"),
            flags: 0,
        }
        .build()
        .unwrap();
        let path = dir.join("x.eif");
        std::fs::write(&path, eif).unwrap();
        path
    }

    fn on_parent(socket: &Path, args: &[&str]) -> std::process::Output {
        nectl()
            .args(args)
            .env("NECTL_SOCKET", socket)
            .env("NECTL_BACKEND", "sim")
            .output()
            .unwrap()
    }

    #[test]
    fn test_three_runs_at_once_with_one_name_get_three_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_parent, socket) = parent(dir.path());
        let eif = small_eif(dir.path());
        let eif = eif.to_str().unwrap().to_owned();
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let socket = socket.clone();
                let eif = eif.clone();
                std::thread::spawn(move || {
                    let args = [
                        "run-enclave",
                        "--eif-path",
                        &eif,
                        "--cpu-count",
                        "2",
                        "--memory",
                        "64",
                        "--enclave-name",
                        "same",
                    ];
                    on_parent(&socket, &args).status.success()
                })
            })
            .collect();
        let succeeded = runs
            .into_iter()
            .filter_map(|run| run.join().ok())
            .filter(|ok| *ok)
            .count();
        assert_eq!(succeeded, 3);
        let described = on_parent(&socket, &["describe-enclaves"]);
        let list: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
        let mut names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["EnclaveName"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["same", "same_1", "same_2"], "each got its own name");
    }

    #[test]
    fn test_absurd_cpu_counts_and_memory_are_refused_and_the_parent_lives() {
        let dir = tempfile::tempdir().unwrap();
        let (mut parent, socket) = parent(dir.path());
        let eif = small_eif(dir.path());
        let eif = eif.to_str().unwrap();
        let before = parent.usage();
        for args in [
            ["--cpu-count", "4294967295", "--memory", "64"],
            ["--cpu-count", "2", "--memory", "17592186044480"],
        ] {
            let mut full = vec!["run-enclave", "--eif-path", eif];
            full.extend(args);
            assert!(!on_parent(&socket, &full).status.success(), "{args:?}");
        }
        assert!(parent.alive());
        assert!(parent.usage().2 < before.2 + 64 * 1024, "RSS grew");
        let described = on_parent(&socket, &["describe-enclaves"]);
        assert_eq!(String::from_utf8_lossy(&described.stdout).trim(), "[]");
    }

    #[test]
    fn test_500_idle_connections_cost_bounded_threads_and_the_parent_answers_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut parent, socket) = parent(dir.path());
        let before = settled(&parent);
        let idle: Vec<UnixStream> = (0..500)
            .filter_map(|_| UnixStream::connect(&socket).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let during = parent.usage();
        eprintln!("500 idle connections: (fds, threads, RSS KiB) {before:?} -> {during:?}");
        assert!(
            during.1 <= before.1 + 40,
            "threads {} -> {}",
            before.1,
            during.1
        );
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(20);
        while parent.usage().1 > before.1 + 2 {
            let now = parent.usage();
            assert!(
                Instant::now() < deadline,
                "connection threads did not end: {before:?} -> {now:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let asked = Instant::now();
        let status = on_parent(&socket, &["parent", "status"]);
        assert!(status.status.success());
        assert!(asked.elapsed() < ANSWER_WITHIN);
        assert!(parent.alive());
    }

    /// The process's usage once its thread count has stopped changing (the connection our
    /// readiness probe made has ended).
    fn settled(process: &Process) -> (usize, usize, u64) {
        let mut last = process.usage();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let now = process.usage();
            if now.1 == last.1 {
                return now;
            }
            last = now;
        }
        last
    }

    /// CPU time (user + system, in clock ticks) the process has used, from /proc.
    fn cpu_ticks(process: &Process) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid())).unwrap();
        // Fields after the command name (which may hold spaces), from field 3 on.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Holds `process` at `fds` open files (its soft and hard limit).
    fn limit_fds(process: &Process, fds: u64) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(process.pid()).unwrap()).unwrap();
        let limit = rustix::process::Rlimit {
            current: Some(fds),
            maximum: Some(fds),
        };
        rustix::process::prlimit(Some(pid), rustix::process::Resource::Nofile, limit).unwrap();
    }

    #[test]
    fn test_at_the_fd_limit_the_accept_loops_back_off_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (mut parent, parent_socket) = parent(dir.path());
        let (mut server, socket, _) = serve(dir.path());
        for (process, path) in [(&parent, &parent_socket), (&server, &socket)] {
            let open = u64::try_from(process.usage().0).unwrap();
            limit_fds(process, open + 4);
            let held: Vec<UnixStream> = (0..64)
                .filter_map(|_| UnixStream::connect(path).ok())
                .collect();
            let ticks = cpu_ticks(process);
            std::thread::sleep(Duration::from_secs(1));
            let spent = cpu_ticks(process) - ticks;
            eprintln!(
                "at the fd limit ({} connections queued): {spent} ticks in 1 s",
                held.len()
            );
            assert!(
                spent < 20,
                "the accept loop spins: {spent} ticks of 100 in 1 s"
            );
            drop(held);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !on_parent(&parent_socket, &["parent", "status"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the parent never answered again");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(parent.alive());
        assert_serves(&mut server, &socket);
    }

    #[test]
    fn test_empty_or_truncated_images_after_a_terminated_enclave_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut parent, socket) = parent(dir.path());
        let eif = small_eif(dir.path());
        let run = |eif: &Path| {
            let eif = eif.to_str().unwrap();
            let args = [
                "run-enclave",
                "--eif-path",
                eif,
                "--cpu-count",
                "2",
                "--memory",
                "64",
            ];
            on_parent(&socket, &args)
        };
        assert!(run(&eif).status.success());
        assert!(on_parent(&socket, &["terminate-enclave", "--all"])
            .status
            .success());
        let image = std::fs::read(&eif).unwrap();
        for (what, bytes) in [("empty", &image[..0]), ("truncated", &image[..700])] {
            let bad = dir.path().join(format!("{what}.eif"));
            std::fs::write(&bad, bytes).unwrap();
            let output = run(&bad);
            assert!(!output.status.success(), "an {what} image ran");
        }
        let described = on_parent(&socket, &["describe-enclaves"]);
        assert_eq!(String::from_utf8_lossy(&described.stdout).trim(), "[]");
        assert!(parent.alive());
    }

    #[test]
    fn test_a_squatted_runtime_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let squatted = tmp.path().join(format!("nectl-{uid}"));
        std::fs::create_dir(&squatted).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&squatted).unwrap().permissions(),
            0o777,
        );
        std::fs::set_permissions(
            &squatted,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        std::fs::write(squatted.join("parent.log"), b"planted").unwrap();
        let output = nectl()
            .arg("describe-enclaves")
            .env_remove("NECTL_SOCKET")
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("refusing the runtime directory"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(squatted.join("parent.log")).unwrap(),
            b"planted"
        );
    }

    /// Sends `bytes` with `fd` attached (SCM_RIGHTS), as a client passes an eventfd.
    fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: &impl std::os::fd::AsFd) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        let fds = [fd.as_fd()];
        assert!(ancillary.push(SendAncillaryMessage::ScmRights(&fds)));
        let sent = rustix::net::sendmsg(
            stream,
            &[std::io::IoSlice::new(bytes)],
            &mut ancillary,
            SendFlags::empty(),
        )
        .unwrap();
        assert_eq!(sent, bytes.len());
    }
}
