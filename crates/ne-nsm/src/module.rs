// SPDX-License-Identifier: Apache-2.0
//! One enclave's NSM, without any transport: a CBOR request in, a CBOR response out, as
//! `aws-nitro-enclaves-nsm-api` encodes both.
//!
//! | request | answer | refusals |
//! |---|---|---|
//! | DescribeNSM | version 1.0.0, module_id, 32 PCRs, the locked ones, SHA384 | — |
//! | DescribePCR | lock state and value | InvalidIndex |
//! | ExtendPCR | the new value, SHA-384(old ‖ data) | InvalidIndex, ReadOnlyIndex |
//! | LockPCR | — | InvalidIndex, ReadOnlyIndex (already locked) |
//! | LockPCRs | locks 0..range | InvalidIndex (range > 32) |
//! | GetRandom | 256 bytes | — |
//! | Attestation | the signed document | InputTooLarge (a field over 1 024 bytes), InternalError (no leaf) |
//!
//! A request over 0x1000 bytes is InputTooLarge; one that is not a request is
//! InvalidArgument.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
use rand_core::{OsRng, RngCore};

use crate::ca::{Leaf, RootCa, LEAF_LIFETIME};
use crate::document::{self, Fields, Signing};
use crate::pcr::{PcrBank, PcrError, PcrValue, PCR_BYTES, PCR_COUNT};

/// The largest request the NSM reads.
pub const MAX_REQUEST_BYTES: usize = 0x1000;
/// The largest response the NSM writes (the size of the driver's response buffer).
pub const MAX_RESPONSE_BYTES: usize = 0x3000;
/// Bytes in a GetRandom answer (what Nitro gives; Linux's hwrng parser expects it).
pub const RANDOM_BYTES: usize = 256;
/// `max_pcrs` of DescribeNSM.
const MAX_PCRS: u16 = 32;
const _: () = assert!(MAX_PCRS as usize == PCR_COUNT);
/// A leaf with less left than this is replaced before it signs.
const LEAF_RENEWAL: Duration = Duration::from_secs(600);

/// What an enclave's NSM is made with.
#[derive(Clone, Debug)]
pub struct ModuleConfig {
    /// The enclave's id (`i-…-enc…`), the document's module_id.
    pub module_id: String,
    /// PCRs set at start, locked with 0–15.
    pub measurements: Vec<(usize, PcrValue)>,
    /// A debug-mode enclave: every PCR in its documents is zero, as on Nitro.
    pub debug: bool,
    /// The CA whose leaf signs the documents.
    pub root: Arc<RootCa>,
}

/// One enclave's NSM.
#[derive(Debug)]
pub struct NsmModule {
    module_id: String,
    pcrs: PcrBank,
    debug: bool,
    root: Arc<RootCa>,
    leaf: Option<Leaf>,
}

fn error(code: ErrorCode) -> Response {
    Response::Error(code)
}

fn pcr_error(e: PcrError) -> Response {
    match e {
        PcrError::InvalidIndex(_) => error(ErrorCode::InvalidIndex),
        PcrError::ReadOnly(_) => error(ErrorCode::ReadOnlyIndex),
    }
}

/// The CBOR of `response`.
pub fn encode(response: &Response) -> Vec<u8> {
    // Encoding these types into a Vec cannot fail; a response of nothing is an error to
    // the driver, which is what the enclave should see if it ever did.
    serde_cbor::to_vec(response).unwrap_or_default()
}

impl NsmModule {
    /// The NSM of a starting enclave. A debug-mode enclave's PCRs start at zero.
    pub fn new(config: ModuleConfig) -> NsmModule {
        let measurements = if config.debug {
            Vec::new()
        } else {
            config.measurements
        };
        NsmModule {
            module_id: config.module_id,
            pcrs: PcrBank::started(&measurements),
            debug: config.debug,
            root: config.root,
            leaf: None,
        }
    }

    /// The PCRs.
    pub fn pcrs(&self) -> &PcrBank {
        &self.pcrs
    }

