// SPDX-License-Identifier: Apache-2.0
//! Cross-checks with the reference implementation (`aws-nitro-enclaves-image-format`) on
//! the same files, in both directions: images we write, it reads; images it writes, we read.
//! Layout, CRC and PCR0/1/2 must agree.

mod common;

use std::io::Write;

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::EifBuilder as AwsBuilder;
use common::*;
use ne_eif::Eif;
use sha2::{Digest, Sha384};

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn test_reference_reader_accepts_our_images_with_same_crc_and_pcrs() {
    let dir = tempfile::tempdir().unwrap();
    for ramdisks in [1, 2, 3] {
        let (image, ours) = builder(ramdisks).build().unwrap();
        let path = write_temp(&dir, &format!("ours-{ramdisks}.eif"), &image);
        let mut reader = EifReader::from_eif(path.to_string_lossy().into_owned()).unwrap();
        assert_eq!(
            reader.eif_crc, reader.header.eif_crc32,
            "CRC ({ramdisks} ramdisks)"
        );
        let theirs = reader.get_measurements().unwrap();
        assert_eq!(theirs["PCR0"], ours.pcr0.to_string());
        assert_eq!(theirs["PCR1"], ours.pcr1.to_string());
        assert_eq!(theirs["PCR2"], ours.pcr2.to_string());
        // "HashAlgorithm" is the Debug form of the reference's hasher, which varies with
        // its sha2 version; we print nitro-cli's "Sha384 { ... }" and do not compare it.
        let metadata = reader
            .get_metadata()
            .expect("every metadata key is present");
        assert_eq!(metadata.img_name, "sample");
    }
}

#[test]
fn test_we_read_reference_images_with_same_pcrs() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write_temp(&dir, "bzImage", &blob(3, 7000));
    let ramdisks = [
        write_temp(&dir, "init.cpio", &blob(4, 4096)),
        write_temp(&dir, "app.cpio", &blob(5, 9000)),
    ];
    let info = EifIdentityInfo {
        img_name: "reference".to_owned(),
        img_version: "0.1".to_owned(),
        build_info: EifBuildInfo {
            build_time: "2026-11-26T00:00:00+00:00".to_owned(),
            build_tool: "test".to_owned(),
            build_tool_version: "0".to_owned(),
            img_os: "Linux".to_owned(),
            img_kernel: "6.12".to_owned(),
        },
        docker_info: serde_json::json!({}),
        custom_info: serde_json::json!({"purpose": "cross-check"}),
    };
    let mut builder = AwsBuilder::new(
        &kernel,
        "console=ttyS0".to_owned(),
        None,
        Sha384::new(),
        0,
        info,
    );
    for ramdisk in &ramdisks {
        builder.add_ramdisk(ramdisk);
    }
    let eif_path = dir.path().join("reference.eif");
    let mut file = std::fs::File::create(&eif_path).unwrap();
    let theirs = builder.write_to(&mut file);
    file.flush().unwrap();
    drop(file);

    let bytes = std::fs::read(&eif_path).unwrap();
    let eif = Eif::parse(&bytes).unwrap();
    let ours = eif.measurements();
    assert_eq!(theirs["PCR0"], ours.pcr0.to_string());
    assert_eq!(theirs["PCR1"], ours.pcr1.to_string());
    assert_eq!(theirs["PCR2"], ours.pcr2.to_string());
    assert_eq!(eif.metadata().unwrap().unwrap().image_name, "reference");
    assert_eq!(eif.ramdisks().count(), 2);
}
