// SPDX-License-Identifier: Apache-2.0
//! The Enclave Image Format (EIF): what a parent places in enclave memory and the
//! hypervisor boots.
//!
//! [`Eif::parse`] reads and validates an image (magic, version, section table, CRC, the
//! required sections, metadata); [`Eif::measurements`] computes PCR0, PCR1 and PCR2 as
//! the hypervisor measures them; [`EifBuilder`] writes an image from a kernel, a command
//! line and ramdisks, with every metadata key nitro-cli requires.
//!
//! Images are read from memory, not files: the hypervisor finds them in enclave memory,
//! and [`Header::image_len`] tells how many bytes to take. Signature sections are kept but
//! not verified (PCR8 needs the certificate's X.509 parsing, which this crate leaves out).
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod build;
pub mod cose;
pub mod format;
mod initramfs;
mod measure;
mod metadata;
mod read;
mod signature;

pub use build::{BuildError, EifBuilder};
pub use format::{Header, SectionType};
pub use initramfs::Initramfs;
pub use measure::{measure, pcr_of_reader, Measurements, Pcr, HASH_ALGORITHM, PCR_BYTES};
pub use metadata::{BuildInfo, Metadata};
pub use read::{read_header, Eif, EifError, Section};
pub use signature::{certificate_pcr, signature_section, PcrSignature};
