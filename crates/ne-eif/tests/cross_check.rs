// SPDX-License-Identifier: Apache-2.0
//! Cross-checks with the reference implementation (`aws-nitro-enclaves-image-format`), in
//! both directions, from fixtures it wrote (`crates/ne-eif-reference`, an opt-in crate
//! outside the workspace, so the default build needs no AWS SDK): images it built, we read
//! with the same PCRs; images we built, it read with a matching CRC and the same PCRs.

mod common;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::common::*;
    use ne_eif::Eif;
    use serde_json::Value;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn fixture_json(name: &str) -> Value {
        let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn pcrs(eif: &Eif<'_>) -> [String; 3] {
        let m = eif.measurements();
        [m.pcr0.to_string(), m.pcr1.to_string(), m.pcr2.to_string()]
    }

    fn recorded(entry: &Value) -> [String; 3] {
        ["PCR0", "PCR1", "PCR2"].map(|pcr| entry[pcr].as_str().unwrap().to_owned())
    }

    #[test]
    fn test_we_read_reference_images_with_the_pcrs_it_computed() {
        let reference = fixture_json("reference.json");
        for count in 1..=3 {
            let name = format!("reference-{count}.eif");
            let bytes = std::fs::read(fixtures().join(&name)).unwrap();
            let eif = Eif::parse(&bytes).unwrap();
            assert_eq!(pcrs(&eif), recorded(&reference[&name]), "{name}");
            assert_eq!(eif.ramdisks().count(), count, "{name}");
            assert_eq!(eif.metadata().unwrap().unwrap().image_name, "reference");
        }
    }

    #[test]
    fn test_the_reference_read_our_images_with_our_crc_and_pcrs() {
        let ours = fixture_json("ours.json");
        for count in 1..=3 {
            let name = format!("ours-{count}.eif");
            let committed = std::fs::read(fixtures().join(&name)).unwrap();
            let (built, measurements) = builder(count).build().unwrap();
            assert_eq!(
                built, committed,
                "{name}: the same inputs give the same bytes"
            );
            let entry = &ours[&name];
            assert_eq!(entry["CrcMatches"], Value::Bool(true), "{name}");
            let ours_now = [
                measurements.pcr0.to_string(),
                measurements.pcr1.to_string(),
                measurements.pcr2.to_string(),
            ];
            assert_eq!(ours_now, recorded(entry), "{name}");
            assert_eq!(entry["ImageName"], "sample");
        }
    }
}
