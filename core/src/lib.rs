//! chartsync-core: what a tablet and the server share: chart documents, code validation,
//! the embedded store and the sync protocol.

pub mod chart;
pub mod codes;
pub mod protocol;
pub mod store;
