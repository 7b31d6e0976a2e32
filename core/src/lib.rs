//! chartsync-core: what a tablet and the server share: chart documents, code validation,
//! the embedded store and the sync protocol.

#[cfg(feature = "uniffi")]
uniffi::setup_scaffolding!();

pub mod census;
pub mod chart;
#[cfg(feature = "client")]
pub mod client;
pub mod codes;
pub mod fhir;
pub mod protocol;
pub mod seeded;
pub mod store;
pub mod tablet;
pub mod trust;
