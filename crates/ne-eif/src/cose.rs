// SPDX-License-Identifier: Apache-2.0
//! COSE_Sign1 with ES384 (P-384, SHA-384), as Nitro uses it for an image's PCR0 signature
//! and for attestation documents: written untagged with the protected header `{1: -35}`
//! and an empty unprotected one; read tagged or untagged.

use coset::{iana, CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder};
use coset::{RegisteredLabelWithPrivate, TaggedCborSerializable};
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};

/// `payload`, signed by `key`, as an untagged COSE_Sign1.
pub fn sign_es384(payload: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(&[], |tbs| {
            let signature: Signature = key.sign(tbs);
            signature.to_bytes().to_vec()
        })
        .build();
    // Encoding a COSE_Sign1 built here cannot fail; an empty one would not verify.
    sign1.to_vec().unwrap_or_default()
}

/// `bytes` read as a COSE_Sign1 whose algorithm is ES384; `Err` says why it is not one.
pub fn read_es384(bytes: &[u8]) -> Result<CoseSign1, String> {
    let sign1 = CoseSign1::from_slice(bytes)
        .or_else(|_| CoseSign1::from_tagged_slice(bytes))
        .map_err(|e| format!("not a COSE_Sign1: {e}"))?;
    let algorithm = &sign1.protected.header.alg;
    if *algorithm != Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384)) {
        return Err(format!("the algorithm is {algorithm:?}, not ES384"));
    }
    Ok(sign1)
}

/// Whether `key` made `sign1`'s signature over its protected header and payload.
pub fn signed_by(sign1: &CoseSign1, key: &VerifyingKey) -> bool {
    sign1
        .verify_signature(&[], |signature, tbs| {
            let signature = Signature::from_slice(signature).map_err(|_| ())?;
            key.verify(tbs, &signature).map_err(|_| ())
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 48]).unwrap()
    }

    #[test]
    fn test_a_signature_verifies_with_its_key_only() {
        let bytes = sign_es384(b"payload".to_vec(), &key(1));
        // Untagged, protected header {1: -35}.
        assert_eq!(&bytes[..6], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
        let sign1 = read_es384(&bytes).unwrap();
        assert_eq!(sign1.payload.as_deref(), Some(&b"payload"[..]));
        assert!(signed_by(&sign1, key(1).verifying_key()));
        assert!(!signed_by(&sign1, key(2).verifying_key()));
    }

    #[test]
    fn test_other_algorithms_and_other_bytes_are_refused() {
        let es256 = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES256)
                    .build(),
            )
            .build()
            .to_vec()
            .unwrap();
        assert!(read_es384(&es256).unwrap_err().contains("not ES384"));
        assert!(read_es384(b"\x00garbage")
            .unwrap_err()
            .contains("not a COSE_Sign1"));
    }
}
