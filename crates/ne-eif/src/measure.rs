// SPDX-License-Identifier: Apache-2.0
//! Measurements: the PCRs the hypervisor extends as it loads an image.
//!
//! Each PCR starts as 48 zero bytes and is extended once with the SHA-384 of what it
//! measures: `PCR = SHA-384(0^48 || SHA-384(data))`.
//! - PCR0: the kernel, the command line and every ramdisk, in file order;
//! - PCR1: the kernel, the command line and the first ramdisk (the bootstrap);
//! - PCR2: every ramdisk after the first (the application).

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha384};

/// Bytes of a SHA-384 PCR.
pub const PCR_BYTES: usize = 48;

/// One PCR value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pcr(pub [u8; PCR_BYTES]);

impl fmt::Display for Pcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Pcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pcr({self})")
    }
}

impl Serialize for Pcr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The image's measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Measurements {
    /// How the PCRs were computed, as nitro-cli names it.
    #[serde(rename = "HashAlgorithm")]
    pub hash_algorithm: &'static str,
    /// PCR0: the whole image.
    #[serde(rename = "PCR0")]
    pub pcr0: Pcr,
    /// PCR1: kernel, cmdline and bootstrap ramdisk.
    #[serde(rename = "PCR1")]
    pub pcr1: Pcr,
    /// PCR2: the application ramdisks.
    #[serde(rename = "PCR2")]
    pub pcr2: Pcr,
    /// PCR8: the certificate that signed the image, if it is signed.
    #[serde(rename = "PCR8", skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<Pcr>,
}

/// nitro-cli's name for the hash (the `Debug` form of the hasher it uses).
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// One PCR being measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct PcrHasher(Sha384);

impl PcrHasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The PCR: the measured digest extended into a zeroed register.
    pub(crate) fn finish(self) -> Pcr {
        let measured = self.0.finalize();
        let mut extend = Sha384::new();
        extend.update([0u8; PCR_BYTES]);
        extend.update(measured);
        Pcr(extend.finalize().into())
    }
}

/// The PCR that measures what `reader` yields, alone (what nitro-cli's `pcr --input`
/// prints for a file).
pub fn pcr_of_reader(mut reader: impl std::io::Read) -> std::io::Result<Pcr> {
    let mut hasher = PcrHasher::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(buffer.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Measures an image given its kernel, command line and ramdisks in file order.
pub fn measure<'a>(
    kernel: &[u8],
    cmdline: &[u8],
    ramdisks: impl IntoIterator<Item = &'a [u8]>,
) -> Measurements {
    let mut image = PcrHasher::default();
    let mut bootstrap = PcrHasher::default();
    let mut application = PcrHasher::default();
    for part in [kernel, cmdline] {
        image.update(part);
        bootstrap.update(part);
    }
    for (index, ramdisk) in ramdisks.into_iter().enumerate() {
        image.update(ramdisk);
        if index == 0 {
            bootstrap.update(ramdisk);
        } else {
            application.update(ramdisk);
        }
    }
    Measurements {
        hash_algorithm: HASH_ALGORITHM,
        pcr0: image.finish(),
        pcr1: bootstrap.finish(),
        pcr2: application.finish(),
        pcr8: None,
    }
}
