// SPDX-License-Identifier: Apache-2.0
//! Writes ne-eif's cross-check fixtures with the reference implementation, in both
//! directions:
//!
//! - `reference-<n>.eif`: images the reference builder wrote (`n` ramdisks), with the PCRs
//!   it reported, in `reference.json`;
//! - `ours-<n>.eif`: images ne-eif wrote, with what the reference reader found in them
//!   (CRC check, PCRs, metadata), in `ours.json`.
//!
//! ne-eif's `tests/cross_check.rs` replays them without the reference crate. With
//! `--eif-build KERNEL CMDLINE OUT RAMDISK...` it builds one image with the reference
//! builder instead (as `eif_build` does), to run it with `nectl run-enclave`.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

/// Bytes that differ per `seed` and `len` (the same as ne-eif's test helper).
fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

fn identity(name: &str) -> EifIdentityInfo {
    EifIdentityInfo {
        img_name: name.to_owned(),
        img_version: "0.1".to_owned(),
        build_info: EifBuildInfo {
            build_time: "2026-11-26T00:00:00+00:00".to_owned(),
            build_tool: "ne-eif-reference".to_owned(),
            build_tool_version: "0".to_owned(),
            img_os: "Linux".to_owned(),
            img_kernel: "6.12".to_owned(),
        },
        docker_info: json!({}),
        custom_info: json!({"purpose": "cross-check"}),
    }
}

/// Builds with the reference builder; returns its PCRs.
fn reference_build(kernel: &Path, cmdline: &str, ramdisks: &[PathBuf], out: &Path, name: &str) -> Value {
    let mut builder = EifBuilder::new(kernel, cmdline.to_owned(), None, Sha384::new(), 0, identity(name));
    for ramdisk in ramdisks {
        builder.add_ramdisk(ramdisk);
    }
    let mut file = std::fs::File::create(out).expect("create the EIF");
    let measurements = builder.write_to(&mut file);
    file.flush().expect("write the EIF");
    json!({
        "PCR0": measurements["PCR0"],
        "PCR1": measurements["PCR1"],
        "PCR2": measurements["PCR2"],
    })
}

fn write_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).expect("the fixture directory");
    let scratch = std::env::temp_dir().join(format!("ne-eif-reference-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let kernel = scratch.join("bzImage");
    std::fs::write(&kernel, blob(3, 7000)).expect("kernel");
    let mut reference = serde_json::Map::new();
    let mut ours = serde_json::Map::new();
    for count in 1..=3usize {
        let ramdisks: Vec<PathBuf> = (0..count)
            .map(|i| {
                let path = scratch.join(format!("ramdisk{i}"));
                std::fs::write(&path, blob(4 + i as u8, 4096 + i * 904)).expect("ramdisk");
                path
            })
            .collect();
        let name = format!("reference-{count}.eif");
        let pcrs = reference_build(&kernel, "console=ttyS0", &ramdisks, &dir.join(&name), "reference");
        reference.insert(name, pcrs);

        let (image, _) = ne_eif::EifBuilder {
            kernel: blob(1, 5000),
            cmdline: "console=ttyS0 reboot=k panic=30".to_owned(),
            ramdisks: (0..count).map(|i| blob(10 + i as u8, 3000 + i * 17)).collect(),
            metadata: ne_eif::Metadata::new("sample", "1.0", "2026-11-26T00:00:00+00:00"),
            flags: 0,
        }
        .build()
        .expect("ne-eif builds");
        let name = format!("ours-{count}.eif");
        let path = dir.join(&name);
        std::fs::write(&path, &image).expect("write our image");
        let mut reader = EifReader::from_eif(path.to_string_lossy().into_owned()).expect("the reference reads ours");
        let measured = reader.get_measurements().expect("measurements");
        let metadata = reader.get_metadata().expect("every metadata key");
        ours.insert(
            name,
            json!({
                "CrcMatches": reader.eif_crc == reader.header.eif_crc32,
                "PCR0": measured["PCR0"],
                "PCR1": measured["PCR1"],
                "PCR2": measured["PCR2"],
                "ImageName": metadata.img_name,
            }),
        );
    }
    let pretty = |value: serde_json::Map<String, Value>| {
        serde_json::to_string_pretty(&Value::Object(value)).expect("JSON") + "\n"
    };
    std::fs::write(dir.join("reference.json"), pretty(reference)).expect("reference.json");
    std::fs::write(dir.join("ours.json"), pretty(ours)).expect("ours.json");
    let _ = std::fs::remove_dir_all(&scratch);
    println!("fixtures written to {}", dir.display());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, kernel, cmdline, out, ramdisks @ ..] if flag == "--eif-build" && !ramdisks.is_empty() => {
            let ramdisks: Vec<PathBuf> = ramdisks.iter().map(PathBuf::from).collect();
            let pcrs = reference_build(Path::new(kernel), cmdline, &ramdisks, Path::new(out), "eif-build");
            println!("{}", serde_json::to_string_pretty(&pcrs).expect("JSON"));
        }
        [dir] => write_fixtures(Path::new(dir)),
        _ => {
            eprintln!("usage: ne-eif-reference FIXTURE_DIR | --eif-build KERNEL CMDLINE OUT RAMDISK...");
            std::process::exit(2);
        }
    }
}
