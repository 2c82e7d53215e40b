// SPDX-License-Identifier: Apache-2.0
//! Any bytes as what an enclave sends its NSM, and as an attestation document handed to
//! the verifier: neither panics, and the NSM always answers with a decodable response.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ne_nsm::{ModuleConfig, NsmModule, RootCa};

fn root() -> Arc<RootCa> {
    static ROOT: OnceLock<Arc<RootCa>> = OnceLock::new();
    Arc::clone(ROOT.get_or_init(|| Arc::new(RootCa::generate().expect("a root"))))
}

fuzz_target!(|bytes: &[u8]| {
    let mut module = NsmModule::new(ModuleConfig {
        module_id: "i-0-enc1".to_owned(),
        measurements: Vec::new(),
        debug: false,
        root: root(),
    });
    let response = module.handle(bytes);
    assert!(!response.is_empty());
    let _ = ne_nsm::verify(bytes, root().certificate_der());
});
