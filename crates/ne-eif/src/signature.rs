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

/// A PEM X.509 certificate's DER encoding.
pub fn certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
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
