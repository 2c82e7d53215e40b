// SPDX-License-Identifier: Apache-2.0
//! Replays the committed `bar_ops` fuzz corpus (`fuzz/corpus/bar_ops`) in a plain
//! `cargo test`, so every input the fuzzer kept keeps passing without a nightly toolchain.

#[cfg(test)]
mod tests {
    use arbitrary::{Arbitrary, Unstructured};
    use ne_device::test_utils::{run_ops, BarOp};

    #[test]
    fn test_bar_ops_corpus_replays_without_panic() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/bar_ops");
        let mut replayed = 0;
        let mut replies = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
            let bytes =
                std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file");
            let ops =
                Vec::<BarOp>::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap_or_default();
            let gated = run_ops(&ops, true);
            let ungated = run_ops(&ops, false);
            assert_eq!(gated.replies, ungated.replies, "gating changes no reply");
            replies += gated.replies;
            replayed += 1;
        }
        assert!(replayed > 0, "the corpus in {} is empty", dir.display());
        assert!(replies > 0, "the corpus rings no doorbell that is answered");
    }
}
