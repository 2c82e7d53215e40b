// SPDX-License-Identifier: Apache-2.0
//! The emulated parent's hypervisor: before an enclave "starts", it finds the EIF at 8 MiB
//! of the enclave's memory (the donated regions, concatenated in the order they were
//! added), validates it and measures PCR0/1/2, as the Nitro hypervisor does. A bad image
//! is refused with `ENOEXEC`. Running itself is simulated: nothing is booted.

use std::collections::BTreeMap;
use std::sync::Arc;

use ne_abi::uapi::EIF_LOAD_OFFSET;
use ne_device::{
    EnclaveSpec, Hypervisor, HypervisorEvent, MemRegion, SimulatedHypervisor, StartProgress,
    StartRefused,
};
use ne_eif::format::HEADER_SIZE;
use ne_eif::{read_header, Eif, Measurements};

use crate::ram::ParentRam;

/// The errno `ENCLAVE_START` answers when the image in enclave memory is not a valid EIF:
/// `ENOEXEC`, "exec format error".
pub const ENOEXEC: i32 = 8;

/// What the hypervisor learnt from an enclave's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image's PCRs.
    pub measurements: Measurements,
    /// The image's size in bytes.
    pub size: u64,
    /// The metadata's image name, if any.
    pub name: Option<String>,
}

/// Enclave memory: the donated regions of parent RAM, concatenated in order.
struct EnclaveMemory<'a> {
    ram: &'a ParentRam,
    regions: &'a [MemRegion],
}

impl EnclaveMemory<'_> {
    fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Reads `buf.len()` bytes at `offset` of enclave memory.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut done = 0usize;
        let mut region_start = 0u64;
        for region in self.regions {
            let region_end = region_start + region.size;
            while done < buf.len() {
                let at = offset + done as u64;
                if at >= region_end {
                    break;
                }
                let within = at - region_start;
                let len = usize::try_from(region.size - within)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - done);
                self.ram
                    .read(region.paddr + within, &mut buf[done..done + len])
                    .map_err(|e| e.to_string())?;
                done += len;
            }
            region_start = region_end;
        }
        if done < buf.len() {
            return Err(format!("enclave memory ends at {} bytes", self.size()));
        }
        Ok(())
    }
}

/// Reads, validates and measures the EIF at 8 MiB of the enclave's memory.
pub fn load_image(ram: &ParentRam, regions: &[MemRegion]) -> Result<LoadedImage, String> {
    let memory = EnclaveMemory { ram, regions };
    let available = memory.size().saturating_sub(EIF_LOAD_OFFSET);
    if available < HEADER_SIZE as u64 {
        return Err(format!(
            "enclave memory ({} bytes) leaves no room for an EIF at 8 MiB",
            memory.size()
        ));
    }
    let mut head = vec![0u8; HEADER_SIZE];
    memory.read(EIF_LOAD_OFFSET, &mut head)?;
    let header = read_header(&head).map_err(|e| e.to_string())?;
    let len = header
        .image_len()
        .ok_or_else(|| "the EIF's section table is empty or overflows".to_owned())?;
    if len > available {
        return Err(format!(
            "the EIF claims {len} bytes, but only {available} follow its start in enclave memory"
        ));
    }
    let mut image = vec![0u8; usize::try_from(len).map_err(|_| "the EIF is too large".to_owned())?];
    memory.read(EIF_LOAD_OFFSET, &mut image)?;
    let eif = Eif::parse(&image).map_err(|e| e.to_string())?;
    let name = eif.metadata().ok().flatten().map(|m| m.image_name);
    Ok(LoadedImage {
        measurements: eif.measurements(),
        size: len,
        name,
    })
}

/// A hypervisor that checks and measures images, then simulates running them.
#[derive(Debug)]
pub struct EifHypervisor {
    ram: Arc<ParentRam>,
    simulated: SimulatedHypervisor,
    images: BTreeMap<u64, LoadedImage>,
}

impl EifHypervisor {
    /// A hypervisor reading images from `ram`.
    pub fn new(ram: Arc<ParentRam>) -> Self {
        EifHypervisor {
            ram,
            simulated: SimulatedHypervisor::new(),
            images: BTreeMap::new(),
        }
    }

    /// The image of the enclave in slot `slot_uid`, while it runs or after it stopped.
    pub fn image(&self, slot_uid: u64) -> Option<&LoadedImage> {
        self.images.get(&slot_uid)
    }

    /// The simulation underneath, to make enclaves exit or crash.
    pub fn simulated_mut(&mut self) -> &mut SimulatedHypervisor {
        &mut self.simulated
    }
}

impl Hypervisor for EifHypervisor {
    fn start(&mut self, enclave: &EnclaveSpec<'_>) -> Result<StartProgress, StartRefused> {
        let image = load_image(&self.ram, enclave.regions).map_err(|reason| {
            tracing::warn!(
                slot = enclave.slot_uid,
                "refusing to start the enclave: {reason}"
            );
            StartRefused {
                errno: ENOEXEC,
                reason: format!("invalid enclave image: {reason}"),
            }
        })?;
        let progress = self.simulated.start(enclave)?;
        tracing::info!(
            slot = enclave.slot_uid,
            cid = enclave.cid,
            pcr0 = %image.measurements.pcr0,
            "enclave started"
        );
        self.images.insert(enclave.slot_uid, image);
        Ok(progress)
    }

    fn stop(&mut self, slot_uid: u64) {
        self.simulated.stop(slot_uid);
        self.images.remove(&slot_uid);
    }

    fn poll_event(&mut self) -> Option<HypervisorEvent> {
        self.simulated.poll_event()
    }
}
