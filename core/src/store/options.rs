//! How a store is opened. The defaults suit a tablet and the server alike: every commit durable
//! before it returns, background compaction, a 64 MiB cache of open charts.

use std::fmt;
use std::sync::Arc;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The commit is on disk (fsync) before it returns: it survives a power cut.
    /// SQLite `synchronous=FULL`.
    #[default]
    Full,
    /// The commit survives the app being killed but not a power cut or OS crash: the last
    /// commits may be lost then. SQLite `synchronous=NORMAL`. For bulk loads and tests.
    Normal,
}

/// When accumulated changes are folded into a new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compaction {
    /// A background thread compacts a chart once its changes outgrow its snapshot.
    #[default]
    Background,
    /// Only when [`super::ChartStore::compact`] is called.
    Manual,
}

/// A 256-bit key for SQLCipher. The app generates it with a secure random source and keeps it
/// in the platform's key store (Android Keystore, iOS Keychain); the store never writes it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    pub fn new(bytes: [u8; 32]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    /// The key as SQLCipher takes a raw key in `ATTACH … KEY ?`: `x'…'`.
    pub(crate) fn raw_literal(&self) -> String {
        format!("x'{}'", hex::encode(self.0))
    }

    /// The key as SQLCipher's raw-key literal, which skips its passphrase derivation so a
    /// store opens in milliseconds.
    pub(crate) fn pragma_literal(&self) -> String {
        format!("\"x'{}'\"", hex::encode(self.0))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Encrypts the whole file (SQLCipher). `None`: a plain SQLite file.
    pub encryption_key: Option<EncryptionKey>,
    /// Roughly how much memory open charts may take before the least recently used are
    /// dropped (charts in use are never dropped).
    pub cache_bytes: usize,
    pub compaction: Compaction,
    /// A chart's changes are compacted once they exceed both its snapshot and this size.
    pub compact_min_bytes: u64,
    /// Hears how far the store has got when opening it means rebuilding its audit index (the
    /// chart audit's rules changed since the index was built): every chart is read once,
    /// which on a server takes minutes. Called with (charts done, charts in all).
    pub on_rebuild: Option<RebuildListener>,
    /// Where the hash of every committed change is appended (a server's data directory): how
    /// a server restored from a backup recognises changes it accepted before (`receipts`).
    pub receipts: Option<Arc<super::Receipts>>,
    /// On PostgreSQL: the most connections the store keeps open to the database.
    pub connections: u32,
    /// On PostgreSQL: whether this store competes for the single-writer lease (see
    /// [`ChartStore::holds_lease`](super::ChartStore::holds_lease)). A server node does; a
    /// records office's command, or a look at the database from outside, does not.
    pub lease: bool,
}

/// See [`StoreOptions::on_rebuild`].
#[derive(Clone)]
pub struct RebuildListener(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl fmt::Debug for RebuildListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RebuildListener(..)")
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            encryption_key: None,
            cache_bytes: 64 * 1024 * 1024,
            compaction: Compaction::Background,
            compact_min_bytes: 16 * 1024,
            on_rebuild: None,
            receipts: None,
            connections: 16,
            lease: true,
        }
    }
}
