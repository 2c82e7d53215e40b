// SPDX-License-Identifier: Apache-2.0
//! The signature section, as nitro-cli writes it: the CBOR of a list (one entry today,
//! for PCR0) of `{signing_certificate, signature}` — the PEM X.509 certificate that signed
//! the image, and a COSE_Sign1 whose payload is `{register_index, register_value}` of the
//! PCR — each byte string written as a CBOR array of integers. PCR8 measures the first
//! certificate: its DER encoding, extended into a zeroed register like the other PCRs.

use serde::{Deserialize, Serialize};

use crate::measure::{pcr_of_reader, Pcr};

/// One signed PCR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrSignature {
    /// The signing certificate, PEM.
    pub signing_certificate: Vec<u8>,
    /// The COSE_Sign1 over the PCR's index and value.
    pub signature: Vec<u8>,
}

/// The signatures of a signature section.
pub(crate) fn signatures(section: &[u8]) -> Result<Vec<PcrSignature>, String> {
    let signatures: Vec<PcrSignature> = ciborium::from_reader(section)
        .map_err(|e| format!("not the CBOR nitro-cli writes: {e}"))?;
    if signatures.is_empty() {
        return Err("it signs nothing".to_owned());
    }
    Ok(signatures)
}

/// A signature section holding `signatures`, as nitro-cli writes one.
pub fn signature_section(signatures: &[PcrSignature]) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing CBOR into a Vec cannot fail.
    let _ = ciborium::into_writer(signatures, &mut bytes);
    bytes
}

/// What a PCR signature signs: the register's index and value (CBOR, byte strings as
/// arrays of integers, as nitro-cli writes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PcrInfo {
    register_index: i32,
    register_value: Vec<u8>,
}

/// Signs `pcr0` with the P-384 key `key_pem` (SEC1 or PKCS#8 PEM) whose certificate is
/// `certificate_pem`: a signature section as nitro-cli's `sign-eif` writes one (a
/// COSE_Sign1, ES384, over PCR0's index and value).
pub(crate) fn sign(pcr0: &Pcr, certificate_pem: &[u8], key_pem: &[u8]) -> Result<Vec<u8>, String> {
    use p384::pkcs8::DecodePrivateKey;
    let certificate = public_key(certificate_pem)?;
    let text = std::str::from_utf8(key_pem).map_err(|_| "the private key is not PEM text")?;
    let secret = p384::SecretKey::from_pkcs8_pem(text)
        .or_else(|_| p384::SecretKey::from_sec1_pem(text))
        .map_err(|_| "the private key is not a P-384 EC key in PEM (PKCS#8 or SEC1)")?;
    let key = p384::ecdsa::SigningKey::from(secret);
    if *key.verifying_key() != certificate {
        return Err("the private key is not the certificate's".to_owned());
    }
    let mut payload = Vec::new();
    ciborium::into_writer(
        &PcrInfo {
            register_index: 0,
            register_value: pcr0.0.to_vec(),
        },
        &mut payload,
    )
    .map_err(|e| e.to_string())?;
    // Untagged, as nitro-cli writes it.
    Ok(signature_section(&[PcrSignature {
        signing_certificate: certificate_pem.to_vec(),
        signature: crate::cose::sign_es384(payload, &key),
    }]))
}

/// Whether the section's PCR0 signature verifies: a COSE_Sign1 (ES384) by the key of its
/// certificate whose payload is PCR0's index and `pcr0`. `Err` says why it cannot be
/// checked at all.
pub(crate) fn verify(section: &[u8], pcr0: &Pcr) -> Result<bool, String> {
    let signatures = signatures(section)?;
    let first = signatures.first().ok_or("it signs nothing")?;
    let key = public_key(&first.signing_certificate)?;
    let sign1 =
        crate::cose::read_es384(&first.signature).map_err(|why| format!("the signature: {why}"))?;
    let signed = crate::cose::signed_by(&sign1, &key);
    let payload: Option<PcrInfo> = sign1
        .payload
        .as_deref()
        .and_then(|payload| ciborium::from_reader(payload).ok());
    let matches = payload.is_some_and(|info| {
        info.register_index == 0 && info.register_value.as_slice() == pcr0.0.as_slice()
    });
    Ok(signed && matches)
}

/// The P-384 public key of a PEM certificate.
fn public_key(certificate_pem: &[u8]) -> Result<p384::ecdsa::VerifyingKey, String> {
    use x509_cert::der::DecodePem;
    let certificate = x509_cert::Certificate::from_pem(certificate_pem)
        .map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
    let key = certificate
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    p384::ecdsa::VerifyingKey::from_sec1_bytes(key)
        .map_err(|_| "the certificate's key is not a P-384 EC key".to_owned())
}

