// SPDX-License-Identifier: Apache-2.0
//! The NSM's requests without a VM: every request, every refusal, the lock rules, the
//! size limits, debug zeroing, and documents that verify only against their own root.

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use aws_nitro_enclaves_nsm_api::api::{Digest, Request, Response};
    use ne_nsm::module::{MAX_REQUEST_BYTES, RANDOM_BYTES};
    use ne_nsm::{verify, ModuleConfig, NsmModule, RootCa, VerifyError};
    use serde_bytes::ByteBuf;

    fn root() -> Arc<RootCa> {
        static ROOT: OnceLock<Arc<RootCa>> = OnceLock::new();
        Arc::clone(ROOT.get_or_init(|| Arc::new(RootCa::generate().unwrap())))
    }

    fn module(debug: bool) -> NsmModule {
        NsmModule::new(ModuleConfig {
            module_id: "i-0123456789abcdef0-enc1".to_owned(),
            measurements: vec![
                (0, [0xa0; 48]),
                (1, [0xa1; 48]),
                (2, [0xa2; 48]),
                (8, [8; 48]),
            ],
            debug,
            root: root(),
        })
    }

    /// Sends `request` as the driver helpers encode it; decodes the answer as they do.
    fn ask(module: &mut NsmModule, request: Request) -> Response {
        let bytes = serde_cbor::to_vec(&request).unwrap();
        serde_cbor::from_slice(&module.handle(&bytes)).unwrap()
    }

    fn error_of(response: Response) -> String {
        match response {
            Response::Error(code) => format!("{code:?}"),
            other => panic!("not an error: {other:?}"),
        }
    }

    fn attest(module: &mut NsmModule, user_data: &[u8], nonce: &[u8]) -> Vec<u8> {
        let request = Request::Attestation {
            user_data: Some(ByteBuf::from(user_data)),
            nonce: Some(ByteBuf::from(nonce)),
            public_key: None,
        };
        match ask(module, request) {
            Response::Attestation { document } => document,
            other => panic!("no document: {other:?}"),
        }
    }

    #[test]
    fn test_describe_nsm_names_the_enclave_and_its_locked_pcrs() {
        match ask(&mut module(false), Request::DescribeNSM) {
            Response::DescribeNSM {
                module_id,
                max_pcrs,
                locked_pcrs,
                digest,
                version_major,
                ..
            } => {
                assert_eq!(module_id, "i-0123456789abcdef0-enc1");
                assert_eq!(max_pcrs, 32);
                assert_eq!(locked_pcrs, (0..16).collect());
                assert_eq!(digest, Digest::SHA384);
                assert_eq!(version_major, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_describe_pcr_reads_the_measurements_and_refuses_index_32() {
        let mut nsm = module(false);
        match ask(&mut nsm, Request::DescribePCR { index: 1 }) {
            Response::DescribePCR { lock, data } => {
                assert!(lock);
                assert_eq!(data, vec![0xa1; 48]);
            }
            other => panic!("{other:?}"),
        }
        let refused = ask(&mut nsm, Request::DescribePCR { index: 32 });
        assert_eq!(error_of(refused), "InvalidIndex");
    }

    #[test]
    fn test_extend_then_lock_then_extend_again_is_read_only() {
        let mut nsm = module(false);
        let extended = ask(
            &mut nsm,
            Request::ExtendPCR {
                index: 16,
                data: b"app".to_vec(),
            },
        );
        let Response::ExtendPCR { data } = extended else {
            panic!("{extended:?}")
        };
        assert_eq!(data, ne_nsm::measure_text("app").to_vec());
        assert!(matches!(
            ask(&mut nsm, Request::LockPCR { index: 16 }),
            Response::LockPCR
        ));
        let again = Request::ExtendPCR {
            index: 16,
            data: b"more".to_vec(),
        };
        assert_eq!(error_of(ask(&mut nsm, again)), "ReadOnlyIndex");
        assert_eq!(
            error_of(ask(&mut nsm, Request::LockPCR { index: 16 })),
            "ReadOnlyIndex"
        );
        let measured = Request::ExtendPCR {
            index: 0,
            data: b"x".to_vec(),
        };
        assert_eq!(error_of(ask(&mut nsm, measured)), "ReadOnlyIndex");
        let beyond = Request::ExtendPCR {
            index: 40,
            data: b"x".to_vec(),
        };
        assert_eq!(error_of(ask(&mut nsm, beyond)), "InvalidIndex");
    }

    #[test]
    fn test_lock_pcrs_locks_the_range_and_refuses_beyond_32() {
        let mut nsm = module(false);
        assert!(matches!(
            ask(&mut nsm, Request::LockPCRs { range: 20 }),
            Response::LockPCRs
        ));
        assert_eq!(nsm.pcrs().locked().count(), 20);
        assert_eq!(
            error_of(ask(&mut nsm, Request::LockPCRs { range: 33 })),
            "InvalidIndex"
        );
    }

    #[test]
    fn test_get_random_gives_256_fresh_bytes() {
        let mut nsm = module(false);
        let mut draw = || match ask(&mut nsm, Request::GetRandom) {
            Response::GetRandom { random } => random,
            other => panic!("{other:?}"),
        };
        let (one, two) = (draw(), draw());
        assert_eq!(one.len(), RANDOM_BYTES);
        assert_ne!(one, two);
    }

    #[test]
    fn test_oversized_and_malformed_requests_are_refused() {
        let mut nsm = module(false);
        let decode = |bytes: Vec<u8>| serde_cbor::from_slice::<Response>(&bytes).unwrap();
        let big = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert_eq!(error_of(decode(nsm.handle(&big))), "InputTooLarge");
        assert_eq!(
            error_of(decode(nsm.handle(b"\xff\x00garbage"))),
            "InvalidArgument"
        );
        assert_eq!(error_of(decode(nsm.handle(b""))), "InvalidArgument");
    }

    #[test]
    fn test_attestation_fields_up_to_1024_bytes_are_taken_and_beyond_refused() {
        let mut nsm = module(false);
        let document = attest(&mut nsm, &[1; 1024], &[2; 1024]);
        let verified = verify(&document, root().certificate_der()).unwrap();
        assert_eq!(verified.document.user_data.unwrap().len(), 1024);
        let request = Request::Attestation {
            user_data: Some(ByteBuf::from(vec![0; 1025])),
            nonce: None,
            public_key: None,
        };
        assert_eq!(error_of(ask(&mut nsm, request)), "InputTooLarge");
    }

    #[test]
    fn test_a_document_verifies_against_its_root_with_the_measurements() {
        let mut nsm = module(false);
        let document = attest(&mut nsm, b"user", b"nonce");
        let verified = verify(&document, root().certificate_der()).unwrap();
        let doc = &verified.document;
        assert_eq!(doc.module_id, "i-0123456789abcdef0-enc1");
        assert_eq!(doc.digest, Digest::SHA384);
        assert_eq!(doc.pcrs.len(), 16, "the locked PCRs");
        assert_eq!(doc.pcrs[&0].as_slice(), &[0xa0; 48]);
        assert_eq!(doc.pcrs[&2].as_slice(), &[0xa2; 48]);
        assert_eq!(doc.pcrs[&8].as_slice(), &[8; 48]);
        assert_eq!(doc.cabundle[0].as_slice(), root().certificate_der());
        assert_eq!(
            doc.nonce.as_ref().map(|n| n.as_slice()),
            Some(&b"nonce"[..])
        );
        assert_eq!(verified.chain.len(), 2);
        // Untagged COSE_Sign1 with the protected header {1: -35}, as Nitro writes it.
        assert_eq!(&document[..6], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
    }

    #[test]
    fn test_a_document_is_rejected_by_another_root() {
        let document = attest(&mut module(false), b"", b"");
        let other = RootCa::generate().unwrap();
        let error = verify(&document, other.certificate_der()).unwrap_err();
        assert!(matches!(error, VerifyError::Chain(_)), "{error}");
    }

    #[test]
    fn test_a_flipped_byte_anywhere_is_rejected() {
        let document = attest(&mut module(false), b"user", b"nonce");
        // Every 7th byte, flipped: none of the altered documents may verify.
        for at in (0..document.len()).step_by(7) {
            let mut altered = document.clone();
            altered[at] ^= 0x01;
            assert!(
                verify(&altered, root().certificate_der()).is_err(),
                "byte {at} flipped and still verified"
            );
        }
    }

    #[test]
    fn test_debug_mode_documents_have_all_zero_pcrs() {
        let mut nsm = module(true);
        let document = attest(&mut nsm, b"", b"");
        let verified = verify(&document, root().certificate_der()).unwrap();
        assert_eq!(verified.document.pcrs.len(), 16);
        assert!(verified
            .document
            .pcrs
            .values()
            .all(|v| v.iter().all(|&b| b == 0)));
    }

    #[test]
    fn test_a_document_with_its_pcrs_extended_later_shows_the_locked_ones() {
        let mut nsm = module(false);
        let extend = Request::ExtendPCR {
            index: 20,
            data: b"config".to_vec(),
        };
        ask(&mut nsm, extend);
        ask(&mut nsm, Request::LockPCR { index: 20 });
        let document = attest(&mut nsm, b"", b"");
        let doc = verify(&document, root().certificate_der())
            .unwrap()
            .document;
        assert_eq!(doc.pcrs.len(), 17);
        assert_eq!(doc.pcrs[&20].as_slice(), &ne_nsm::measure_text("config"));
    }
}
