// SPDX-License-Identifier: Apache-2.0
//! Attestation from the parent's side: where the local root CA of the enclaves' NSMs
//! lives, what the parent tells those NSMs about itself, and the verbs
//! `attestation-root` (the root certificate, PEM, for verifiers) and
//! `verify-attestation` (checks a document as a verifier would and says what it checked).
//!
//! The root's directory: `$NECTL_ATTESTATION_DIR`, else `$XDG_CONFIG_HOME/nectl/attestation`,
//! else `~/.config/nectl/attestation` — made once (mode 0700, key 0600) and kept. A user's
//! own root goes there as `root.pem` and `root-key.pem` (PKCS#8, P-384).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ne_eif::Eif;
use ne_nsm::ca::ROOT_CERT_FILE;
use ne_nsm::RootCa;
use ne_vm::NsmChoice;
use serde_json::{json, Value};
use x509_cert::der::{DecodePem, Encode};

use crate::error::{CliError, Code, Result};
use crate::files::{read_eif, read_regular, MAX_EIF_BYTES};

/// The environment variable naming the root CA's directory.
pub const DIR_ENV: &str = "NECTL_ATTESTATION_DIR";
/// The environment variable giving the parent's IAM role ARN (PCR3).
pub const ROLE_ENV: &str = "NECTL_ROLE_ARN";
/// The largest document file read (a document is at most 0x3000 bytes; base64 more).
const MAX_DOCUMENT_FILE: u64 = 0x8000;
/// The largest root certificate file read.
const MAX_ROOT_FILE: u64 = 0x4000;

/// The root CA's directory.
pub fn root_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(DIR_ENV) {
        return crate::paths::absolute(Path::new(&dir));
    }
    let config = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(std::env::temp_dir);
    config.join("nectl").join("attestation")
}

/// What this parent tells its enclaves' NSMs.
pub fn nsm_choice() -> NsmChoice {
    NsmChoice {
        root_dir: root_dir(),
        instance_id: crate::parent::server::instance_id(),
        role_arn: std::env::var(ROLE_ENV).ok().filter(|role| !role.is_empty()),
    }
}

fn attestation_error(message: impl Into<String>) -> CliError {
    CliError::new(Code::Attestation, message)
}

/// `attestation-root`: the root certificate, PEM, made first if this installation has none.
pub fn export_root() -> Result<String> {
    let dir = root_dir();
    let root = RootCa::load_or_create(&dir).map_err(|e| {
        attestation_error(format!("the local attestation root: {e}")).hint(format!(
            "{} holds root.pem and root-key.pem (owner-only); set {DIR_ENV} to use another",
            dir.display()
        ))
    })?;
    Ok(root.certificate_pem())
}

/// What `verify-attestation` is asked to check.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The document: the COSE_Sign1 bytes, or their base64.
    #[arg(long, value_name = "FILE")]
    document: PathBuf,
    /// The root certificate (PEM) the chain must end at; default: this installation's
    /// (`nectl attestation-root`).
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
    /// Expect PCR0, PCR1, PCR2 (and PCR8 if signed) of this image.
    #[arg(long, value_name = "FILE")]
    eif: Option<PathBuf>,
    /// Expect a PCR: INDEX=HEX (repeatable).
    #[arg(long = "pcr", value_name = "INDEX=HEX", value_parser = parse_pcr)]
    pcrs: Vec<ExpectedPcr>,
    /// Expect this nonce (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    nonce: Option<Hex>,
}

/// Bytes given in hex on the command line.
#[derive(Clone, Debug)]
pub struct Hex(Vec<u8>);

/// A PCR value expected at an index.
#[derive(Clone, Debug)]
pub struct ExpectedPcr(usize, Vec<u8>);

fn parse_hex(text: &str) -> std::result::Result<Hex, String> {
    hex::decode(text.trim())
        .map(Hex)
        .map_err(|e| format!("not hex: {e}"))
}

fn parse_pcr(text: &str) -> std::result::Result<ExpectedPcr, String> {
    let (index, value) = text.split_once('=').ok_or("give INDEX=HEX, e.g. 0=4b6a…")?;
    let index: usize = index
        .trim()
        .parse()
        .map_err(|_| format!("{index:?} is not a PCR index"))?;
    if index >= ne_nsm::pcr::PCR_COUNT {
        return Err(format!("PCR {index} does not exist (0–31)"));
    }
    Ok(ExpectedPcr(index, parse_hex(value)?.0))
}

