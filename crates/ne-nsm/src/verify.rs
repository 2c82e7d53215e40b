// SPDX-License-Identifier: Apache-2.0
//! Checks an attestation document as AWS's attestation guide says a verifier must: the
//! COSE_Sign1 structure and its algorithm (ES384), the payload's fields and their sizes,
//! the certificate chain from the leaf to the given root (`rustls-webpki`, at the
//! document's timestamp; the cabundle must start with that root), then the signature
//! with the leaf's key (`coset`, `p384`).

use std::time::Duration;

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use p384::ecdsa::VerifyingKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::der::Decode;
use x509_cert::Certificate;

use crate::document::{oversized, MAX_FIELD_BYTES};
use crate::pcr::PCR_COUNT;

/// The largest certificate a document may carry (AWS's guide: 1 to 1 024 bytes).
const MAX_CERTIFICATE_BYTES: usize = 1024;

/// Why a document was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a COSE_Sign1, or not ES384.
    #[error("the document: {0}")]
    Structure(String),
    /// The payload is not a well-formed attestation document.
    #[error("the document's payload is malformed: {0}")]
    Payload(String),
    /// The certificates do not lead from the leaf to the root.
    #[error("the certificate chain does not verify against the root: {0}")]
    Chain(String),
    /// The leaf's key did not make this signature over these bytes.
    #[error("the signature does not verify with the document's certificate")]
    Signature,
}

/// A document that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Its payload.
    pub document: AttestationDoc,
    /// The subjects of its chain, root first, leaf last.
    pub chain: Vec<String>,
}

fn payload(message: impl Into<String>) -> VerifyError {
    VerifyError::Payload(message.into())
}

/// Verifies `bytes` against the root certificate `root_der`.
pub fn verify(bytes: &[u8], root_der: &[u8]) -> Result<Verified, VerifyError> {
    let sign1 = ne_eif::cose::read_es384(bytes).map_err(VerifyError::Structure)?;
    let body = sign1
        .payload
        .as_deref()
        .ok_or_else(|| VerifyError::Structure("it has no payload".to_owned()))?;
    let document = AttestationDoc::from_binary(body).map_err(|e| payload(format!("{e:?}")))?;
    check_fields(&document)?;
    let chain = check_chain(&document, root_der)?;
    let leaf = chain
        .last()
        .ok_or_else(|| VerifyError::Chain("no leaf certificate".to_owned()))?;
    let key = VerifyingKey::from_sec1_bytes(
        leaf.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|_| VerifyError::Chain("the leaf's key is not a P-384 EC key".to_owned()))?;
    if !ne_eif::cose::signed_by(&sign1, &key) {
        return Err(VerifyError::Signature);
    }
    let chain = chain
        .iter()
        .map(|certificate| certificate.tbs_certificate.subject.to_string())
        .collect();
    Ok(Verified { document, chain })
}

/// The syntactic rules of AWS's attestation guide (with 1 024-byte user_data and nonce,
/// as the hardware allows).
fn check_fields(document: &AttestationDoc) -> Result<(), VerifyError> {
    if document.module_id.is_empty() {
        return Err(payload("module_id is empty"));
    }
    if document.digest != Digest::SHA384 {
        return Err(payload(format!(
            "digest is {:?}, not SHA384",
            document.digest
        )));
    }
    if document.timestamp == 0 {
        return Err(payload("timestamp is 0"));
    }
    if document.pcrs.is_empty() || document.pcrs.len() > PCR_COUNT {
        return Err(payload(format!("{} PCRs", document.pcrs.len())));
    }
    for (index, value) in &document.pcrs {
        if *index >= PCR_COUNT || ![32, 48, 64].contains(&value.len()) {
            return Err(payload(format!("PCR {index} of {} bytes", value.len())));
        }
    }
    let certificates = std::iter::once(&document.certificate).chain(&document.cabundle);
    if document.cabundle.is_empty()
        || certificates
            .into_iter()
            .any(|c| c.is_empty() || c.len() > MAX_CERTIFICATE_BYTES)
    {
        return Err(payload(
            "a certificate is missing, empty or over 1 024 bytes",
        ));
    }
    fn bytes(field: &Option<serde_bytes::ByteBuf>) -> Option<&[u8]> {
        field.as_ref().map(|f| f.as_slice())
    }
    if let Some(name) = oversized([
        ("public_key", bytes(&document.public_key)),
        ("user_data", bytes(&document.user_data)),
        ("nonce", bytes(&document.nonce)),
    ]) {
        return Err(payload(format!("{name} is over {MAX_FIELD_BYTES} bytes")));
    }
    Ok(())
}

/// The chain from the leaf through the cabundle to `root_der`, at the document's time; its
/// certificates, root first, leaf last.
fn check_chain(
    document: &AttestationDoc,
    root_der: &[u8],
) -> Result<Vec<Certificate>, VerifyError> {
    let chain_error = |e: webpki::Error| VerifyError::Chain(format!("{e:?}"));
    if document.cabundle.first().map(|c| c.as_slice()) != Some(root_der) {
        return Err(VerifyError::Chain(
            "the cabundle does not start with the given root".to_owned(),
        ));
    }
    let root = CertificateDer::from(root_der);
    let anchor = webpki::anchor_from_trusted_cert(&root).map_err(chain_error)?;
    let intermediates: Vec<CertificateDer<'_>> = document.cabundle[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(document.certificate.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(chain_error)?;
    let time = UnixTime::since_unix_epoch(Duration::from_millis(document.timestamp));
    leaf.verify_for_usage(
        &[webpki::ring::ECDSA_P384_SHA384],
        &[anchor],
        &intermediates,
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(chain_error)?;
    document
        .cabundle
        .iter()
        .chain([&document.certificate])
        .map(|der| Certificate::from_der(der).map_err(|e| VerifyError::Chain(e.to_string())))
        .collect()
}