/// A PEM X.509 certificate's DER encoding.
fn certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    use x509_cert::der::{DecodePem, Encode};
    let certificate = x509_cert::Certificate::from_pem(pem)
        .map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
    certificate
        .to_der()
        .map_err(|e| format!("the certificate cannot be encoded: {e}"))
}

/// PCR8 of a PEM certificate: what an image signed with it reports.
pub fn certificate_pcr(pem: &[u8]) -> Result<Pcr, String> {
    let der = certificate_der(pem)?;
    pcr_of_reader(der.as_slice()).map_err(|e| e.to_string())
}

/// PCR8 of an image whose signature section is `section`.
pub(crate) fn pcr8(section: &[u8]) -> Result<Pcr, String> {
    let signatures = signatures(section)?;
    let first = signatures.first().ok_or("it signs nothing")?;
    certificate_pcr(&first.signing_certificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTIFICATE: &str = include_str!("../tests/fixtures/signing-cert.pem");
    /// From an independent computation (Python's hashlib over the PEM's base64 payload).
    const CERTIFICATE_PCR8: &str = "9b00460e9f1630079abe202eb32fc48eef15ea1ee542598e1725cfd3afdbca00f533f9cc78199b6ca7d55bd8f2118d88";

    /// A section as nitro-cli writes it: byte strings as arrays of integers.
    fn section(certificate: &[u8]) -> Vec<u8> {
        signature_section(&[PcrSignature {
            signing_certificate: certificate.to_vec(),
            signature: vec![0xd2, 0x84],
        }])
    }

    #[test]
    fn test_pcr8_measures_the_signing_certificate() {
        let pcr = pcr8(&section(CERTIFICATE.as_bytes())).unwrap();
        assert_eq!(pcr.to_string(), CERTIFICATE_PCR8);
    }

    #[test]
    fn test_byte_strings_are_arrays_of_integers_as_nitro_cli_writes_them() {
        let bytes = section(b"AB");
        // [ {"signing_certificate": [0x41, 0x42], ...} ]: 0x82 is an array of two integers.
        let key = b"signing_certificate";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        assert_eq!(&bytes[at..at + 3], &[0x82, 0x18, 0x41]);
    }

    const KEY: &str = include_str!("../tests/fixtures/signing-key.pem");

    fn pcr(byte: u8) -> Pcr {
        Pcr([byte; crate::measure::PCR_BYTES])
    }

    #[test]
    fn test_a_signature_verifies_against_its_pcr0_only() {
        let section = sign(&pcr(7), CERTIFICATE.as_bytes(), KEY.as_bytes()).unwrap();
        assert_eq!(verify(&section, &pcr(7)), Ok(true));
        assert_eq!(verify(&section, &pcr(8)), Ok(false), "another image's PCR0");
        assert_eq!(pcr8(&section).unwrap().to_string(), CERTIFICATE_PCR8);
    }

    #[test]
    fn test_a_tampered_signature_does_not_verify() {
        let mut section = sign(&pcr(7), CERTIFICATE.as_bytes(), KEY.as_bytes()).unwrap();
        let mut signatures = signatures(&section).unwrap();
        let last = signatures[0].signature.len() - 1;
        signatures[0].signature[last] ^= 1;
        section = signature_section(&signatures);
        assert_eq!(verify(&section, &pcr(7)), Ok(false));
    }

    #[test]
    fn test_a_key_that_is_not_the_certificates_is_refused() {
        let other = p384::SecretKey::from_slice(&[0x11; 48]).unwrap();
        let pem = p384::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, Default::default()).unwrap();
        let error = sign(&pcr(7), CERTIFICATE.as_bytes(), pem.as_bytes()).unwrap_err();
        assert!(error.contains("not the certificate's"), "{error}");
    }

    #[test]
    fn test_a_section_that_is_not_a_signature_is_refused() {
        assert!(pcr8(b"\xff\x00garbage").unwrap_err().contains("CBOR"));
        assert!(pcr8(&section(b"not a certificate"))
            .unwrap_err()
            .contains("PEM"));
        let mut empty = Vec::new();
        ciborium::into_writer(&Vec::<PcrSignature>::new(), &mut empty).unwrap();
        assert!(pcr8(&empty).unwrap_err().contains("signs nothing"));
    }
}