/// The document's bytes: raw CBOR, or its hex or base64 text.
fn read_document(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_regular(path, MAX_DOCUMENT_FILE, Code::Attestation, "a document")?;
    let text = std::str::from_utf8(&bytes).map(str::trim);
    match text {
        Ok(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) => {
            hex::decode(text)
                .ok()
                .or_else(|| <base64ct::Base64 as base64ct::Encoding>::decode_vec(text).ok())
                .ok_or_else(|| {
                    attestation_error(format!(
                        "{} is text but neither hex nor base64 of a document",
                        path.display()
                    ))
                })
        }
        _ => Ok(bytes),
    }
}

/// The root certificate's DER: from `path`, or this installation's.
fn read_root(path: Option<&Path>) -> Result<(Vec<u8>, PathBuf)> {
    let path = path.map_or_else(|| root_dir().join(ROOT_CERT_FILE), Path::to_owned);
    let pem = read_regular(&path, MAX_ROOT_FILE, Code::Attestation, "a PEM certificate")?;
    let der = x509_cert::Certificate::from_pem(&pem)
        .and_then(|certificate| certificate.to_der())
        .map_err(|e| {
            attestation_error(format!("{} is not a PEM certificate: {e}", path.display()))
        })?;
    Ok((der, path))
}

/// The PCRs the caller expects, by index.
fn expected_pcrs(args: &VerifyArgs) -> Result<BTreeMap<usize, Vec<u8>>> {
    let mut expected = BTreeMap::new();
    if let Some(path) = &args.eif {
        let bytes = read_eif(path, MAX_EIF_BYTES)?;
        let eif = Eif::parse(&bytes).map_err(|e| crate::eif_cmds::not_an_eif(path, &e))?;
        let m = eif.measurements();
        expected.insert(0, m.pcr0.0.to_vec());
        expected.insert(1, m.pcr1.0.to_vec());
        expected.insert(2, m.pcr2.0.to_vec());
        if let Some(pcr8) = m.pcr8 {
            expected.insert(8, pcr8.0.to_vec());
        }
    }
    expected.extend(args.pcrs.iter().map(|pcr| (pcr.0, pcr.1.clone())));
    Ok(expected)
}

/// `verify-attestation`: the document's signature, chain, fields and the expected PCRs
/// and nonce; prints what it checked and what the document says.
pub fn verify(args: &VerifyArgs) -> Result<Value> {
    let document = read_document(&args.document)?;
    let (root, root_path) = read_root(args.root.as_deref())?;
    let expected = expected_pcrs(args)?;
    let verified = ne_nsm::verify(&document, &root).map_err(|e| {
        attestation_error(format!("{} does not verify: {e}", args.document.display()))
    })?;
    let doc = &verified.document;
    let mut checked = vec![
        "COSE_Sign1 with ES384, signed by the document's certificate".to_owned(),
        format!(
            "certificate chain to the root {} at the document's time",
            root_path.display()
        ),
        "fields and sizes (AWS's rules; user_data and nonce up to 1 024 bytes)".to_owned(),
    ];
    for (index, value) in &expected {
        let found = doc.pcrs.get(index).map(|v| v.as_slice());
        if found != Some(value.as_slice()) {
            let debug = found.is_some_and(|v| v.iter().all(|&b| b == 0));
            let mut error = attestation_error(format!(
                "PCR{index} is {}, not the expected {}",
                found.map_or_else(|| "absent".to_owned(), hex::encode),
                hex::encode(value)
            ));
            if debug {
                error = error.hint(
                    "all zeros: the enclave runs in debug mode, whose documents carry zero PCRs",
                );
            }
            return Err(error);
        }
        checked.push(format!("PCR{index} as expected"));
    }
    if let Some(nonce) = &args.nonce {
        if doc.nonce.as_ref().map(|n| n.as_slice()) != Some(nonce.0.as_slice()) {
            return Err(attestation_error(
                "the document's nonce is not the one expected",
            ));
        }
        checked.push("nonce as expected".to_owned());
    }
    // In the order of their indexes (the map keeps insertion order).
    let pcrs: serde_json::Map<String, Value> = doc
        .pcrs
        .iter()
        .map(|(index, value)| (index.to_string(), Value::from(hex::encode(value))))
        .collect();
    let bytes = |field: &Option<serde_bytes::ByteBuf>| field.as_ref().map(hex::encode);
    Ok(json!({
        "Verified": true,
        "ModuleID": doc.module_id,
        "Timestamp": doc.timestamp,
        "Digest": format!("{:?}", doc.digest),
        "Chain": verified.chain,
        "PCRs": pcrs,
        "UserData": bytes(&doc.user_data),
        "Nonce": bytes(&doc.nonce),
        "PublicKey": bytes(&doc.public_key),
        "Checked": checked,
    }))
}
