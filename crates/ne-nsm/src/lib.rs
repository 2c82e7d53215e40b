// SPDX-License-Identifier: Apache-2.0
//! The Nitro Security Module of an enclave, as `aws-nitro-enclaves-nsm-api` defines its
//! protocol, with attestation documents that verify against a local root CA.
//!
//! - [`pcr`]: the 32 SHA-384 PCRs, 0–15 locked at start;
//! - [`module`]: the requests (DescribeNSM, DescribePCR, ExtendPCR, LockPCR, LockPCRs,
//!   GetRandom, Attestation) answered from the PCRs, with the API's error codes;
//! - [`ca`]: the local root (made once, kept owner-only) and the leaves it issues;
//! - [`document`]: the COSE_Sign1 (ES384) documents;
//! - [`mod@verify`]: what a verifier checks, with `rustls-webpki`, `coset` and `p384`;
//! - [`device`]: the vhost-user device (virtio id 33, one queue) Linux's `nsm.ko` binds.
//!
//! The PCRs Nitro measures: 0, 1, 2 the image (`describe-eif`'s), 3 the parent's role
//! and 4 its instance id (each SHA-384 of 48 zero bytes then the text, as an extension of
//! a zero PCR), 8 the image's signing certificate when it is signed.

pub mod ca;
pub mod device;
pub mod document;
pub mod module;
pub mod pcr;
pub mod verify;

pub use ca::{CaError, RootCa};
pub use device::serve;
pub use module::{ModuleConfig, NsmModule};
pub use ne_vhost::Served;
pub use pcr::{PcrBank, PcrValue};
pub use verify::{verify, Verified, VerifyError};

/// The PCR a text is measured into from zero: SHA-384(48 zero bytes ‖ `text`) — how Nitro
/// fills PCR3 (the parent's IAM role) and PCR4 (its instance id).
pub fn measure_text(text: &str) -> PcrValue {
    let mut bank = PcrBank::started(&[]);
    // PCR 16 is open at start; extending it cannot fail.
    bank.extend(16, text.as_bytes())
        .unwrap_or([0; pcr::PCR_BYTES])
}

/// The id of the enclave in slot `slot_uid` of the parent `instance_id`, as `nectl` and
/// nitro-cli show it and as its NSM's documents name it.
pub fn enclave_id(instance_id: &str, slot_uid: u64) -> String {
    format!("{instance_id}-enc{slot_uid:x}")
}
