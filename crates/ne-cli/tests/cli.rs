// SPDX-License-Identifier: Apache-2.0
//! `nectl` end to end: the built binary, a parent of its own on a temporary socket, and
//! its JSON parsed as a tool would parse nitro-cli's.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// A temporary directory with a socket for the parent; stops the parent when dropped.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            Sandbox {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn socket(&self) -> PathBuf {
            self.dir.path().join("parent.sock")
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("parent.log")).unwrap_or_default()
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn nectl(&self, args: &[&str]) -> Output {
            Command::new(env!("CARGO_BIN_EXE_nectl"))
                .args(args)
                .env("NECTL_SOCKET", self.socket())
                .env("NECTL_BACKEND", "sim")
                .output()
                .unwrap()
        }

        /// Runs `args`, asserting success, and parses stdout as JSON.
        fn json(&self, args: &[&str]) -> Value {
            let output = self.nectl(args);
            assert!(
                output.status.success(),
                "nectl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).unwrap()
        }

        /// Runs `args`, asserting failure with error `code`; returns stderr.
        fn fails(&self, args: &[&str], code: &str) -> String {
            let output = self.nectl(args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(!output.status.success(), "nectl {args:?} should fail");
            assert!(
                stderr.contains(&format!("[{code}]")),
                "nectl {args:?}: expected {code}, got: {stderr}"
            );
            assert!(
                stderr.contains("hint:") || stderr.contains("more:"),
                "{stderr}"
            );
            stderr
        }

        /// Writes a kernel and a ramdisk and builds `name`.eif from them; returns its path and
        /// the measurements `build-eif` printed.
        fn eif(&self, name: &str) -> (PathBuf, Value) {
            let kernel = self.path("bzImage");
            let ramdisk = self.path("init.cpio");
            std::fs::write(&kernel, vec![0x4b; 200_000]).unwrap();
            std::fs::write(&ramdisk, vec![0x52; 60_000]).unwrap();
            let eif = self.path(&format!("{name}.eif"));
            let built = self.json(&[
                "build-eif",
                "--kernel",
                path(&kernel),
                "--cmdline",
                "console=ttyS0",
                "--ramdisk",
                path(&ramdisk),
                "--output",
                path(&eif),
            ]);
            (eif, built["Measurements"].clone())
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = self.nectl(&["parent", "stop"]);
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `run-enclave --eif-path EIF` followed by the white-space separated `rest`.
    fn run_args<'a>(eif: &'a str, rest: &'a str) -> Vec<&'a str> {
        ["run-enclave", "--eif-path", eif]
            .into_iter()
            .chain(rest.split_whitespace())
            .collect()
    }

    #[test]
    fn test_run_describe_terminate_round_trip_with_nitro_cli_json() {
        let sandbox = Sandbox::new();
        let (eif, measurements) = sandbox.eif("hello");

        let described = sandbox.json(&["describe-eif", "--eif-path", path(&eif)]);
        assert_eq!(described["Measurements"], measurements);
        assert_eq!(described["EifVersion"], 4);
        assert_eq!(described["MetaData"]["ImageName"], "hello");

        let run = sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 128"));
        let keys: Vec<&str> = run
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "EnclaveName",
                "EnclaveID",
                "ProcessID",
                "EnclaveCID",
                "NumberOfCPUs",
                "CPUIDs",
                "MemoryMiB",
                "Measurements"
            ]
        );
        assert_eq!(run["EnclaveName"], "hello");
        assert!(run["EnclaveID"]
            .as_str()
            .unwrap()
            .starts_with("i-0000000000000000-enc"));
        assert_eq!(run["NumberOfCPUs"], 2);
        assert_eq!(run["CPUIDs"].as_array().unwrap().len(), 2);
        assert_eq!(run["MemoryMiB"], 128);
        assert!(run["EnclaveCID"].as_u64().unwrap() >= 4);
        assert_eq!(
            run["Measurements"], measurements,
            "the hypervisor measured the same image"
        );

        let debug = sandbox.json(&run_args(
            path(&eif),
            "--cpu-ids 3,11 --memory 64 --debug-mode --enclave-name dbg --enclave-cid 99",
        ));
        assert_eq!(debug["EnclaveCID"], 99);

        let list = sandbox.json(&["describe-enclaves"]);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["State"], "RUNNING");
        assert_eq!(list[0]["Flags"], "NONE");
        assert_eq!(list[1]["Flags"], "DEBUG_MODE");
        assert_eq!(list[1]["CPUIDs"], serde_json::json!([3, 11]));

        let id = run["EnclaveID"].as_str().unwrap();
        let terminated = sandbox.json(&["terminate-enclave", "--enclave-id", id]);
        assert_eq!(terminated["EnclaveID"], id);
        assert_eq!(terminated["Terminated"], true);
        sandbox.fails(&["terminate-enclave", "--enclave-id", id], "E40");

        let all = sandbox.json(&["terminate-enclave", "--all"]);
        assert_eq!(all.as_array().unwrap().len(), 1);
        assert_eq!(sandbox.json(&["describe-enclaves"]), serde_json::json!([]));
    }

    #[test]
    fn test_failures_print_stable_codes_and_hints() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("app");
        let eif = path(&eif);
        sandbox.fails(&run_args(eif, "--cpu-count 2 --memory 32"), "E26");
        sandbox.fails(&run_args(eif, "--cpu-count 2 --memory 100000"), "E27");
        sandbox.fails(&run_args(eif, "--cpu-count 16 --memory 128"), "E22");
        sandbox.fails(&run_args(eif, "--cpu-ids 1 1 --memory 128"), "E20");
        sandbox.fails(&run_args(eif, "--cpu-ids 8 --memory 128"), "E21");
        sandbox.fails(
            &run_args(eif, "--cpu-count 2 --memory 128 --enclave-cid 3"),
            "E03",
        );
        sandbox.fails(
            &run_args("/no/such.eif", "--cpu-count 2 --memory 128"),
            "E19",
        );
        sandbox.json(&run_args(
            eif,
            "--cpu-count 2 --memory 128 --enclave-name x",
        ));
        let second = sandbox.json(&run_args(
            eif,
            "--cpu-count 2 --memory 128 --enclave-name x",
        ));
        assert_eq!(
            second["EnclaveName"], "x_1",
            "a taken name gets a suffix, as with nitro-cli"
        );
        sandbox.fails(&["terminate-enclave", "--enclave-name", "nobody"], "E40");
        let explained = sandbox.json(&["explain", "E26"]);
        assert_eq!(explained["Code"], "E26");
    }

    #[test]
    fn test_explain_takes_nitro_clis_error_code_option_too() {
        let sandbox = Sandbox::new();
        let explained = sandbox.json(&["explain", "--error-code", "E26"]);
        assert_eq!(explained["Code"], "E26");
        assert_eq!(explained, sandbox.json(&["explain", "E26"]));
    }

    #[test]
    fn test_corrupt_image_is_refused_before_the_device_with_the_reason() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("bad");
        let mut bytes = std::fs::read(&eif).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&eif, bytes).unwrap();
        let stderr = sandbox.fails(&run_args(path(&eif), "--cpu-count 2 --memory 128"), "E35");
        assert!(stderr.contains("CRC mismatch"), "{stderr}");
        sandbox.fails(&["describe-eif", "--eif-path", path(&eif)], "E35");
        assert_eq!(
            sandbox.json(&["describe-enclaves"]),
            serde_json::json!([]),
            "nothing was left behind"
        );
    }

    #[test]
    fn test_files_that_are_not_images_are_refused_without_reading_them_whole() {
        let sandbox = Sandbox::new();
        let empty = sandbox.path("empty.eif");
        std::fs::write(&empty, b"").unwrap();
        sandbox.fails(&run_args(path(&empty), "--cpu-count 2 --memory 64"), "E35");
        sandbox.fails(&run_args("/dev/zero", "--cpu-count 2 --memory 64"), "E19");
        sandbox.fails(
            &run_args(path(sandbox.dir.path()), "--cpu-count 2 --memory 64"),
            "E19",
        );
        let fifo = sandbox.path("fifo.eif");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        sandbox.fails(&run_args(path(&fifo), "--cpu-count 2 --memory 64"), "E19");
        let sparse = sandbox.path("huge.eif");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(1 << 31)
            .unwrap();
        sandbox.fails(&run_args(path(&sparse), "--cpu-count 2 --memory 64"), "E35");
    }

    #[test]
    fn test_names_no_user_could_mean_are_refused_with_the_reason() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("names");
        let eif = path(&eif);
        let run = |name: &str| {
            let mut args = run_args(eif, "--cpu-count 2 --memory 64");
            args.extend(["--enclave-name", name]);
            args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
        };
        let fails = |name: &str, reason: &str| {
            let args = run(name);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let stderr = sandbox.fails(&args, "E58");
            assert!(stderr.contains(reason), "{name:?}: {stderr}");
            assert!(
                !stderr.contains('\x1b'),
                "the terminal escape reached the terminal"
            );
        };
        fails("", "is empty");
        fails(&"n".repeat(5000), "longer than 128 characters");
        fails("two\nlines", "control character");
        fails("red\x1b[31m", "control character");
        assert_eq!(sandbox.json(&["describe-enclaves"]), serde_json::json!([]));
        let longest = "é".repeat(128);
        let args = run(&longest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(sandbox.json(&args)["EnclaveName"], longest.as_str());
    }

    #[test]
    fn test_refused_cids_and_cpus_name_the_cause() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("causes");
        let eif = path(&eif);
        sandbox.json(&run_args(
            eif,
            "--cpu-ids 1,9 --memory 64 --enclave-cid 20 --enclave-name first",
        ));
        let id = sandbox.json(&["describe-enclaves"])[0]["EnclaveID"]
            .as_str()
            .unwrap()
            .to_owned();
        let cases = [
            (
                "--cpu-count 2 --memory 64 --enclave-cid 20",
                format!("CID 20 is in use by enclave {id} (\"first\")"),
            ),
            (
                "--cpu-ids 9,1 --memory 64",
                format!("CPU 9 is in the NE CPU pool, but enclave {id} (\"first\") holds it"),
            ),
            (
                "--cpu-ids 9,1 --memory 64",
                "free CPUs of the pool: 2-7,10-15".to_owned(),
            ),
            (
                "--cpu-count 100 --memory 64",
                "100 CPUs asked; the NE CPU pool has 14 (1-7,9-15), 12 of them free".to_owned(),
            ),
            (
                "--cpu-count 1 --memory 64",
                "whole CPU cores of 2 threads; --cpu-count 1".to_owned(),
            ),
            (
                "--cpu-ids 2 --memory 64",
                "leaves out the sibling thread(s) 10".to_owned(),
            ),
            (
                "--cpu-ids 16,20 --memory 64",
                "CPU 16 does not exist: this parent has CPUs 0-15".to_owned(),
            ),
            (
                "--cpu-count 2 --memory 64 --enclave-cid 99999999999",
                "--enclave-cid 99999999999 is out of range".to_owned(),
            ),
        ];
        for (options, expected) in cases {
            let output = sandbox.nectl(&run_args(eif, options));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{options}");
            assert!(stderr.contains(&expected), "{options}: {stderr}");
        }
        let status = sandbox.json(&["parent", "status"]);
        assert_eq!(status["CPUsFree"], "2-7,10-15", "{status}");
        assert_eq!(status["CPUsInUse"][0]["CPUs"], "1,9", "{status}");
        assert_eq!(status["Cores"][1], "1,9", "{status}");
    }

    #[test]
    fn test_a_parent_that_cannot_start_says_why_at_once() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("start");
        let eif = path(&eif);
        let long = sandbox.path(&format!("{}/p.sock", "x".repeat(120)));
        let cases = [
            (vec!["--socket", path(&long)], "shorter than 108 bytes"),
            (
                vec!["--socket", "/proc/no-such-dir/p.sock"],
                "cannot make the directory /proc/no-such-dir",
            ),
            (
                vec!["--device", "/dev/no-such-nitro-device"],
                "cannot open /dev/no-such-nitro-device",
            ),
        ];
        for (options, expected) in cases {
            let mut args = options.clone();
            args.extend(run_args(eif, "--cpu-count 2 --memory 64"));
            let started = std::time::Instant::now();
            let stderr = sandbox.fails(&args, "E39");
            assert!(stderr.contains(expected), "{options:?}: {stderr}");
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{options:?}: the cause took {:?} to show",
                started.elapsed()
            );
        }
    }

    #[test]
    fn test_an_unknown_enclave_is_named_as_the_user_wrote_it() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("known");
        sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        let stderr = sandbox.fails(&["terminate-enclave", "--enclave-id", "bogus"], "E40");
        assert!(
            stderr.contains("no enclave has the ID \"bogus\""),
            "{stderr}"
        );
        assert!(
            !stderr.contains("Id("),
            "Rust's debug text reached the user: {stderr}"
        );
    }

    #[test]
    fn test_run_enclave_reads_nitro_clis_json_configuration() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("configured");
        let config = sandbox.path("run.json");
        let json = serde_json::json!({
            "eif_path": eif,
            "memory_mib": 128,
            "cpu_ids": [2, 10],
            "enclave_cid": 30,
            "debug_mode": true,
            "enclave_name": "from-config",
        });
        std::fs::write(&config, json.to_string()).unwrap();
        let ran = sandbox.json(&["run-enclave", "--config", path(&config)]);
        assert_eq!(ran["EnclaveName"], "from-config");
        assert_eq!(ran["EnclaveCID"], 30);
        assert_eq!(ran["CPUIDs"], serde_json::json!([2, 10]));
        assert_eq!(ran["MemoryMiB"], 128);
        let described = sandbox.json(&["describe-enclaves"]);
        assert_eq!(described[0]["Flags"], "DEBUG_MODE", "{described}");

        std::fs::write(
            &config,
            r#"{"eif_path": "x", "memory_mb": 64, "cpu_count": 2}"#,
        )
        .unwrap();
        let stderr = sandbox.fails(&["run-enclave", "--config", path(&config)], "E03");
        assert!(stderr.contains("unknown field `memory_mb`"), "{stderr}");
        let output = sandbox.nectl(&["run-enclave", "--config", path(&config), "--memory", "64"]);
        assert!(!output.status.success(), "--config and --memory together");
    }

    #[test]
    fn test_describe_enclaves_metadata_shows_how_each_image_was_built() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("described");
        sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        let plain = sandbox.json(&["describe-enclaves"]);
        assert!(plain[0].get("Metadata").is_none(), "{plain}");
        let described = sandbox.json(&["describe-enclaves", "--metadata"]);
        let enclave = &described[0];
        assert_eq!(enclave["ImageName"], "described", "{enclave}");
        assert_eq!(enclave["Metadata"]["BuildTool"], "ne", "{enclave}");
        for key in [
            "BuildTime",
            "BuildToolVersion",
            "OperatingSystem",
            "KernelVersion",
            "DockerInfo",
        ] {
            assert!(enclave["Metadata"].get(key).is_some(), "{key}: {enclave}");
        }
    }

    #[test]
    fn test_pcr_measures_a_file_and_a_signing_certificate_as_nitro_cli_does() {
        // Expected values from an independent computation (Python's hashlib):
        // SHA-384(48 zero bytes || SHA-384(data)), data = the file, or the certificate's DER.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let sandbox = Sandbox::new();
        let input = fixtures.join("pcr-input.txt");
        let pcr = sandbox.json(&["pcr", "--input", path(&input)]);
        assert_eq!(
            pcr["PCR"],
            "189af4558571f4f2eba9ddab18011703b719243970089333a5c713ef7b3f094c8a73f022534010637865b7667def5e45"
        );
        let certificate =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ne-eif/tests/fixtures/signing-cert.pem");
        let pcr8 = sandbox.json(&["pcr", "--signing-certificate", path(&certificate)]);
        assert_eq!(
            pcr8["PCR8"],
            "9b00460e9f1630079abe202eb32fc48eef15ea1ee542598e1725cfd3afdbca00f533f9cc78199b6ca7d55bd8f2118d88"
        );
        let stderr = sandbox.fails(&["pcr", "--signing-certificate", path(&input)], "E03");
        assert!(
            stderr.contains("is not a PEM X.509 certificate"),
            "{stderr}"
        );
        let stderr = sandbox.fails(&["pcr", "--input", "/dev/zero"], "E19");
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }

    #[test]
    fn test_the_default_parent_fits_the_four_enclaves_the_readme_promises() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("four");
        for _ in 0..4 {
            sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 256"));
        }
        assert_eq!(
            sandbox
                .json(&["describe-enclaves"])
                .as_array()
                .unwrap()
                .len(),
            4
        );
        let stderr = sandbox.fails(&run_args(path(&eif), "--cpu-count 2 --memory 256"), "E28");
        assert!(stderr.contains("at most 4 enclaves"), "{stderr}");
    }

    #[test]
    fn test_parent_options_show_where_they_mean_something_and_work_on_either_side() {
        let sandbox = Sandbox::new();
        let help = |args: &[&str]| {
            let output = sandbox.nectl(args);
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        for command in [
            "explain",
            "build-eif",
            "describe-eif",
            "pcr",
            "build-initramfs",
        ] {
            let text = help(&[command, "--help"]);
            assert!(
                !text.contains("--socket"),
                "{command} shows --socket:\n{text}"
            );
            assert!(
                !text.contains("--device"),
                "{command} shows --device:\n{text}"
            );
        }
        let text = help(&["run-enclave", "--help"]);
        for option in ["--socket", "--device", "--backend", "--accel"] {
            assert!(text.contains(option), "run-enclave lacks {option}");
        }
        assert!(!help(&["describe-enclaves", "--help"]).contains("--backend"));
        let (eif, _) = sandbox.eif("either");
        let other = sandbox.path("other.sock");
        let ran = sandbox.json(&[
            "run-enclave",
            "--socket",
            path(&other),
            "--eif-path",
            path(&eif),
            "--cpu-count",
            "2",
            "--memory",
            "64",
        ]);
        let before = sandbox.json(&["--socket", path(&other), "describe-enclaves"]);
        assert_eq!(before[0]["EnclaveID"], ran["EnclaveID"]);
        let after = sandbox.json(&["describe-enclaves", "--socket", path(&other)]);
        assert_eq!(after, before);
        assert_eq!(
            sandbox.json(&["describe-enclaves"]),
            serde_json::json!([]),
            "not the default's"
        );
        sandbox.json(&["parent", "stop", "--socket", path(&other)]);
    }

    /// A minimal 64-bit ELF header with one program header: `PT_INTERP` (dynamically
    /// linked) or `PT_LOAD`.
    fn elf(dynamic: bool) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40] = if dynamic { 3 } else { 1 };
        elf
    }

    /// What build-enclave puts around an application, in the sandbox: a kernel, a static
    /// init and the vsock modules (stand-ins: the image is built, not booted).
    fn enclave_parts(sandbox: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
        let kernel = sandbox.path("bzImage");
        std::fs::write(&kernel, vec![0x4b; 4096]).unwrap();
        let init = sandbox.path("ne-init");
        std::fs::write(&init, elf(false)).unwrap();
        let modules = sandbox.path("modules");
        std::fs::create_dir_all(&modules).unwrap();
        for module in [
            "vsock.ko",
            "vmw_vsock_virtio_transport_common.ko",
            "vmw_vsock_virtio_transport.ko",
        ] {
            std::fs::write(modules.join(module), module).unwrap();
        }
        (kernel, init, modules)
    }

    #[test]
    fn test_build_enclave_makes_the_same_pcrs_from_the_same_root_without_docker() {
        let sandbox = Sandbox::new();
        let root = sandbox.path("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/app"), b"the application").unwrap();
        std::os::unix::fs::symlink("app", root.join("bin/alias")).unwrap();
        let (kernel, init, modules) = enclave_parts(&sandbox);
        let build = |output: &Path, init: &Path| {
            vec![
                "build-enclave".to_owned(),
                "--rootfs".to_owned(),
                path(&root).to_owned(),
                "--output-file".to_owned(),
                path(output).to_owned(),
                "--kernel".to_owned(),
                path(&kernel).to_owned(),
                "--init".to_owned(),
                path(init).to_owned(),
                "--modules".to_owned(),
                path(&modules).to_owned(),
                "--".to_owned(),
                "/bin/app".to_owned(),
                "--flag".to_owned(),
            ]
        };
        let run = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sandbox.json(&args)
        };
        let first = run(build(&sandbox.path("a.eif"), &init));
        let second = run(build(&sandbox.path("b.eif"), &init));
        assert_eq!(
            first["Measurements"], second["Measurements"],
            "same inputs, same PCRs"
        );
        assert_eq!(first["Command"], serde_json::json!(["/bin/app", "--flag"]));
        let described = sandbox.json(&["describe-eif", "--eif-path", path(&sandbox.path("a.eif"))]);
        assert_eq!(described["Measurements"], first["Measurements"]);

        let dynamic = sandbox.path("dynamic-init");
        std::fs::write(&dynamic, elf(true)).unwrap();
        let args = build(&sandbox.path("c.eif"), &dynamic);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = sandbox.fails(&args, "E48");
        assert!(stderr.contains("is dynamically linked"), "{stderr}");
        let mut args = build(&sandbox.path("d.eif"), &init);
        args.truncate(args.len() - 3);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = sandbox.fails(&args, "E48");
        assert!(stderr.contains("names no command"), "{stderr}");
    }

    #[test]
    fn test_describe_eif_of_a_signed_image_shows_pcr8_of_its_certificate() {
        let sandbox = Sandbox::new();
        let certificate = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../ne-eif/tests/fixtures/signing-cert.pem"),
        )
        .unwrap();
        let section = ne_eif::signature_section(&[ne_eif::PcrSignature {
            signing_certificate: certificate,
            signature: Vec::new(),
        }]);
        let (eif, _) = ne_eif::EifBuilder {
            kernel: vec![0x4b; 4096],
            cmdline: "console=ttyS0".to_owned(),
            ramdisks: vec![vec![0x52; 4096]],
            metadata: ne_eif::Metadata::new("signed", "1", "2026-12-01T00:00:00Z"),
            flags: 0,
        }
        .build_signed(&section)
        .unwrap();
        let path_eif = sandbox.path("signed.eif");
        std::fs::write(&path_eif, eif).unwrap();
        let described = sandbox.json(&["describe-eif", "--eif-path", path(&path_eif)]);
        assert_eq!(described["IsSigned"], true);
        assert_eq!(
            described["Measurements"]["PCR8"],
            "9b00460e9f1630079abe202eb32fc48eef15ea1ee542598e1725cfd3afdbca00f533f9cc78199b6ca7d55bd8f2118d88"
        );
        let unsigned = sandbox.eif("plain").1;
        assert!(unsigned.get("PCR8").is_none(), "{unsigned}");
    }

    #[test]
    fn test_sign_eif_signs_pcr0_and_describe_eif_checks_the_signature() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ne-eif/tests/fixtures");
        let certificate = fixtures.join("signing-cert.pem");
        let key = fixtures.join("signing-key.pem");
        let sandbox = Sandbox::new();
        let (eif, built) = sandbox.eif("tosign");
        let signed = sandbox.json(&[
            "sign-eif",
            "--eif-path",
            path(&eif),
            "--signing-certificate",
            path(&certificate),
            "--private-key",
            path(&key),
        ]);
        assert_eq!(
            signed["Measurements"]["PCR0"], built["PCR0"],
            "signing leaves PCR0"
        );
        let described = sandbox.json(&["describe-eif", "--eif-path", path(&eif)]);
        assert_eq!(described["IsSigned"], true);
        assert_eq!(described["SignatureCheck"], true);
        assert_eq!(
            described["Measurements"]["PCR8"],
            sandbox.json(&["pcr", "--signing-certificate", path(&certificate)])["PCR8"]
        );
        // Signed again, the image keeps one signature.
        sandbox.json(&[
            "sign-eif",
            "--eif-path",
            path(&eif),
            "--signing-certificate",
            path(&certificate),
            "--private-key",
            path(&key),
        ]);
        let sections =
            sandbox.json(&["describe-eif", "--eif-path", path(&eif)])["Sections"].clone();
        let signatures = sections
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Type"] == "signature")
            .count();
        assert_eq!(signatures, 1, "{sections}");
        // A key that is not the certificate's is refused, and the image is untouched.
        let before = std::fs::read(&eif).unwrap();
        let stderr = sandbox.fails(
            &[
                "sign-eif",
                "--eif-path",
                path(&eif),
                "--signing-certificate",
                path(&certificate),
                "--private-key",
                path(&certificate),
            ],
            "E60",
        );
        assert!(stderr.contains("private key"), "{stderr}");
        assert_eq!(std::fs::read(&eif).unwrap(), before);
    }

    /// An OCI image layout archive: one gzip layer of `files` and a config running
    /// `command`, as `skopeo copy … oci-archive:` writes one.
    fn oci_archive(files: &[(&str, &[u8])], command: &[&str]) -> Vec<u8> {
        use sha2::Digest;
        use std::io::Write;
        let tar = |entries: &[(&str, &[u8])]| {
            let mut builder = tar::Builder::new(Vec::new());
            for (path, data) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_mode(0o755);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            builder.into_inner().unwrap()
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar(files)).unwrap();
        let layer = gz.finish().unwrap();
        let config = serde_json::json!({ "config": { "Entrypoint": command } }).to_string();
        let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": { "digest": digest(config.as_bytes()) },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer) }],
        })
        .to_string();
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{ "digest": digest(manifest.as_bytes()) }] })
            .to_string();
        let blob = |bytes: &[u8]| format!("blobs/sha256/{}", &digest(bytes)[7..]);
        let (layer_path, config_path, manifest_path) = (
            blob(&layer),
            blob(config.as_bytes()),
            blob(manifest.as_bytes()),
        );
        tar(&[
            ("index.json", index.as_bytes()),
            (&layer_path, &layer),
            (&config_path, config.as_bytes()),
            (&manifest_path, manifest.as_bytes()),
        ])
    }

    #[test]
    fn test_build_enclave_reads_an_oci_archive_without_a_daemon() {
        let sandbox = Sandbox::new();
        let archive = sandbox.path("app.tar");
        std::fs::write(
            &archive,
            oci_archive(&[("usr/bin/app", b"the app")], &["/usr/bin/app", "--serve"]),
        )
        .unwrap();
        let (kernel, init, modules) = enclave_parts(&sandbox);
        let output = sandbox.path("app.eif");
        let built = sandbox.json(&[
            "build-enclave",
            "--oci-archive",
            path(&archive),
            "--output-file",
            path(&output),
            "--kernel",
            path(&kernel),
            "--init",
            path(&init),
            "--modules",
            path(&modules),
        ]);
        assert_eq!(
            built["Command"],
            serde_json::json!(["/usr/bin/app", "--serve"])
        );
        let described = sandbox.json(&["describe-eif", "--eif-path", path(&output)]);
        assert_eq!(described["Measurements"], built["Measurements"]);
        let stderr = sandbox.fails(
            &[
                "build-enclave",
                "--oci-archive",
                path(&kernel),
                "--output-file",
                path(&output),
                "--kernel",
                path(&kernel),
                "--init",
                path(&init),
                "--modules",
                path(&modules),
            ],
            "E48",
        );
        assert!(stderr.contains("cannot read the image"), "{stderr}");
    }

    #[test]
    fn test_memory_that_is_not_whole_hugepages_is_rounded_up_as_nitro_cli_does() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("odd");
        let ran = sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 65"));
        assert_eq!(ran["MemoryMiB"], 66, "{ran}");
        let described = sandbox.json(&["describe-enclaves"]);
        assert_eq!(described[0]["MemoryMiB"], 66, "{described}");
        let status = sandbox.json(&["parent", "status"]);
        assert_eq!(
            status["HugepagesTotalMiB"].as_u64().unwrap()
                - status["HugepagesFreeMiB"].as_u64().unwrap(),
            66,
            "33 hugepages are the enclave's: {status}"
        );
    }

    #[test]
    fn test_enclave_that_crashes_disappears_from_describe() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("crashy");
        sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        let ended = sandbox.json(&["parent", "end-enclave", "--enclave", "crashy", "--crash"]);
        assert_eq!(ended["Ended"], true);
        assert_eq!(ended["EventSeen"], true, "the driver saw POLLHUP");
        assert_eq!(sandbox.json(&["describe-enclaves"]), serde_json::json!([]));
        let status = sandbox.json(&["parent", "status"]);
        assert_eq!(
            status["HugepagesFreeMiB"], status["HugepagesTotalMiB"],
            "its memory came back"
        );
    }

    /// Starts `nectl parent run ARGS` in the foreground on the sandbox's socket.
    fn start_parent(sandbox: &Sandbox, args: &[&str]) -> Child {
        let child = Command::new(env!("CARGO_BIN_EXE_nectl"))
            .args(["parent", "run"])
            .args(args)
            .env("NECTL_SOCKET", sandbox.socket())
            .env("NECTL_BACKEND", "sim")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(sandbox.socket()).is_err() {
            assert!(Instant::now() < deadline, "the parent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    #[test]
    fn test_four_enclaves_run_and_the_fifth_is_refused() {
        let sandbox = Sandbox::new();
        let mut parent = start_parent(&sandbox, &["--cores", "6", "--threads", "1"]);
        let (eif, _) = sandbox.eif("many");
        let eif = path(&eif);
        for _ in 0..4 {
            sandbox.json(&run_args(eif, "--cpu-count 1 --memory 64"));
        }
        let stderr = sandbox.fails(&run_args(eif, "--cpu-count 1 --memory 64"), "E28");
        assert!(stderr.contains("at most 4 enclaves"), "{stderr}");
        let names: Vec<String> = sandbox
            .json(&["describe-enclaves"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["EnclaveName"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["many", "many_1", "many_2", "many_3"]);
        sandbox.json(&["parent", "stop"]);
        assert!(parent.wait().unwrap().success());
        assert!(!sandbox.socket().exists(), "the socket is removed on stop");
    }

    #[test]
    fn test_an_arm64_numbered_parent_gives_an_enclave_adjacent_siblings() {
        let sandbox = Sandbox::new();
        let mut parent = start_parent(
            &sandbox,
            &["--cores", "4", "--threads", "2", "--cpu-numbering", "arm64"],
        );
        let status = sandbox.json(&["parent", "status"]);
        assert_eq!(
            status["CpuPool"],
            serde_json::json!([2, 3, 4, 5, 6, 7]),
            "{status}"
        );
        assert_eq!(
            status["Cores"],
            serde_json::json!(["0-1", "2-3", "4-5", "6-7"])
        );
        let (eif, _) = sandbox.eif("graviton");
        let ran = sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        assert_eq!(
            ran["CPUIDs"],
            serde_json::json!([2, 3]),
            "one core: two adjacent CPUs"
        );
        sandbox.json(&["parent", "stop"]);
        assert!(parent.wait().unwrap().success());
    }

    #[test]
    fn test_second_parent_on_the_same_socket_is_refused() {
        let sandbox = Sandbox::new();
        let mut parent = start_parent(&sandbox, &[]);
        let output = Command::new(env!("CARGO_BIN_EXE_nectl"))
            .args(["parent", "run"])
            .env("NECTL_SOCKET", sandbox.socket())
            .env("NECTL_BACKEND", "sim")
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("[E39]"));
        sandbox.json(&["parent", "stop"]);
        assert!(parent.wait().unwrap().success());
    }

    #[test]
    fn test_commands_without_a_parent_say_so() {
        let sandbox = Sandbox::new();
        assert_eq!(sandbox.json(&["describe-enclaves"]), serde_json::json!([]));
        assert_eq!(
            sandbox.json(&["terminate-enclave", "--all"]),
            serde_json::json!([])
        );
        sandbox.fails(&["terminate-enclave", "--enclave-name", "x"], "E39");
        assert_eq!(sandbox.json(&["parent", "stop"])["Stopped"], false);
        assert_eq!(sandbox.json(&["parent", "status"])["Running"], false);
    }

    #[test]
    fn test_after_kill_9_of_the_parent_commands_see_no_parent_and_a_new_one_starts() {
        let sandbox = Sandbox::new();
        let mut parent = start_parent(&sandbox, &[]);
        let (eif, _) = sandbox.eif("again");
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert!(
            sandbox.socket().exists(),
            "a killed parent leaves its socket file"
        );
        assert_eq!(sandbox.json(&["describe-enclaves"]), serde_json::json!([]));
        assert_eq!(
            sandbox.json(&["terminate-enclave", "--all"]),
            serde_json::json!([])
        );
        assert_eq!(sandbox.json(&["parent", "status"])["Running"], false);
        assert_eq!(sandbox.json(&["parent", "stop"])["Stopped"], false);
        let ran = sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        assert_eq!(
            ran["EnclaveName"], "again",
            "a new parent replaced the stale socket"
        );
    }

    #[test]
    fn test_sigterm_stops_the_parent_and_removes_its_socket() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("term");
        sandbox.json(&run_args(path(&eif), "--cpu-count 2 --memory 64"));
        let pid = sandbox.json(&["parent", "status"])["ProcessID"]
            .as_u64()
            .unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandbox.socket().exists() {
            assert!(Instant::now() < deadline, "the socket is still there");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            sandbox.log().contains("stopping on a signal"),
            "{}",
            sandbox.log()
        );
        assert!(
            sandbox.log().contains("enclave terminated"),
            "{}",
            sandbox.log()
        );
    }

    #[test]
    fn test_concurrent_run_enclave_without_a_parent_all_succeed() {
        let sandbox = Sandbox::new();
        let (eif, _) = sandbox.eif("together");
        let eif = path(&eif).to_owned();
        let outputs: Vec<Output> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..3)
                .map(|i| {
                    let sandbox = &sandbox;
                    let eif = eif.clone();
                    scope.spawn(move || {
                        let name = format!("e{i}");
                        sandbox.nectl(&run_args(
                            &eif,
                            &format!("--cpu-count 2 --memory 64 --enclave-name {name}"),
                        ))
                    })
                })
                .collect();
            runs.into_iter().map(|run| run.join().unwrap()).collect()
        });
        for output in &outputs {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let list = sandbox.json(&["describe-enclaves"]);
        assert_eq!(
            list.as_array().unwrap().len(),
            3,
            "one parent holds all three"
        );
        // The parents that lost the race are gone: once the winner stops, none is left
        // to take the socket over.
        sandbox.json(&["parent", "stop"]);
        let socket = sandbox.socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !parents_on(&socket).is_empty() {
            assert!(
                Instant::now() < deadline,
                "parents left on the socket: {:?}",
                parents_on(&socket)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `nectl parent run` processes serving `socket`.
    fn parents_on(socket: &Path) -> Vec<u32> {
        let wanted = format!("--socket\0{}\0", socket.display());
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
                (cmdline.contains("parent\0run") && cmdline.contains(&wanted)).then_some(pid)
            })
            .collect()
    }
}
