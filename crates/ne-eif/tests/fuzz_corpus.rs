// SPDX-License-Identifier: Apache-2.0
//! Replays the committed `eif_parse` fuzz corpus (`fuzz/corpus/eif_parse`) in a plain
//! `cargo test`: parsing and measuring any of it never panics, and the valid seed parses.

#[cfg(test)]
mod tests {
    #[test]
    fn test_eif_parse_corpus_replays_without_panic() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/eif_parse");
        let mut valid = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
            let bytes =
                std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file");
            if let Ok(eif) = ne_eif::Eif::parse(&bytes) {
                let _ = eif.measurements();
                valid += 1;
            }
        }
        assert!(
            valid > 0,
            "the corpus in {} has no valid image",
            dir.display()
        );
    }
}
