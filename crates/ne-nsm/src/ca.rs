// SPDX-License-Identifier: Apache-2.0
//! The local root CA that stands where AWS's Nitro root stands: a P-384 key and a
//! self-signed certificate, made once per installation and kept in a directory only its
//! owner can read (or supplied by the user), and the short-lived leaf certificates it
//! issues to each enclave's NSM.
//!
//! Files in the directory: `root.pem` (the certificate, what verifiers are given) and
//! `root-key.pem` (PKCS#8, mode 0600). A key file that others can read is refused.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use p384::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core::{OsRng, RngCore};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// The root certificate's file in the CA directory.
pub const ROOT_CERT_FILE: &str = "root.pem";
/// The root key's file in the CA directory (owner-only).
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// The subject of a root this module generates.
const ROOT_SUBJECT: &str = "CN=ne local attestation root,O=ne";
/// How long a generated root is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long a leaf is valid (Nitro's leaves live hours).
pub const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// How far before its issue a certificate's validity starts: a document signed in the same
/// second as its leaf was issued (certificate times are whole seconds), or read by a
/// verifier whose clock is a little behind, is still within it.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the CA could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file can be read by others.
    #[error("{path}: mode {mode:o} lets others read the root key; chmod 600 it")]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The files are not a P-384 certificate and its key.
    #[error("{0}")]
    Invalid(String),
}

/// A root CA: its certificate and signing key.
#[derive(Clone, Debug)]
pub struct RootCa {
    key: SigningKey,
    certificate: Certificate,
    der: Vec<u8>,
}

/// A certificate issued to one enclave's NSM, and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The key that signs the enclave's attestation documents.
    pub key: SigningKey,
    /// The certificate's DER encoding.
    pub der: Vec<u8>,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(what: impl std::fmt::Display) -> CaError {
    CaError::Invalid(what.to_string())
}

/// Valid from [`BACKDATE`] ago for `lifetime` from now.
fn validity_for(lifetime: Duration) -> Result<Validity, CaError> {
    let now = SystemTime::now();
    let time = |at: SystemTime| Time::try_from(at).map_err(invalid);
    Ok(Validity {
        not_before: time(now - BACKDATE)?,
        not_after: time(now + lifetime)?,
    })
}

/// A positive random serial number of 16 bytes.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes).map_err(invalid)
}

fn public_key_info(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(invalid)
}

impl RootCa {
    /// A new root with a fresh key.
    pub fn generate() -> Result<RootCa, CaError> {
        let key = SigningKey::random(&mut OsRng);
        let subject = Name::from_str(ROOT_SUBJECT).map_err(invalid)?;
        let validity = validity_for(ROOT_LIFETIME)?;
        let builder = CertificateBuilder::new(
            Profile::Root,
            random_serial()?,
            validity,
            subject,
            public_key_info(&key)?,
            &key,
        )
        .map_err(invalid)?;
        let certificate = builder.build::<DerSignature>().map_err(invalid)?;
        RootCa::new(certificate, key)
    }

