// SPDX-License-Identifier: Apache-2.0
//! Compares ne-abi's layouts and constants with C: the device structs as declared from the
//! interface header (`tests/c/layout.c`), and the uapi as the system's
//! `<linux/nitro_enclaves.h>` defines it (`tests/c/uapi.c`), compiled with the system C
//! compiler (`$CC`, else `cc`).

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::mem::{offset_of, size_of};
    use std::path::{Path, PathBuf};
    use std::process::Command as Process;

    use ne_abi::uapi;
    use ne_abi::*;

    /// Compiles and runs `source`, returning its "name value" lines.
    fn c_values(source: &str) -> BTreeMap<String, u64> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let exe = out_dir.join(source.replace('.', "_"));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let status = Process::new(&cc)
            .arg("-Wall")
            .arg("-Werror")
            .arg("-o")
            .arg(&exe)
            .arg(manifest.join("tests/c").join(source))
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}; install gcc"));
        assert!(status.success(), "{cc} failed on {source}");
        let output = Process::new(&exe)
            .output()
            .expect("run the C layout program");
        assert!(output.status.success());
        String::from_utf8(output.stdout)
            .expect("utf-8 output")
            .lines()
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').expect("name value");
                (name.to_owned(), value.parse().expect("a number"))
            })
            .collect()
    }

    fn check(c: &BTreeMap<String, u64>, rust: &[(&str, u64)]) {
        assert_eq!(
            c.len(),
            rust.len(),
            "C printed {} values, Rust has {}",
            c.len(),
            rust.len()
        );
        for &(name, value) in rust {
            assert_eq!(c.get(name), Some(&value), "{name}");
        }
    }

    macro_rules! layout {
    ($c:literal, $ty:ty, [$($field:ident),*]) => {
        [
            (concat!("sizeof(", $c, ")"), size_of::<$ty>() as u64),
            $((concat!("offsetof(", $c, ".", stringify!($field), ")"), offset_of!($ty, $field) as u64),)*
        ]
    };
}

    #[test]
    fn test_device_structs_match_c_layout() {
        let c = c_values("layout.c");
        let rust: Vec<(&str, u64)> = [
            &layout!(
                "enclave_start_req",
                EnclaveStartReq,
                [slot_uid, enclave_cid, flags]
            )[..],
            &layout!("enclave_get_slot_req", EnclaveGetSlotReq, [enclave_cid]),
            &layout!("enclave_stop_req", EnclaveStopReq, [slot_uid]),
            &layout!("slot_alloc_req", SlotAllocReq, [unused]),
            &layout!("slot_free_req", SlotFreeReq, [slot_uid]),
            &layout!("slot_add_mem_req", SlotAddMemReq, [slot_uid, paddr, size]),
            &layout!(
                "slot_add_vcpu_req",
                SlotAddVcpuReq,
                [slot_uid, vcpu_id, padding]
            ),
            &layout!("slot_count_req", SlotCountReq, [unused]),
            &layout!("next_slot_req", NextSlotReq, [slot_uid]),
            &layout!("slot_info_req", SlotInfoReq, [slot_uid]),
            &layout!(
                "slot_add_bulk_vcpus_req",
                SlotAddBulkVcpusReq,
                [slot_uid, nr_vcpus]
            ),
            &layout!(
                "ne_pci_dev_cmd_reply",
                CmdReply,
                [
                    rc,
                    padding0,
                    slot_uid,
                    enclave_cid,
                    slot_count,
                    mem_regions,
                    mem_size,
                    nr_vcpus,
                    flags,
                    state,
                    padding1
                ]
            ),
        ]
        .concat();
        check(&c, &rust);
    }

    #[test]
    fn test_uapi_matches_system_header() {
        if !Path::new("/usr/include/linux/nitro_enclaves.h").exists() {
            let missing = "SKIPPED test_uapi_matches_system_header: \
                /usr/include/linux/nitro_enclaves.h is missing; install linux-libc-dev \
                (scripts/test-all.sh does)";
            // scripts/test-all.sh installs it and sets NE_REQUIRE_ALL: there, missing fails.
            assert!(std::env::var_os("NE_REQUIRE_ALL").is_none(), "{missing}");
            eprintln!("{missing}");
            return;
        }
        let c = c_values("uapi.c");
        let mut rust: Vec<(&str, u64)> = [
            &layout!(
                "ne_image_load_info",
                NeImageLoadInfo,
                [flags, memory_offset]
            )[..],
            &layout!(
                "ne_user_memory_region",
                NeUserMemoryRegion,
                [flags, memory_size, userspace_addr]
            ),
            &layout!(
                "ne_enclave_start_info",
                NeEnclaveStartInfo,
                [flags, enclave_cid]
            ),
        ]
        .concat();
        rust.extend([
            ("NE_CREATE_VM", u64::from(uapi::NE_CREATE_VM)),
            ("NE_ADD_VCPU", u64::from(uapi::NE_ADD_VCPU)),
            (
                "NE_GET_IMAGE_LOAD_INFO",
                u64::from(uapi::NE_GET_IMAGE_LOAD_INFO),
            ),
            (
                "NE_SET_USER_MEMORY_REGION",
                u64::from(uapi::NE_SET_USER_MEMORY_REGION),
            ),
            ("NE_START_ENCLAVE", u64::from(uapi::NE_START_ENCLAVE)),
            ("NE_EIF_IMAGE", uapi::EIF_IMAGE),
            ("NE_IMAGE_LOAD_MAX_FLAG_VAL", uapi::IMAGE_LOAD_MAX_FLAG_VAL),
            ("NE_DEFAULT_MEMORY_REGION", uapi::DEFAULT_MEMORY_REGION),
            (
                "NE_MEMORY_REGION_MAX_FLAG_VAL",
                uapi::MEMORY_REGION_MAX_FLAG_VAL,
            ),
            ("NE_ENCLAVE_PRODUCTION_MODE", uapi::ENCLAVE_PRODUCTION_MODE),
            ("NE_ENCLAVE_DEBUG_MODE", uapi::ENCLAVE_DEBUG_MODE),
            (
                "NE_ENCLAVE_START_MAX_FLAG_VAL",
                uapi::ENCLAVE_START_MAX_FLAG_VAL,
            ),
        ]);
        rust.extend(NeError::ALL.map(|e| (e.name(), u64::from(e.code()))));
        check(&c, &rust);
    }
}