    /// Answers the CBOR request `bytes` with a CBOR response.
    pub fn handle(&mut self, bytes: &[u8]) -> Vec<u8> {
        encode(&self.respond(bytes))
    }

    /// Answers the request `bytes`.
    pub fn respond(&mut self, bytes: &[u8]) -> Response {
        if bytes.len() > MAX_REQUEST_BYTES {
            return error(ErrorCode::InputTooLarge);
        }
        match serde_cbor::from_slice::<Request>(bytes) {
            Ok(request) => self.answer(request),
            Err(e) => {
                tracing::debug!(module = %self.module_id, "not an NSM request: {e}");
                error(ErrorCode::InvalidArgument)
            }
        }
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::DescribeNSM => Response::DescribeNSM {
                version_major: 1,
                version_minor: 0,
                version_patch: 0,
                module_id: self.module_id.clone(),
                max_pcrs: MAX_PCRS,
                locked_pcrs: self.pcrs.locked().collect(),
                digest: Digest::SHA384,
            },
            Request::DescribePCR { index } => match self.pcrs.describe(index) {
                Ok((value, lock)) => Response::DescribePCR {
                    lock,
                    data: value.to_vec(),
                },
                Err(e) => pcr_error(e),
            },
            Request::ExtendPCR { index, data } => match self.pcrs.extend(index, &data) {
                Ok(value) => Response::ExtendPCR {
                    data: value.to_vec(),
                },
                Err(e) => pcr_error(e),
            },
            Request::LockPCR { index } => match self.pcrs.lock(index) {
                Ok(()) => Response::LockPCR,
                Err(e) => pcr_error(e),
            },
            Request::LockPCRs { range } => match self.pcrs.lock_range(range) {
                Ok(()) => Response::LockPCRs,
                Err(e) => pcr_error(e),
            },
            Request::GetRandom => {
                let mut random = vec![0u8; RANDOM_BYTES];
                OsRng.fill_bytes(&mut random);
                Response::GetRandom { random }
            }
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => self.attest(Fields {
                user_data: user_data.map(|b| b.into_vec()),
                nonce: nonce.map(|b| b.into_vec()),
                public_key: public_key.map(|b| b.into_vec()),
            }),
            _ => error(ErrorCode::InvalidOperation),
        }
    }

    /// The PCRs a document shows: the locked ones, zero in debug mode.
    fn document_pcrs(&self) -> BTreeMap<usize, Vec<u8>> {
        self.pcrs
            .locked()
            .map(|i| {
                let i = usize::from(i);
                let value = if self.debug {
                    vec![0; PCR_BYTES]
                } else {
                    self.pcrs.values()[i].to_vec()
                };
                (i, value)
            })
            .collect()
    }

    fn attest(&mut self, fields: Fields) -> Response {
        if let Some(field) = fields.too_large() {
            tracing::debug!(module = %self.module_id, "attestation refused: {field} too large");
            return error(ErrorCode::InputTooLarge);
        }
        let now = SystemTime::now();
        self.renew_leaf(now);
        let Some(leaf) = &self.leaf else {
            return error(ErrorCode::InternalError);
        };
        let timestamp_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let cabundle = [self.root.certificate_der()];
        let document = document::sign(
            &self.module_id,
            timestamp_ms,
            self.document_pcrs(),
            fields,
            Signing {
                key: &leaf.key,
                certificate: &leaf.der,
                cabundle: &cabundle,
            },
        );
        Response::Attestation { document }
    }

    /// Issues a new leaf when there is none or the current one is about to expire (one
    /// that cannot be issued leaves none: the document is refused).
    fn renew_leaf(&mut self, now: SystemTime) {
        let fresh = |leaf: &Leaf| leaf.not_after > now + LEAF_RENEWAL;
        if self.leaf.as_ref().is_some_and(fresh) {
            return;
        }
        self.leaf = match self.root.issue_leaf(&self.module_id, LEAF_LIFETIME) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::error!(module = %self.module_id, "cannot issue the NSM's certificate: {e}");
                None
            }
        };
    }
}
