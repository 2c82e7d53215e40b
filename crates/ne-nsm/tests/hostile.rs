// SPDX-License-Identifier: Apache-2.0
//! What an enclave sends its NSM, and documents handed to the verifier, are input from
//! outside: random and mutated bytes never panic, the NSM always answers with a response
//! the API decodes, and a mutated document never verifies.

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use aws_nitro_enclaves_nsm_api::api::{Request, Response};
    use ne_nsm::{ModuleConfig, NsmModule, RootCa};
    use proptest::prelude::*;
    use serde_bytes::ByteBuf;

    fn root() -> Arc<RootCa> {
        static ROOT: OnceLock<Arc<RootCa>> = OnceLock::new();
        Arc::clone(ROOT.get_or_init(|| Arc::new(RootCa::generate().unwrap())))
    }

    fn module() -> NsmModule {
        NsmModule::new(ModuleConfig {
            module_id: "i-0-enc1".to_owned(),
            measurements: Vec::new(),
            debug: false,
            root: root(),
        })
    }

    fn document() -> &'static [u8] {
        static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
        DOCUMENT.get_or_init(|| {
            let request = Request::Attestation {
                user_data: Some(ByteBuf::from(&b"user"[..])),
                nonce: None,
                public_key: None,
            };
            let bytes = serde_cbor::to_vec(&request).unwrap();
            match serde_cbor::from_slice(&module().handle(&bytes)).unwrap() {
                Response::Attestation { document } => document,
                other => panic!("{other:?}"),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn test_any_bytes_get_a_decodable_response(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let response = module().handle(&bytes);
            prop_assert!(serde_cbor::from_slice::<Response>(&response).is_ok());
        }

        #[test]
        fn test_a_valid_request_with_bytes_changed_gets_a_decodable_response(
            index in 0u16..40,
            at in 0usize..64,
            value in any::<u8>(),
        ) {
            let request = Request::ExtendPCR { index, data: vec![7; 40] };
            let mut bytes = serde_cbor::to_vec(&request).unwrap();
            let at = at % bytes.len();
            bytes[at] = value;
            let response = module().handle(&bytes);
            prop_assert!(serde_cbor::from_slice::<Response>(&response).is_ok());
        }

        #[test]
        fn test_any_bytes_as_a_document_are_rejected_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert!(ne_nsm::verify(&bytes, root().certificate_der()).is_err());
        }

        #[test]
        fn test_a_document_with_one_byte_changed_never_verifies(at in any::<prop::sample::Index>(), delta in 1u8..=255) {
            let mut bytes = document().to_vec();
            let at = at.index(bytes.len());
            bytes[at] = bytes[at].wrapping_add(delta);
            prop_assert!(ne_nsm::verify(&bytes, root().certificate_der()).is_err());
        }
    }
}