    fn new(certificate: Certificate, key: SigningKey) -> Result<RootCa, CaError> {
        let spki = &certificate.tbs_certificate.subject_public_key_info;
        let public = VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| invalid("the root certificate's key is not a P-384 EC key"))?;
        if public != *key.verifying_key() {
            return Err(invalid("the root key is not the root certificate's"));
        }
        let der = certificate.to_der().map_err(invalid)?;
        Ok(RootCa {
            key,
            certificate,
            der,
        })
    }

    /// The root from a PEM certificate and a PKCS#8 PEM P-384 key.
    pub fn from_pem(certificate: &str, key: &str) -> Result<RootCa, CaError> {
        let certificate = Certificate::from_pem(certificate)
            .map_err(|e| invalid(format!("the root certificate is not PEM X.509: {e}")))?;
        let key = SigningKey::from_pkcs8_pem(key)
            .map_err(|e| invalid(format!("the root key is not a PKCS#8 P-384 key: {e}")))?;
        RootCa::new(certificate, key)
    }

    /// The root kept in `dir`, made there (directory 0700, key 0600) if it holds none yet.
    pub fn load_or_create(dir: &Path) -> Result<RootCa, CaError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        if !key_path.exists() {
            let root = RootCa::generate()?;
            root.store(dir)?;
            tracing::info!(dir = %dir.display(), "made a new local attestation root");
            return Ok(root);
        }
        let metadata = std::fs::metadata(&key_path).map_err(io(&key_path))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyExposed {
                path: key_path,
                mode,
            });
        }
        let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let certificate = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        RootCa::from_pem(&certificate, &key)
    }

    /// Writes the root into `dir`: the key first, owner-only, then the certificate.
    fn store(&self, dir: &Path) -> Result<(), CaError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let key_path = dir.join(ROOT_KEY_FILE);
        let key = self.key.to_pkcs8_pem(LineEnding::LF).map_err(invalid)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io(&key_path))?;
        file.write_all(key.as_bytes()).map_err(io(&key_path))?;
        let cert_path = dir.join(ROOT_CERT_FILE);
        std::fs::write(&cert_path, self.certificate_pem()).map_err(io(&cert_path))
    }

    /// The root certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// The root certificate, PEM: what verifiers are configured with.
    pub fn certificate_pem(&self) -> String {
        self.certificate.to_pem(LineEnding::LF).unwrap_or_default()
    }

    /// A leaf for one NSM, named `common_name`, valid for `lifetime` from now.
    pub fn issue_leaf(&self, common_name: &str, lifetime: Duration) -> Result<Leaf, CaError> {
        let key = SigningKey::random(&mut OsRng);
        let subject =
            Name::from_str(&format!("CN={},O=ne", rdn_safe(common_name))).map_err(invalid)?;
        let validity = validity_for(lifetime)?;
        let not_after = validity.not_after.to_system_time();
        let builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: self.certificate.tbs_certificate.subject.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            random_serial()?,
            validity,
            subject,
            public_key_info(&key)?,
            &self.key,
        )
        .map_err(invalid)?;
        let certificate = builder.build::<DerSignature>().map_err(invalid)?;
        let der = certificate.to_der().map_err(invalid)?;
        Ok(Leaf {
            key,
            der,
            not_after,
        })
    }
}

/// `name` with the characters that would end or split a relative distinguished name
/// replaced.
fn rdn_safe(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ',' | '+' | '=' | '"' | '\\' | '<' | '>' | ';' | '#' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_root_is_made_once_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let made = RootCa::load_or_create(&ca).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca), 0o700);
        assert_eq!(mode(&ca.join(ROOT_KEY_FILE)), 0o600);
        let loaded = RootCa::load_or_create(&ca).unwrap();
        assert_eq!(made.certificate_der(), loaded.certificate_der());
        assert!(made
            .certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn test_a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        RootCa::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(ROOT_KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = RootCa::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(error, CaError::KeyExposed { mode: 0o644, .. }),
            "{error}"
        );
    }

    #[test]
    fn test_a_key_that_is_not_the_certificates_is_refused() {
        let one = RootCa::generate().unwrap();
        let other = RootCa::generate().unwrap();
        let key = other.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let error = RootCa::from_pem(&one.certificate_pem(), &key).unwrap_err();
        assert!(
            error.to_string().contains("not the root certificate's"),
            "{error}"
        );
    }

    #[test]
    fn test_a_leaf_is_issued_by_the_root() {
        let root = RootCa::generate().unwrap();
        let leaf = root.issue_leaf("i-0-enc1, evil=1", LEAF_LIFETIME).unwrap();
        let certificate = Certificate::from_der(&leaf.der).unwrap();
        assert_eq!(
            certificate.tbs_certificate.issuer,
            root.certificate.tbs_certificate.subject
        );
        assert!(leaf.not_after > SystemTime::now() + LEAF_LIFETIME - Duration::from_secs(60));
    }

    use x509_cert::der::Decode;
}
