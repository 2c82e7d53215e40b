// SPDX-License-Identifier: Apache-2.0
//! Reading, validating and measuring images; every way an image can be bad.

mod common;

#[cfg(test)]
mod tests {
    use crate::common::*;
    use ne_eif::format::{HEADER_SIZE, SECTION_HEADER_SIZE};
    use ne_eif::{Eif, EifError, SectionType};
    use proptest::prelude::*;

    #[test]
    fn test_built_image_parses_with_same_parts_and_measurements() {
        let builder = builder(2);
        let (image, measurements) = builder.build().unwrap();
        let eif = Eif::parse(&image).unwrap();
        assert_eq!(eif.kernel(), builder.kernel.as_slice());
        assert_eq!(eif.cmdline(), builder.cmdline.as_bytes());
        assert_eq!(
            eif.ramdisks().collect::<Vec<_>>(),
            [&builder.ramdisks[0][..], &builder.ramdisks[1][..]]
        );
        assert_eq!(eif.measurements(), measurements);
        assert_eq!(eif.metadata().unwrap(), Some(builder.metadata.clone()));
        assert_eq!(eif.header().image_len(), Some(image.len() as u64));
        let kinds: Vec<SectionType> = eif.sections().iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SectionType::Kernel,
                SectionType::Cmdline,
                SectionType::Metadata,
                SectionType::Ramdisk,
                SectionType::Ramdisk
            ]
        );
    }

    #[test]
    fn test_pcr2_of_single_ramdisk_is_extended_empty_hash() {
        let (_, measurements) = builder(1).build().unwrap();
        // SHA-384(0^48 || SHA-384("")), the value every single-ramdisk image has (computed
        // independently with Python's hashlib).
        assert_eq!(
        measurements.pcr2.to_string(),
        "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"
    );
    }

    #[test]
    fn test_pcrs_change_with_each_part() {
        let base = builder(2).build().unwrap().1;
        let mut other = builder(2);
        other.ramdisks[1][0] ^= 1;
        let changed = other.build().unwrap().1;
        assert_ne!(base.pcr0, changed.pcr0);
        assert_eq!(
            base.pcr1, changed.pcr1,
            "PCR1 does not cover the application ramdisk"
        );
        assert_ne!(base.pcr2, changed.pcr2);
    }

    #[test]
    fn test_flipped_byte_is_a_crc_error() {
        let (mut image, _) = builder(1).build().unwrap();
        let last = image.len() - 1;
        image[last] ^= 0xFF;
        assert!(matches!(Eif::parse(&image), Err(EifError::Crc { .. })));
    }

    #[test]
    fn test_bad_magic_is_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        image[0] = b'x';
        assert_eq!(Eif::parse(&image), Err(EifError::Magic(*b"xeif")));
    }

    #[test]
    fn test_unsupported_version_is_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        image[4..6].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(Eif::parse(&image), Err(EifError::Version(5)));
    }

    #[test]
    fn test_truncated_image_is_rejected() {
        let (image, _) = builder(1).build().unwrap();
        assert!(matches!(
            Eif::parse(&image[..100]),
            Err(EifError::Truncated { .. })
        ));
        assert!(matches!(
            Eif::parse(&image[..image.len() - 1]),
            Err(EifError::Truncated { .. })
        ));
    }

    #[test]
    fn test_trailing_bytes_are_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        image.extend_from_slice(&[0; 3]);
        assert_eq!(Eif::parse(&image), Err(EifError::TrailingBytes(3)));
    }

    #[test]
    fn test_zero_and_too_many_sections_are_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        image[26..28].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(Eif::parse(&image), Err(EifError::SectionCount(0)));
        image[26..28].copy_from_slice(&33u16.to_be_bytes());
        assert_eq!(Eif::parse(&image), Err(EifError::SectionCount(33)));
    }

    #[test]
    fn test_unknown_section_type_is_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        image[HEADER_SIZE..HEADER_SIZE + 2].copy_from_slice(&9u16.to_be_bytes());
        assert!(matches!(
            Eif::parse(&image),
            Err(EifError::UnknownSection { index: 0, kind: 9 })
        ));
    }

    #[test]
    fn test_section_header_disagreeing_with_table_is_rejected() {
        let (mut image, _) = builder(1).build().unwrap();
        let size_at = HEADER_SIZE + 4;
        image[size_at + 7] ^= 1;
        assert!(matches!(
            Eif::parse(&image),
            Err(EifError::Layout { index: 0, .. })
        ));
    }

    #[test]
    fn test_image_without_ramdisk_is_rejected_when_built() {
        assert_eq!(
            builder(0).build().unwrap_err(),
            ne_eif::BuildError::NoRamdisk
        );
    }

    #[test]
    fn test_unparsable_metadata_is_rejected() {
        let mut b = builder(1);
        b.metadata.image_name = "x".to_owned();
        let (mut image, _) = b.build().unwrap();
        // Corrupt the metadata JSON's first byte, then fix the CRC so only the JSON is wrong.
        let eif = Eif::parse(&image).unwrap();
        let metadata_at = usize::try_from(eif.sections()[2].offset).unwrap() + SECTION_HEADER_SIZE;
        image[metadata_at] = b'[';
        let mut crc = crc32fast::Hasher::new();
        crc.update(&image[..HEADER_SIZE - 4]);
        crc.update(&image[HEADER_SIZE..]);
        let value = crc.finalize();
        image[HEADER_SIZE - 4..HEADER_SIZE].copy_from_slice(&value.to_be_bytes());
        assert!(matches!(Eif::parse(&image), Err(EifError::Metadata(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn test_parse_never_panics_on_mutated_images(
            flips in proptest::collection::vec((0usize..700, any::<u8>()), 1..8),
            cut in 0usize..10_000,
        ) {
            let (mut image, _) = builder(2).build().unwrap();
            for (at, value) in flips {
                if let Some(byte) = image.get_mut(at) {
                    *byte = value;
                }
            }
            image.truncate(cut.max(1));
            let _ = Eif::parse(&image);
        }
    }
}
