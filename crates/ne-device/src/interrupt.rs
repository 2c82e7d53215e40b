// SPDX-License-Identifier: Apache-2.0
//! The interrupt sink the host injects (cf. `vm_superio::Trigger`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

pub use ne_abi::MsixVector;

/// Raises one MSI-X vector of the device on the host's side: an eventfd write, a message to
/// a VMM's interrupt controller, a counter in a test.
pub trait Interrupt {
    /// Why the vector could not be raised (a host-side failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Raises `vector`. The device calls it only for vectors that are enabled and unmasked
    /// (or, without MSI-X gating, whenever it signals).
    fn trigger(&self, vector: MsixVector) -> Result<(), Self::Error>;
}

/// An interrupt sink that drops every vector.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInterrupts;

impl Interrupt for NoInterrupts {
    type Error = Infallible;

    fn trigger(&self, _vector: MsixVector) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<T: Interrupt> Interrupt for Arc<T> {
    type Error = T::Error;

    fn trigger(&self, vector: MsixVector) -> Result<(), Self::Error> {
        self.as_ref().trigger(vector)
    }
}

/// An interrupt sink that records every vector raised, in order; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingInterrupts {
    raised: Arc<Mutex<Vec<MsixVector>>>,
}

impl RecordingInterrupts {
    /// A sink with an empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every vector raised so far, in order.
    pub fn raised(&self) -> Vec<MsixVector> {
        self.lock().clone()
    }

    /// How many times `vector` was raised.
    pub fn count(&self, vector: MsixVector) -> usize {
        self.lock()
            .iter()
            .filter(|&&raised| raised == vector)
            .count()
    }

    /// Empties the record, returning what it held.
    pub fn take(&self) -> Vec<MsixVector> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MsixVector>> {
        // A poisoned record still holds every vector pushed before the panic.
        self.raised
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Interrupt for RecordingInterrupts {
    type Error = Infallible;

    fn trigger(&self, vector: MsixVector) -> Result<(), Infallible> {
        self.lock().push(vector);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_shared_sink_records_through_its_arc() {
        let sink = Arc::new(RecordingInterrupts::new());
        Interrupt::trigger(&sink, MsixVector::Event).unwrap();
        assert_eq!(sink.raised(), vec![MsixVector::Event]);
    }
}
