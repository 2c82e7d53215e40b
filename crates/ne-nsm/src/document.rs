// SPDX-License-Identifier: Apache-2.0
//! Attestation documents as Nitro makes them: an untagged COSE_Sign1 whose protected
//! header is `{1: -35}` (ES384), whose unprotected header is empty, and whose payload is the
//! CBOR map of `aws-nitro-enclaves-nsm-api`'s `AttestationDoc` — module_id, digest
//! ("SHA384"), timestamp (ms), pcrs, certificate (the NSM's leaf, DER), cabundle (root
//! first), public_key, user_data, nonce.

use std::collections::BTreeMap;

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use p384::ecdsa::SigningKey;

/// The most bytes of `user_data`, `nonce` or `public_key` a request may carry. AWS's
/// attestation guide says 512 for user_data and nonce, but the hardware (and AWS's own
/// `nsm-check`) takes 1 024: this NSM follows the hardware.
pub const MAX_FIELD_BYTES: usize = 1024;

/// What goes into one document besides the PCRs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// Data the application binds to the document.
    pub user_data: Option<Vec<u8>>,
    /// A verifier's challenge.
    pub nonce: Option<Vec<u8>>,
    /// A key the verifier may encrypt to.
    pub public_key: Option<Vec<u8>>,
}

impl Fields {
    /// The first field over [`MAX_FIELD_BYTES`], by name.
    pub fn too_large(&self) -> Option<&'static str> {
        oversized([
            ("user_data", self.user_data.as_deref()),
            ("nonce", self.nonce.as_deref()),
            ("public_key", self.public_key.as_deref()),
        ])
    }
}

/// The first of the named optional fields over [`MAX_FIELD_BYTES`]: the NSM refuses to put
/// it in a document, and a verifier refuses a document that has it.
pub fn oversized<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a [u8]>)>,
) -> Option<&'static str> {
    fields
        .into_iter()
        .find(|(_, field)| field.is_some_and(|f| f.len() > MAX_FIELD_BYTES))
        .map(|(name, _)| name)
}

/// Who signs, and the chain that vouches for them.
#[derive(Clone, Copy, Debug)]
pub struct Signing<'a> {
    /// The leaf's key.
    pub key: &'a SigningKey,
    /// The leaf certificate, DER.
    pub certificate: &'a [u8],
    /// The chain above the leaf, root first, DER.
    pub cabundle: &'a [&'a [u8]],
}

/// The signed document of `module_id` at `timestamp_ms` with `pcrs` (index → value).
pub fn sign(
    module_id: &str,
    timestamp_ms: u64,
    pcrs: BTreeMap<usize, Vec<u8>>,
    fields: Fields,
    signing: Signing<'_>,
) -> Vec<u8> {
    let document = AttestationDoc::new(
        module_id.to_owned(),
        Digest::SHA384,
        timestamp_ms,
        pcrs,
        signing.certificate.to_vec(),
        signing.cabundle.iter().map(|c| c.to_vec()).collect(),
        fields.user_data,
        fields.nonce,
        fields.public_key,
    );
    ne_eif::cose::sign_es384(document.to_binary(), signing.key)
}
