// SPDX-License-Identifier: Apache-2.0
//! The server on a real socket, driven by rust-vmm's `vfio_user::Client` as QEMU would
//! drive it: region info, config space, eventfds through SET_IRQS, DMA maps, the Linux
//! probe, commands answered on the eventfd, hostile requests, and a disconnect.

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::path::Path;
    use std::thread;
    use std::time::{Duration, Instant};

    use ne_abi::{regs, Command};
    use ne_vfio_user::control::{ControlRequest, FaultKind};
    use ne_vfio_user::{default_device_config, NeServer};
    use vfio_bindings::bindings::vfio::{
        VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_BAR3_REGION_INDEX as BAR3,
        VFIO_PCI_CONFIG_REGION_INDEX as CONFIG, VFIO_PCI_MSIX_IRQ_INDEX,
    };
    use vfio_user::Client;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const GIB: u64 = 1 << 30;

    fn connect(socket: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if socket.exists() {
                if let Ok(client) = Client::new(socket) {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "the server did not listen");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn read_u32(client: &mut Client, region: u32, offset: u64) -> u32 {
        let mut bytes = [0; 4];
        client.region_read(region, offset, &mut bytes).unwrap();
        u32::from_le_bytes(bytes)
    }

    /// Rings `command` with `payload` and returns the reply's rc after vector 0 fired.
    fn command(client: &mut Client, reply: &EventFd, command: Command, payload: &[u8]) -> i32 {
        client.region_write(BAR3, regs::SEND_DATA, payload).unwrap();
        client
            .region_write(BAR3, regs::COMMAND, &command.number().to_le_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while reply.read().is_err() {
            assert!(Instant::now() < deadline, "no vector 0 for {command}");
            thread::sleep(Duration::from_millis(1));
        }
        read_u32(client, BAR3, regs::RECV_DATA).cast_signed()
    }

    /// Asks the control interface, returning its answer.
    fn call(
        control: &Path,
        request: &ControlRequest,
    ) -> Result<serde_json::Value, ne_vfio_user::control::ControlError> {
        ne_vfio_user::control::call(control, request).unwrap()
    }

    fn le(fields: &[u64]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn test_client_probes_device_and_runs_commands_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let shared = server.shared();
        let control = dir.path().join("control.sock");
        ne_vfio_user::control::spawn(&control, server.shared()).unwrap();
        let serving = thread::spawn(move || server.serve_one());
        let mut client = connect(&socket);

        assert_eq!(client.region(BAR3).unwrap().size, 0x2000);
        assert_eq!(read_u32(&mut client, CONFIG, 0), 0xe4c1_1d0f);

        let vectors = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let fds: Vec<i32> = vectors.iter().map(AsRawFd::as_raw_fd).collect();
        client
            .set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                2,
                &fds,
            )
            .unwrap();
        let ram = tempfile::tempfile().unwrap();
        ram.set_len(2 * GIB).unwrap();
        client.dma_map(0, 0, 2 * GIB, ram.as_raw_fd()).unwrap();

        // The Linux probe.
        client.region_write(BAR3, regs::ENABLE, &[0]).unwrap();
        let mut enable = [0xFF];
        client.region_read(BAR3, regs::ENABLE, &mut enable).unwrap();
        assert_eq!(enable, [0]);
        client
            .region_write(BAR3, regs::VERSION, &1u16.to_le_bytes())
            .unwrap();
        assert_eq!(read_u32(&mut client, BAR3, regs::VERSION) & 0xFFFF, 1);
        client.region_write(BAR3, regs::ENABLE, &[1]).unwrap();
        assert_eq!(
            vectors[0].read().ok(),
            None,
            "no vector before the first command"
        );

        assert_eq!(
            command(&mut client, &vectors[0], Command::SlotAlloc, &[0]),
            0
        );
        let uid = u64::from(read_u32(&mut client, BAR3, regs::RECV_DATA + 8));
        assert_ne!(uid, 0);
        assert_eq!(
            command(
                &mut client,
                &vectors[0],
                Command::SlotAddMem,
                &le(&[uid, GIB, 64 << 20])
            ),
            0
        );
        assert_eq!(
            command(
                &mut client,
                &vectors[0],
                Command::SlotAddMem,
                &le(&[uid, 3 * GIB, 2 << 20])
            ),
            -14,
            "memory the guest does not have is refused with EFAULT"
        );

        assert_eq!(shared.device().slots().len(), 1);

        // The control interface sees the slot and the history, and injects a fault.
        let slots = call(&control, &ControlRequest::Slots).unwrap();
        assert_eq!(slots[0]["State"], "INIT");
        assert_eq!(slots[0]["Regions"], serde_json::json!([[GIB, 64 << 20]]));
        let history = call(&control, &ControlRequest::History).unwrap();
        let names: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Command"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["SLOT_ALLOC", "SLOT_ADD_MEM", "SLOT_ADD_MEM"]);
        let fault = ControlRequest::Fault {
            command: Some("SLOT_ALLOC".to_owned()),
            count: 1,
            action: FaultKind::Fail(-12),
        };
        call(&control, &fault).unwrap();
        assert_eq!(
            command(&mut client, &vectors[0], Command::SlotAlloc, &[0]),
            -12
        );
        call(
            &control,
            &ControlRequest::End {
                slot_uid: uid,
                crash: true,
            },
        )
        .unwrap_err();

        drop(client);
        serving.join().unwrap().unwrap();
        assert!(
            shared.device().slots().is_empty(),
            "the disconnect tore every slot down"
        );
        assert!(!socket.exists());
    }

    /// A raw vfio-user message: a 16-byte header, then `body`.
    fn message(id: u16, command: u16, body: &[u8]) -> Vec<u8> {
        let size = u32::try_from(16 + body.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&command.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // flags: command
        out.extend_from_slice(&0u32.to_le_bytes()); // error
        out.extend_from_slice(body);
        out
    }

    /// Sends `request` and returns the reply header's flags and error.
    fn exchange(stream: &mut std::os::unix::net::UnixStream, request: &[u8]) -> (u32, u32) {
        use std::io::{Read, Write};
        stream.write_all(request).unwrap();
        let mut header = [0u8; 16];
        stream.read_exact(&mut header).unwrap();
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        (word(8), word(12))
    }

    const REGION_READ: u16 = 9;
    const REPLY_ERROR: u32 = 1 << 5;

    fn region_read(region: u32, offset: u64, count: u32) -> Vec<u8> {
        let mut body = offset.to_le_bytes().to_vec();
        body.extend_from_slice(&region.to_le_bytes());
        body.extend_from_slice(&count.to_le_bytes());
        message(1, REGION_READ, &body)
    }

    #[test]
    fn test_hostile_messages_get_errors_and_a_disconnect_resets_for_the_next_client() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let shared = server.shared();
        let server = std::sync::Arc::new(server);
        let first = {
            let server = std::sync::Arc::clone(&server);
            thread::spawn(move || server.serve_one())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            if let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) {
                break stream;
            }
            assert!(Instant::now() < deadline, "the server did not listen");
            thread::sleep(Duration::from_millis(10));
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let (flags, _) = exchange(&mut stream, &region_read(BAR3, 0x2000 - 4, 8));
        assert_ne!(flags & REPLY_ERROR, 0, "a read past BAR 3 is an error");
        let (flags, _) = exchange(&mut stream, &region_read(5, 0, 4));
        assert_ne!(
            flags & REPLY_ERROR,
            0,
            "a region the device lacks is an error"
        );
        let (flags, _) = exchange(&mut stream, &region_read(CONFIG, u64::MAX - 1, 4));
        assert_ne!(flags & REPLY_ERROR, 0, "a wrapping offset is an error");
        let (flags, _) = exchange(&mut stream, &message(2, 0x7777, &[]));
        assert_ne!(flags & REPLY_ERROR, 0, "an unknown command is an error");
        let (flags, _) = exchange(&mut stream, &region_read(CONFIG, 0, 4));
        assert_eq!(flags & REPLY_ERROR, 0, "the connection still works");

        // A truncated message, then the client goes away.
        use std::io::Write;
        stream
            .write_all(&message(3, REGION_READ, &[0; 4])[..12])
            .unwrap();
        drop(stream);
        first.join().unwrap().unwrap();

        // The next client finds a fresh device.
        let second = {
            let server = std::sync::Arc::clone(&server);
            thread::spawn(move || server.serve_one())
        };
        let mut client = connect(&socket);
        assert_eq!(read_u32(&mut client, CONFIG, 0), 0xe4c1_1d0f);
        assert!(!shared.device().is_enabled());
        drop(client);
        second.join().unwrap().unwrap();
    }

    /// A small valid EIF.
    fn sample_eif() -> Vec<u8> {
        ne_eif::EifBuilder {
            kernel: vec![0x5a; 4096],
            cmdline: "console=ttyS0".to_owned(),
            ramdisks: vec![vec![7; 4096]],
            metadata: ne_eif::Metadata::new("sample", "1", "2026-12-01T00:00:00Z"),
            flags: 0,
        }
        .build()
        .unwrap()
        .0
    }

    /// Guest RAM of `len` bytes whose first 64 MiB hold `image` at 8 MiB, as a parent that
    /// donates them in order would leave it.
    fn ram_with(len: u64, image: &[u8]) -> std::fs::File {
        use std::os::unix::fs::FileExt;
        let ram = tempfile::tempfile().unwrap();
        ram.set_len(len).unwrap();
        ram.write_all_at(image, 8 << 20).unwrap();
        ram
    }

    /// A client with both vectors' eventfds, RAM mapped, the device enabled, and one slot set
    /// up with 64 MiB at 0 and vCPU 1, ready to start.
    struct ReadyClient {
        client: Client,
        reply: EventFd,
        _event: EventFd,
        _ram: std::fs::File,
    }

    /// A client connected to `socket` with both vectors' eventfds set.
    fn client_with_vectors(socket: &Path) -> (Client, EventFd, EventFd) {
        let mut client = connect(socket);
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
        (client, reply, event)
    }

    fn ready_client(socket: &Path, image: &[u8]) -> ReadyClient {
        ready_client_at(socket, image, 0)
    }

    /// [`ready_client`] with the guest's RAM mapped at `base` (file offset 0 there) and the
    /// slot's 64 MiB at `base`.
    fn ready_client_at(socket: &Path, image: &[u8], base: u64) -> ReadyClient {
        let (mut client, reply, event) = client_with_vectors(socket);
        let ram = ram_with(GIB, image);
        client.dma_map(0, base, GIB, ram.as_raw_fd()).unwrap();
        client.region_write(BAR3, regs::ENABLE, &[1]).unwrap();
        assert_eq!(command(&mut client, &reply, Command::SlotAlloc, &[0]), 0);
        let uid = u64::from(read_u32(&mut client, BAR3, regs::RECV_DATA + 8));
        let add_mem = le(&[uid, base, 64 << 20]);
        assert_eq!(
            command(&mut client, &reply, Command::SlotAddMem, &add_mem),
            0
        );
        let add_vcpu = le(&[uid, 1]);
        assert_eq!(
            command(&mut client, &reply, Command::SlotAddVcpu, &add_vcpu),
            0
        );
        client
            .region_write(BAR3, regs::SEND_DATA, &le(&[uid, 0, 0]))
            .unwrap();
        ReadyClient {
            client,
            reply,
            _event: event,
            _ram: ram,
        }
    }

    fn ring_start(client: &mut Client) {
        let start = Command::EnclaveStart.number().to_le_bytes();
        client.region_write(BAR3, regs::COMMAND, &start).unwrap();
    }

    /// A server whose starts take `delay` on a clock the test moves; returns the clock and
    /// the notifier that wakes the server's events pump.
    fn delayed_server(
        socket: &Path,
        delay: Duration,
    ) -> (
        NeServer,
        ne_hypervisor::ManualClock,
        ne_hypervisor::Notifier,
    ) {
        let clock = ne_hypervisor::ManualClock::default();
        let backend_clock = clock.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = NeServer::with_backend(socket, default_device_config(), move |notifier| {
            tx.send(notifier).unwrap();
            Ok(Box::new(ne_hypervisor::Delayed::new(
                ne_device::SimulatedHypervisor::new(),
                backend_clock,
                delay,
            )))
        })
        .unwrap();
        (server, clock, rx.recv().unwrap())
    }

    /// Waits for vector 0, failing after a generous deadline.
    fn wait_reply(reply: &EventFd) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while reply.read().is_err() {
            assert!(Instant::now() < deadline, "no vector 0");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn test_slow_start_answers_config_and_registers_while_pending_and_replies_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let delay = Duration::from_secs(30);
        let (server, clock, notifier) = delayed_server(&socket, delay);
        let serving = thread::spawn(move || server.serve_one());
        let ReadyClient {
            mut client, reply, ..
        } = ready_client(&socket, &sample_eif());

        ring_start(&mut client);
        assert_eq!(read_u32(&mut client, CONFIG, 0), 0xe4c1_1d0f);
        let mut enable = [0];
        client.region_read(BAR3, regs::ENABLE, &mut enable).unwrap();
        assert_eq!(enable, [1], "registers answer while the start is pending");
        notifier.notify();
        reply.read().expect_err("no reply before the start is due");

        clock.advance(delay);
        notifier.notify();
        wait_reply(&reply);
        assert_eq!(
            read_u32(&mut client, BAR3, regs::RECV_DATA),
            0,
            "ENCLAVE_START rc"
        );
        assert!(
            read_u32(&mut client, BAR3, regs::RECV_DATA + 16) >= 4,
            "a CID came back"
        );
        drop(client);
        serving.join().unwrap().unwrap();
    }

    #[test]
    fn test_a_reconnected_client_still_gets_delayed_starts() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let delay = Duration::from_secs(30);
        let (server, clock, notifier) = delayed_server(&socket, delay);
        let server = std::sync::Arc::new(server);
        let first = {
            let server = std::sync::Arc::clone(&server);
            thread::spawn(move || server.serve_one())
        };
        drop(ready_client(&socket, &sample_eif()));
        first.join().unwrap().unwrap();

        let second = {
            let server = std::sync::Arc::clone(&server);
            thread::spawn(move || server.serve_one())
        };
        let ReadyClient {
            mut client, reply, ..
        } = ready_client(&socket, &sample_eif());
        ring_start(&mut client);
        notifier.notify();
        assert!(
            server.shared().device().is_busy(),
            "the start after a reconnect is still in progress"
        );
        reply.read().unwrap_err();
        clock.advance(delay);
        notifier.notify();
        wait_reply(&reply);
        assert_eq!(read_u32(&mut client, BAR3, regs::RECV_DATA), 0);
        drop(client);
        second.join().unwrap().unwrap();
    }

    #[test]
    fn test_start_on_garbage_at_8_mib_is_refused_with_enoexec() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let shared = server.shared();
        let serving = thread::spawn(move || server.serve_one());
        let garbage: Vec<u8> = (0..12 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        let ReadyClient {
            mut client, reply, ..
        } = ready_client(&socket, &garbage);
        ring_start(&mut client);
        wait_reply(&reply);
        assert_eq!(
            read_u32(&mut client, BAR3, regs::RECV_DATA).cast_signed(),
            -8
        );
        let reason = shared.log().last_rejection().unwrap().error.to_string();
        assert!(reason.contains("invalid enclave image"), "{reason}");
        drop(client);
        serving.join().unwrap().unwrap();
    }

    #[test]
    fn test_start_of_a_valid_image_in_the_dma_mapped_ram_runs() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let shared = server.shared();
        let serving = thread::spawn(move || server.serve_one());
        let image = sample_eif();
        let ReadyClient {
            mut client, reply, ..
        } = ready_client(&socket, &image);
        ring_start(&mut client);
        wait_reply(&reply);
        assert_eq!(read_u32(&mut client, BAR3, regs::RECV_DATA), 0);
        let expected = ne_eif::Eif::parse(&image).unwrap().measurements();
        let device = shared.device();
        let loaded = device.hypervisor().image(1).expect("the image was loaded");
        assert_eq!(loaded.measurements, expected);
        drop(device);
        drop(client);
        serving.join().unwrap().unwrap();
    }

    /// Where RAM starts on arm64's `virt` machine: file offset = address − this.
    const VIRT_RAM_BASE: u64 = 0x4000_0000;

    /// A client with both vectors' eventfds and `ram` mapped at `VIRT_RAM_BASE`.
    fn virt_client(socket: &Path, ram: &std::fs::File) -> (Client, EventFd, EventFd) {
        let (mut client, reply, event) = client_with_vectors(socket);
        client
            .dma_map(0, VIRT_RAM_BASE, GIB, ram.as_raw_fd())
            .unwrap();
        (client, reply, event)
    }

    #[test]
    fn test_a_vfio_reset_keeps_the_ram_map_so_memory_can_still_be_added() {
        // QEMU's `virt` sends its DMA maps once, before the machine reset that resets the
        // device, and never again: a reset that forgot them refused every region (EFAULT).
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let serving = thread::spawn(move || server.serve_one());
        let ram = ram_with(GIB, &[]);
        let (mut client, reply, _event) = virt_client(&socket, &ram);
        client.reset().unwrap();
        client.region_write(BAR3, regs::ENABLE, &[1]).unwrap();
        assert_eq!(command(&mut client, &reply, Command::SlotAlloc, &[0]), 0);
        let uid = u64::from(read_u32(&mut client, BAR3, regs::RECV_DATA + 8));
        let inside = le(&[uid, VIRT_RAM_BASE + (64 << 20), 2 << 20]);
        assert_eq!(
            command(&mut client, &reply, Command::SlotAddMem, &inside),
            0,
            "memory in the RAM mapped before the reset"
        );
        let outside = le(&[uid, 0, 2 << 20]);
        assert_eq!(
            command(&mut client, &reply, Command::SlotAddMem, &outside),
            -14,
            "memory outside every map is EFAULT"
        );
        drop(client);
        serving.join().unwrap().unwrap();
    }

    #[test]
    fn test_an_image_in_ram_mapped_at_1_gib_is_read_through_the_maps_offset() {
        // RAM at 0x4000_0000 with file offset 0: the image at guest 0x4000_0000 + 8 MiB is
        // at file offset 8 MiB. Nothing may assume that an address is a file offset.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ne.sock");
        let server = NeServer::new(&socket, default_device_config()).unwrap();
        let shared = server.shared();
        let serving = thread::spawn(move || server.serve_one());
        let image = sample_eif();
        let ReadyClient {
            mut client, reply, ..
        } = ready_client_at(&socket, &image, VIRT_RAM_BASE);
        ring_start(&mut client);
        wait_reply(&reply);
        assert_eq!(
            read_u32(&mut client, BAR3, regs::RECV_DATA),
            0,
            "ENCLAVE_START rc"
        );
        let uid = u64::from(read_u32(&mut client, BAR3, regs::RECV_DATA + 8));
        let expected = ne_eif::Eif::parse(&image).unwrap().measurements();
        let device = shared.device();
        let loaded = device
            .hypervisor()
            .image(uid)
            .expect("the image was loaded");
        assert_eq!(loaded.measurements, expected);
        drop(device);
        drop(client);
        serving.join().unwrap().unwrap();
    }
}
