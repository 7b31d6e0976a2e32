//! chartsync-ffi: the tablet apps' view of chartsync-core. The uniffi surface (ChartStore,
//! Chart, SyncClient, one flat error enum) is built by the bindings issue; until then this
//! crate only re-exports the core so the workspace's shape is in place.

pub use chartsync_core as core;
