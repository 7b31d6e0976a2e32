//! chartsync-ffi: chartsync-core for the Kotlin (Android) and Swift (iOS) tablet apps, through
//! uniffi proc-macros. The apps get the same charts, rules, store and sync as the server, not
//! a re-implementation:
//!
//! - [`ChartStore`]: the tablet's encrypted store: listings, deficiencies, new and existing
//!   charts, bulk import with progress;
//! - [`Chart`]: one chart as the signed-in person sees and writes it; every write is a durable
//!   commit to the store, picked up by the sync client;
//! - [`SyncClient`]: syncs the store with a chartsync server (or any automerge-repo server),
//!   reports its status, and tells a [`ChartsyncListener`] the app implements what changed;
//! - [`Tablet`] and [`Session`]: a shared ward tablet: enrolment, a person's sign-in online
//!   once and then offline with a PIN, the automatic lock; charts opened with a session write
//!   as that person, each change signed with their key;
//! - [`ChartsyncError`]: the one error type, with no patient data in its messages.
//!
//! The records and enums (`ChartView`, `NewEntry`, `Staff`, `Role`, ...) are core's own,
//! derived under its `uniffi` feature; timestamps cross as the platform's instant type.

uniffi::setup_scaffolding!();

mod chart;
mod error;
mod store;
mod sync;
mod tablet;

pub use chart::{Chart, ConflictChoice};
pub use error::ChartsyncError;
pub use store::{
    ChartDocument, ChartStore, ImportListener, ImportStatus, PurgedChart, SetAsideChart,
};
pub use sync::{ChartsyncListener, SyncClient, SyncConfig, SyncStatus};
pub use tablet::{open_tablet, PinCost, Session, Tablet, TabletPerson};

/// The library's version, to show in an app's about screen and in support requests.
#[uniffi::export]
pub fn chartsync_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
