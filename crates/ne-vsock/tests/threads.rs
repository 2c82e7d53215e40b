// SPDX-License-Identifier: Apache-2.0
//! Threads the router starts end with what they serve. Alone in its test binary, so the
//! count of this process's threads is the router's.

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ne_vsock::Router;

    /// This process's threads whose name starts with `prefix` (Linux cuts names to 15 bytes).
    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with(prefix))
            .count()
    }

    #[test]
    fn test_removed_enclaves_leave_no_connect_socket_thread() {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(Some(dir.path().to_owned()));
        for cid in 16..36 {
            let mux = router.add_enclave(cid).unwrap();
            router.remove_enclave(cid, &mux);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads_named("ne-vsock-conn") > 0 {
            assert!(
                Instant::now() < deadline,
                "{} connect-socket threads outlived their enclaves",
                threads_named("ne-vsock-conn")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
