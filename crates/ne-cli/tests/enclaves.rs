// SPDX-License-Identifier: Apache-2.0
//! Enclaves that really run: the hello image (Debian's cloud kernel, ne-init, the hello
//! application) booted as VMs on the emulated parent by the `nectl` binary, reached over
//! vsock, and supervised.
//!
//! They need QEMU and the kernel (`scripts/provision.sh`) and the image
//! (`scripts/build-hello.sh`); `scripts/test-all.sh` prepares both and sets
//! `NE_REQUIRE_ALL=1`, so in CI a missing part fails instead of skipping.

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// The hello image, or `None` (with a loud message) when this machine lacks the parts.
    fn hello_eif() -> Option<PathBuf> {
        let eif = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/enclave/hello.eif");
        let kit = ne_vm::cache_dir().join("kit/qemu/usr/bin/qemu-system-x86_64");
        if eif.is_file() && (kit.is_file() || std::env::var_os("NE_QEMU").is_some()) {
            return Some(eif);
        }
        let missing = format!(
            "SKIPPED: the enclave VM tests need {} and QEMU ({}); run scripts/build-hello.sh",
            eif.display(),
            kit.display()
        );
        assert!(std::env::var_os("NE_REQUIRE_ALL").is_none(), "{missing}");
        eprintln!("{missing}");
        None
    }

    /// A parent of its own in a temporary directory; stopped (with its enclaves) on drop.
    struct Sandbox {
        dir: tempfile::TempDir,
        foreground: Option<Child>,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            Sandbox {
                dir: tempfile::tempdir().unwrap(),
                foreground: None,
            }
        }

        /// A sandbox whose parent is started by the test with `args` (e.g. its shape).
        fn with_parent(args: &[&str]) -> Sandbox {
            let mut sandbox = Sandbox::new();
            let child = sandbox
                .command(&["parent", "run"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            sandbox.foreground = Some(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while UnixStream::connect(sandbox.socket()).is_err() {
                assert!(Instant::now() < deadline, "the parent did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            sandbox
        }

        fn socket(&self) -> PathBuf {
            self.dir.path().join("parent.sock")
        }

        fn command(&self, args: &[&str]) -> Command {
            let mut command = Command::new(env!("CARGO_BIN_EXE_nectl"));
            command
                .args(args)
                .env("NECTL_SOCKET", self.socket())
                .env("NECTL_BACKEND", "vm")
                .env("NECTL_ATTESTATION_DIR", self.dir.path().join("attestation"));
            command
        }

        fn nectl(&self, args: &[&str]) -> Output {
            self.command(args).output().unwrap()
        }

        fn json(&self, args: &[&str]) -> Value {
            let output = self.nectl(args);
            assert!(
                output.status.success(),
                "nectl {args:?} failed: {}\nparent log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log()
            );
            serde_json::from_slice(&output.stdout).unwrap()
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("parent.log")).unwrap_or_default()
        }

        fn run(&self, eif: &Path, rest: &str) -> Value {
            let eif = eif.to_str().unwrap();
            let args: Vec<&str> = ["run-enclave", "--eif-path", eif]
                .into_iter()
                .chain(rest.split_whitespace())
                .collect();
            self.json(&args)
        }

        /// The QEMU process of each enclave, from `parent status`.
        fn qemu_pids(&self) -> Vec<u32> {
            let status = self.json(&["parent", "status"]);
            status["EnclaveBackends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["Pid"].as_str().unwrap().parse().unwrap())
                .collect()
        }

        /// Connects to `port` of the enclave at `cid` through the parent's hybrid vsock.
        fn connect(&self, cid: u64, port: u32) -> UnixStream {
            let path = self.dir.path().join(format!("vsock/enclave-{cid}.sock"));
            let mut stream = UnixStream::connect(path).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            writeln!(stream, "CONNECT {port}").unwrap();
            stream
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = self.nectl(&["parent", "stop"]);
            if let Some(mut child) = self.foreground.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Whether process `pid` is gone (or a zombie nobody waits for).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `line` to port 5005 of the enclave at `cid` and returns its answer. The
    /// application listens only after the enclave's heartbeat, so a refused connection (the
    /// enclave answered RST) is tried again for a while, as a client would.
    fn ask(sandbox: &Sandbox, cid: u64, line: &str) -> String {
        ask_on(sandbox, cid, 5005, line)
    }

    /// Sends `line` to `port` of the enclave at `cid` and returns its answer line.
    fn ask_on(sandbox: &Sandbox, cid: u64, port: u32, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stream = sandbox.connect(cid, port);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut ok = String::new();
            reader.read_line(&mut ok).unwrap();
            if !ok.starts_with("OK ") {
                assert!(
                    Instant::now() < deadline,
                    "port {port} of {cid} never accepted"
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            writeln!(&stream, "{line}").unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            return answer.trim_end().to_owned();
        }
    }

    /// The hello image with its application run as `/hello ARGS`: a second ramdisk whose `/cmd`
    /// replaces the first one's.
    fn hello_variant(dir: &Path, eif: &Path, args: &[&str]) -> PathBuf {
        let bytes = std::fs::read(eif).unwrap();
        let image = ne_eif::Eif::parse(&bytes).unwrap();
        let mut cmd = String::from("/hello\n");
        for arg in args {
            cmd.push_str(arg);
            cmd.push('\n');
        }
        let mut extra = ne_eif::Initramfs::new();
        extra.file("cmd", 0o644, cmd.into_bytes());
        let mut ramdisks: Vec<Vec<u8>> = image.ramdisks().map(<[u8]>::to_vec).collect();
        ramdisks.push(extra.to_bytes());
        let (variant, _) = ne_eif::EifBuilder {
            kernel: image.kernel().to_vec(),
            cmdline: String::from_utf8_lossy(image.cmdline())
                .trim_end_matches('\0')
                .to_owned(),
            ramdisks,
            metadata: ne_eif::Metadata::new("hello-variant", "1", "2026-12-01T00:00:00Z"),
            flags: 0,
        }
        .build()
        .unwrap();
        let path = dir.join(format!("hello{}.eif", args.join("")));
        std::fs::write(&path, variant).unwrap();
        path
    }

    #[test]
    fn test_hello_boots_prints_answers_over_vsock_and_leaves_nothing_when_terminated() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        let ran = sandbox.run(&eif, "--cpu-count 2 --memory 128 --debug-mode");
        let cid = ran["EnclaveCID"].as_u64().unwrap();
        let pids = sandbox.qemu_pids();
        assert_eq!(pids.len(), 1);

        let console = sandbox.nectl(&[
            "console",
            "--enclave-id",
            ran["EnclaveID"].as_str().unwrap(),
            "--disconnect-timeout",
            "1",
        ]);
        let text = String::from_utf8_lossy(&console.stdout);
        assert!(text.contains("heartbeat sent to the parent"), "{text}");
        assert!(text.contains("hello from the enclave"), "{text}");

        assert_eq!(ask(&sandbox, cid, "ping"), "hello from the enclave: ping");
        let status = sandbox.json(&["parent", "status"]);
        assert_ne!(status["HugepagesFreeMiB"], status["HugepagesTotalMiB"]);

        sandbox.json(&["terminate-enclave", "--all"]);
        wait_until("QEMU gone", Duration::from_secs(10), || gone(pids[0]));
        let status = sandbox.json(&["parent", "status"]);
        assert_eq!(
            status["HugepagesFreeMiB"], status["HugepagesTotalMiB"],
            "hugepages back"
        );
        // The CPUs came back too: the same ones can be asked for again.
        let again = sandbox.run(&eif, "--cpu-ids 1 9 --memory 128");
        assert_eq!(again["CPUIDs"], serde_json::json!([1, 9]));
    }

    #[test]
    fn test_an_enclave_attests_through_dev_nsm_and_verifies_only_against_the_exported_root() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        let ran = sandbox.run(&eif, "--cpu-count 2 --memory 256");
        let cid = ran["EnclaveCID"].as_u64().unwrap();
        // The application asks /dev/nsm (nsm-api's driver helpers) for a document.
        let answer = ask_on(&sandbox, cid, 5007, "c0ffee");
        assert!(!answer.starts_with("error"), "{answer}");
        let dir = sandbox.dir.path();
        let document = dir.join("document.hex");
        std::fs::write(&document, &answer).unwrap();
        let root = dir.join("root.pem");
        let exported = sandbox.nectl(&["attestation-root"]);
        assert!(exported.status.success());
        std::fs::write(&root, &exported.stdout).unwrap();

        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let verify = |document: &Path, root: &Path, extra: &[&str]| {
            let mut args = vec![
                "verify-attestation".to_owned(),
                "--document".to_owned(),
                path(document),
                "--root".to_owned(),
                path(root),
                "--eif".to_owned(),
                path(&eif),
            ];
            args.extend(extra.iter().map(|a| (*a).to_owned()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sandbox.nectl(&args)
        };
        let verified = verify(&document, &root, &["--nonce", "c0ffee"]);
        assert!(
            verified.status.success(),
            "{}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let verified: Value = serde_json::from_slice(&verified.stdout).unwrap();
        assert_eq!(verified["ModuleID"], ran["EnclaveID"]);
        let described = sandbox.json(&["describe-eif", "--eif-path", &path(&eif)]);
        for pcr in ["0", "1", "2"] {
            assert_eq!(
                verified["PCRs"][pcr],
                described["Measurements"][format!("PCR{pcr}")],
                "PCR{pcr} is describe-eif's"
            );
        }
        assert_eq!(verified["UserData"], "68656c6c6f");

        // Another installation's root does not vouch for it.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Command::new(env!("CARGO_BIN_EXE_nectl"))
            .arg("attestation-root")
            .env("NECTL_ATTESTATION_DIR", other_dir.path())
            .output()
            .unwrap();
        let other_root = other_dir.path().join("exported.pem");
        std::fs::write(&other_root, &other.stdout).unwrap();
        let refused = verify(&document, &other_root, &[]);
        assert!(!refused.status.success());
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(why.contains("E61") && why.contains("chain"), "{why}");

        // One flipped byte in the signature, or in the payload, and it does not verify.
        let bytes = hex::decode(&answer).unwrap();
        for at in [bytes.len() - 1, bytes.len() / 2] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            let altered = dir.join(format!("flipped-{at}.cbor"));
            std::fs::write(&altered, &flipped).unwrap();
            let refused = verify(&altered, &root, &[]);
            assert!(!refused.status.success(), "byte {at} flipped and verified");
        }
        // Nor with a nonce it was not made for.
        assert!(!verify(&document, &root, &["--nonce", "beef"])
            .status
            .success());
    }

    #[test]
    fn test_a_production_enclave_has_no_console() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        sandbox.run(&eif, "--cpu-count 2 --memory 128 --enclave-name prod");
        let output = sandbox.nectl(&["console", "--enclave-name", "prod"]);
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("[E44]"));
    }

    #[test]
    fn test_an_enclave_that_powers_off_by_itself_leaves_describe_enclaves() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        let exiting = hello_variant(sandbox.dir.path(), &eif, &["--exit"]);
        sandbox.run(&exiting, "--cpu-count 2 --memory 128");
        wait_until(
            "the exited enclave gone from describe-enclaves",
            Duration::from_secs(60),
            || sandbox.json(&["describe-enclaves"]) == serde_json::json!([]),
        );
        assert!(sandbox.log().contains("reason=Exited"), "{}", sandbox.log());
    }

    #[test]
    fn test_run_enclave_attach_console_prints_the_boot_until_the_enclave_ends() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        let exiting = hello_variant(sandbox.dir.path(), &eif, &["--exit"]);
        let mut child = sandbox
            .command(&[
                "run-enclave",
                "--eif-path",
                exiting.to_str().unwrap(),
                "--cpu-count",
                "2",
                "--memory",
                "128",
                "--debug-mode",
                "--attach-console",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read as it comes, so a long console cannot block the child on a full pipe.
        let mut pipe = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        // It returns by itself once the enclave powers off; a hang is killed and fails.
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("--attach-console did not return when the enclave ended");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stdout = reader.join().unwrap();
        assert!(status.success(), "{status:?}: {stdout}");
        assert!(
            stdout.contains("\"EnclaveID\""),
            "the run's JSON first: {stdout}"
        );
        assert!(
            stdout.contains("hello from the enclave"),
            "then the console: {stdout}"
        );
    }

    #[test]
    fn test_a_panicking_enclave_is_reported_crashed() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        let panicking = hello_variant(sandbox.dir.path(), &eif, &["--panic"]);
        sandbox.run(&panicking, "--cpu-count 2 --memory 128");
        wait_until(
            "the crashed enclave gone from describe-enclaves",
            Duration::from_secs(60),
            || sandbox.json(&["describe-enclaves"]) == serde_json::json!([]),
        );
        assert!(
            sandbox.log().contains("reason=Crashed"),
            "{}",
            sandbox.log()
        );
    }

    #[test]
    fn test_four_enclaves_at_once_each_answer_on_their_own_cid() {
        let Some(eif) = hello_eif() else { return };
        let sandbox =
            Sandbox::with_parent(&["--cores", "5", "--threads", "1", "--ram-mib", "2048"]);
        let cids: Vec<u64> = (0..4)
            .map(|n| {
                let ran = sandbox.run(
                    &eif,
                    &format!("--cpu-count 1 --memory 128 --enclave-name e{n}"),
                );
                ran["EnclaveCID"].as_u64().unwrap()
            })
            .collect();
        let unique: std::collections::BTreeSet<u64> = cids.iter().copied().collect();
        assert_eq!(unique.len(), 4);
        for cid in cids {
            assert_eq!(
                ask(&sandbox, cid, &format!("to {cid}")),
                format!("hello from the enclave: to {cid}")
            );
        }
    }

    #[test]
    fn test_kill_9_of_the_parent_leaves_no_qemu_within_5_s() {
        let Some(eif) = hello_eif() else { return };
        let mut sandbox = Sandbox::with_parent(&[]);
        sandbox.run(&eif, "--cpu-count 2 --memory 128");
        let qemu = sandbox.qemu_pids();
        let mut parent = sandbox.foreground.take().unwrap();
        parent.kill().unwrap();
        parent.wait().unwrap();
        wait_until(
            "QEMU gone after kill -9 of its parent",
            Duration::from_secs(5),
            || qemu.iter().all(|&pid| gone(pid)),
        );
    }

    #[test]
    fn test_twenty_boots_in_a_row_do_not_hang() {
        let Some(eif) = hello_eif() else { return };
        let sandbox = Sandbox::new();
        for boot in 0..20 {
            let ran = sandbox.run(&eif, "--cpu-count 2 --memory 128");
            assert!(ran["EnclaveCID"].as_u64().is_some(), "boot {boot}");
            sandbox.json(&["terminate-enclave", "--all"]);
        }
    }

    #[test]
    fn test_a_missing_qemu_names_what_to_install() {
        let sandbox = Sandbox::new();
        let empty = tempfile::tempdir().unwrap();
        let image = sandbox.dir.path().join("any.eif");
        let (eif, _) = ne_eif::EifBuilder {
            kernel: vec![1; 1000],
            cmdline: String::new(),
            ramdisks: vec![vec![2; 1000]],
            metadata: ne_eif::Metadata::new("any", "1", "2026-12-01T00:00:00Z"),
            flags: 0,
        }
        .build()
        .unwrap();
        std::fs::write(&image, eif).unwrap();
        let output = sandbox
            .command(&[
                "run-enclave",
                "--eif-path",
                image.to_str().unwrap(),
                "--cpu-count",
                "2",
                "--memory",
                "64",
            ])
            .env("NE_CACHE", empty.path())
            .env("PATH", "/nonexistent")
            .env_remove("NE_QEMU")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("scripts/provision.sh"), "{stderr}");
        assert!(stderr.contains("qemu-system-x86"), "{stderr}");
    }

    #[test]
    fn test_a_bad_image_in_enclave_memory_is_refused_at_start_and_boots_nothing() {
        use ne_driver::{EnclaveDevice, EnclaveFd};
        use ne_parent::{MemoryDonor, ParentInstance, HUGEPAGE_BYTES};
        if hello_eif().is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let parent = ne_parent::Parent::new(ne_parent::ParentConfig {
            ram_mib: 1024,
            backend: ne_parent::BackendChoice::Vm(ne_vm::VmChoice {
                accel: None,
                state_dir: dir.path().join("vms"),
                vsock_dir: None,
                nsm: ne_vm::NsmChoice {
                    root_dir: dir.path().join("attestation"),
                    instance_id: "i-0000000000000000".to_owned(),
                    role_arn: None,
                },
            }),
            ..ne_parent::ParentConfig::default()
        })
        .unwrap();
        let (device, mut memory) = parent.process();
        let enclave = device.create_vm().unwrap();
        for page in 0..32 {
            let addr = memory.map_hugepages(HUGEPAGE_BYTES).unwrap();
            if page == 4 {
                // 8 MiB into the enclave's memory: where the image belongs, and garbage.
                memory.write(addr, b"not an enclave image").unwrap();
            }
            let region = ne_abi::NeUserMemoryRegion {
                flags: 0,
                memory_size: HUGEPAGE_BYTES,
                userspace_addr: addr,
            };
            enclave.set_user_memory_region(region).unwrap();
        }
        enclave.add_vcpu(0).unwrap();
        enclave.add_vcpu(0).unwrap();
        let error = enclave.start(0, 0).unwrap_err();
        assert_eq!(error.errno(), ne_abi::errno::ENOEXEC);
        assert!(
            parent.enclave_details(enclave.slot_uid()).is_empty(),
            "no VM was started"
        );
    }

    /// `nectl serve` with the VM backend, driven over vfio-user as QEMU drives it: guest RAM
    /// (a file) mapped, the device enabled, a slot set up.
    mod serve {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        use std::os::unix::net::UnixListener;
        use std::process::{Child, Command, Stdio};
        use std::time::{Duration, Instant};

        use ne_abi::{regs, Command as NeCommand};
        use vfio_bindings::bindings::vfio::{
            VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
            VFIO_PCI_BAR3_REGION_INDEX as BAR3, VFIO_PCI_MSIX_IRQ_INDEX,
        };
        use vfio_user::Client;
        use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

        use super::{gone, hello_eif, wait_until};

        const GIB: u64 = 1 << 30;
        /// The hello enclave's memory: its kernel needs more than 64 MiB.
        const ENCLAVE_MEMORY: u64 = 128 << 20;

        /// `nectl serve`, killed and reaped on drop.
        struct Server {
            child: Child,
            dir: tempfile::TempDir,
        }

        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        fn le(fields: &[u64]) -> Vec<u8> {
            fields.iter().flat_map(|f| f.to_le_bytes()).collect()
        }

        /// A guest's driver talking to the server: the client, vector 0's eventfd, its RAM.
        struct Guest {
            client: Client,
            reply: EventFd,
            event: EventFd,
            _ram: std::fs::File,
        }

        impl Guest {
            fn read_u64(&mut self, offset: u64) -> u64 {
                let mut bytes = [0; 8];
                self.client.region_read(BAR3, offset, &mut bytes).unwrap();
                u64::from_le_bytes(bytes)
            }

            /// Sends `command` and waits for its reply (vector 0); returns (rc, reply word 1).
            fn command(
                &mut self,
                command: NeCommand,
                payload: &[u8],
                wait: Duration,
            ) -> (i32, u64) {
                self.client
                    .region_write(BAR3, regs::SEND_DATA, payload)
                    .unwrap();
                self.client
                    .region_write(BAR3, regs::COMMAND, &command.number().to_le_bytes())
                    .unwrap();
                let deadline = Instant::now() + wait;
                while self.reply.read().is_err() {
                    assert!(Instant::now() < deadline, "no reply to {command}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                let head = self.read_u64(regs::RECV_DATA);
                let rc = i32::from_le_bytes(head.to_le_bytes()[..4].try_into().unwrap());
                (rc, self.read_u64(regs::RECV_DATA + 8))
            }
        }

        fn serve(backend: &str) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_nectl"))
                .args(["serve", "--backend", backend, "--socket"])
                .arg(dir.path().join("ne.sock"))
                .arg("--control")
                .arg(dir.path().join("control.sock"))
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
                .spawn()
                .unwrap();
            Server { child, dir }
        }

        /// Connects as a guest whose RAM holds `image` at 8 MiB and probes the device.
        fn guest(server: &Server, image: &[u8]) -> Guest {
            let socket = server.dir.path().join("ne.sock");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut client = loop {
                if let Ok(client) = Client::new(&socket) {
                    break client;
                }
                assert!(Instant::now() < deadline, "the server did not listen");
                std::thread::sleep(Duration::from_millis(20));
            };
            let reply = EventFd::new(EFD_NONBLOCK).unwrap();
            let event = EventFd::new(EFD_NONBLOCK).unwrap();
            client
                .set_irqs(
                    VFIO_PCI_MSIX_IRQ_INDEX,
                    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                    0,
                    2,
                    &[reply.as_raw_fd(), event.as_raw_fd()],
                )
                .unwrap();
            let ram = tempfile::tempfile().unwrap();
            ram.set_len(GIB).unwrap();
            ram.write_all_at(image, 8 << 20).unwrap();
            client.dma_map(0, 0, GIB, ram.as_raw_fd()).unwrap();
            client.region_write(BAR3, regs::ENABLE, &[1]).unwrap();
            Guest {
                client,
                reply,
                event,
                _ram: ram,
            }
        }

        const WAIT: Duration = Duration::from_secs(5);

        /// Sets up a slot with the hello image's memory and vCPU 1, listens on CID 3's port
        /// 9000, and starts the enclave; returns the slot and the heartbeat listener.
        fn start_hello(server: &Server, guest: &mut Guest) -> (u64, UnixListener) {
            start_with(server, guest, &[(0, ENCLAVE_MEMORY)], 1)
        }

        /// As [`start_hello`], with the slot's memory the guest `regions` (physical
        /// address, size) in this order, and the CID `cid` (0: the device picks).
        fn start_with(
            server: &Server,
            guest: &mut Guest,
            regions: &[(u64, u64)],
            cid: u64,
        ) -> (u64, UnixListener) {
            let (rc, uid) = guest.command(NeCommand::SlotAlloc, &[0], WAIT);
            assert_eq!(rc, 0);
            for &(paddr, size) in regions {
                let add_mem = le(&[uid, paddr, size]);
                assert_eq!(guest.command(NeCommand::SlotAddMem, &add_mem, WAIT).0, 0);
            }
            let add_vcpu = le(&[uid, 1]);
            assert_eq!(guest.command(NeCommand::SlotAddVcpu, &add_vcpu, WAIT).0, 0);
            let vsock = server.dir.path().join("state/vsock");
            wait_until("the vsock directory", WAIT, || vsock.is_dir());
            let heartbeat = UnixListener::bind(vsock.join("9000.sock")).unwrap();
            let start = le(&[uid, 0, cid]);
            assert_eq!(guest.command(NeCommand::EnclaveStart, &start, WAIT).0, 0);
            (uid, heartbeat)
        }

        /// `nectl serve` with the VM backend and a guest whose RAM holds the hello image,
        /// and the image; `None` when the image is not built (the module's skip says so).
        fn hello_guest() -> Option<(Server, Guest, Vec<u8>)> {
            let image = std::fs::read(hello_eif()?).unwrap();
            let server = serve("vm");
            let guest = guest(&server, &image);
            Some((server, guest, image))
        }

        /// The device's slots, as the control socket lists them.
        fn slots(server: &Server) -> serde_json::Value {
            let control = server.dir.path().join("control.sock");
            ne_vfio_user::control::call(&control, &ne_vfio_user::control::ControlRequest::Slots)
                .unwrap()
                .unwrap()
        }

        /// The pid of the QEMU of each enclave, from the control socket.
        fn qemu_pids(server: &Server) -> Vec<u32> {
            slots(server)
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|slot| slot["Pid"].as_str())
                .map(|pid| pid.parse().unwrap())
                .collect()
        }

        #[test]
        fn test_an_enclave_of_ten_scattered_pieces_boots_in_place() {
            // Ten regions of 16 MiB, all but the image's in descending physical order so they
            // do not merge: NUMA nodes, each a memory slot of the vsock device, beyond
            // vhost-user's baseline 8.
            let Some((server, mut guest, image)) = hello_guest() else {
                return;
            };
            const PIECE: u64 = 16 << 20;
            const PIECES: u64 = 10;
            // The pieces that hold the image (at 8 MiB of the guest's RAM, where the test put
            // it) are donated first and in place; the rest come from higher up, backwards.
            let image_pieces = ((8 << 20) + u64::try_from(image.len()).unwrap()).div_ceil(PIECE);
            let mut order: Vec<u64> = (0..image_pieces).collect();
            order.extend((image_pieces..PIECES).rev().map(|piece| piece + PIECES));
            let regions: Vec<(u64, u64)> = order
                .into_iter()
                .map(|piece| (piece * PIECE, PIECE))
                .collect();
            let (_, heartbeat) = start_with(&server, &mut guest, &regions, 0);
            let pid = qemu_pids(&server)[0];
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            // The image's pieces are contiguous and merge into one node; no others do.
            let nodes = 1 + PIECES - image_pieces;
            assert!(
                nodes > 8,
                "the test needs more pieces than vhost-user's baseline slots"
            );
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            assert_eq!(
                cmdline.matches("memdev=ram").count(),
                usize::try_from(nodes).unwrap(),
                "the enclave's RAM is not the donated pieces: {cmdline}"
            );
            heartbeat.set_nonblocking(true).unwrap();
            wait_until("the heartbeat", Duration::from_secs(120), || {
                heartbeat.accept().is_ok()
            });
        }

        #[test]
        fn test_a_disconnecting_guest_leaves_no_enclave_vm() {
            let Some((server, mut guest, _)) = hello_guest() else {
                return;
            };
            let _ = start_hello(&server, &mut guest);
            let pids = qemu_pids(&server);
            assert_eq!(pids.len(), 1);
            drop(guest);
            wait_until("the enclave's QEMU ends", Duration::from_secs(10), || {
                gone(pids[0])
            });
        }

        #[test]
        fn test_a_vfio_reset_ends_every_enclave_vm() {
            let Some((server, mut guest, _)) = hello_guest() else {
                return;
            };
            let _ = start_hello(&server, &mut guest);
            let pids = qemu_pids(&server);
            assert_eq!(pids.len(), 1);
            guest.client.reset().unwrap();
            wait_until("the enclave's QEMU ends", Duration::from_secs(10), || {
                gone(pids[0])
            });
            assert!(qemu_pids(&server).is_empty(), "a slot survived the reset");
        }

        #[test]
        fn test_device_end_enclave_crashes_the_real_vm_and_the_guest_hears_vector_1() {
            let Some((server, mut guest, _)) = hello_guest() else {
                return;
            };
            let (uid, _heartbeat) = start_hello(&server, &mut guest);
            let pid = qemu_pids(&server)[0];
            let ended = Command::new(env!("CARGO_BIN_EXE_nectl"))
                .args(["device", "--control"])
                .arg(server.dir.path().join("control.sock"))
                .args(["end-enclave", "--slot", &uid.to_string(), "--crash"])
                .output()
                .unwrap();
            assert!(ended.status.success(), "{ended:?}");
            wait_until("the enclave's QEMU ends", Duration::from_secs(10), || {
                gone(pid)
            });
            wait_until("vector 1", WAIT, || guest.event.read().is_ok());
            let slots = slots(&server);
            assert_eq!(slots[0]["State"], "STOPPED", "{slots}");
        }

        #[test]
        fn test_serve_boots_the_image_the_guest_placed_and_its_heartbeat_reaches_cid_3() {
            let Some((server, mut guest, _)) = hello_guest() else {
                return;
            };
            let (uid, heartbeat) = start_hello(&server, &mut guest);
            let booting = slots(&server);
            assert_eq!(booting[0]["Boot"], "booting", "{booting}");
            let wait = WAIT;
            heartbeat.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut stream = loop {
                match heartbeat.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) => {
                        assert!(Instant::now() < deadline, "no heartbeat on CID 3:9000");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut byte = [0u8];
            stream.read_exact(&mut byte).unwrap();
            assert_eq!(byte, [0xB7], "the heartbeat");
            let slots = slots(&server);
            assert_eq!(slots[0]["Boot"], "vsock up", "{slots}");
            assert_eq!(slots[0]["Backend"], "vm", "{slots}");
            assert!(slots[0]["Accel"].is_string(), "{slots}");
            let pid: u32 = slots[0]["Pid"].as_str().unwrap().parse().unwrap();
            assert!(!gone(pid), "the enclave's QEMU runs: {slots}");
            assert_eq!(
                guest.command(NeCommand::EnclaveStop, &le(&[uid]), wait).0,
                0
            );
            wait_until("the enclave's QEMU ends", Duration::from_secs(10), || {
                gone(pid)
            });
        }
    }
}
