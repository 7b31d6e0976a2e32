//! Where a test's store lives: a SQLite file, or a PostgreSQL database of its own.

/// A store in `place`, committing without a sync per commit (tests are not about power loss).
pub fn open_store(place: &Place) -> chartsync_core::store::ChartStore {
    use chartsync_core::store::{Durability, StoreOptions};
    place
        .open(StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        })
        .unwrap()
}

/// The variable naming a PostgreSQL server (a URL whose database may create databases) on
/// which the store's behaviour tests run instead of SQLite: scripts/test.sh sets it, for a
/// private cluster it starts, and runs them a second time.
pub const POSTGRES: &str = "CHARTSYNC_TEST_POSTGRES";

/// Where a test's store lives: a SQLite file in a temporary folder, or, when [`POSTGRES`]
/// names a server, a database of its own there (made empty for the test). One suite, both
/// engines: the tests do not know which.
pub struct Place {
    /// Removed when the place is dropped; `None` for a place another process made.
    _dir: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
    url: Option<String>,
}

/// A new place for a store.
pub fn place() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var(POSTGRES).ok().filter(|u| !u.is_empty()).map(|admin| {
        #[cfg(feature = "postgres")]
        {
            new_database(&admin)
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = admin;
            panic!("{POSTGRES} is set, but this build has no PostgreSQL: test with --features postgres")
        }
    });
    Place {
        path: dir.path().to_path_buf(),
        _dir: Some(dir),
        url,
    }
}

/// The place another process's [`Place::location`] names (a crash test's child).
pub fn place_at(location: &str) -> Place {
    let postgres = location.starts_with("postgres://");
    Place {
        _dir: None,
        path: if postgres {
            std::env::temp_dir()
        } else {
            location.into()
        },
        url: postgres.then(|| location.to_string()),
    }
}

impl Place {
    /// Opens (or reopens) the store here.
    pub fn open(
        &self,
        options: chartsync_core::store::StoreOptions,
    ) -> Result<chartsync_core::store::ChartStore, chartsync_core::store::StoreError> {
        match &self.url {
            #[cfg(feature = "postgres")]
            Some(url) => chartsync_core::store::ChartStore::open_postgres(url, options),
            #[cfg(not(feature = "postgres"))]
            Some(_) => unreachable!(),
            None => chartsync_core::store::ChartStore::open(self.path.join("charts.db"), options),
        }
    }

    /// Runs `sql` on the store's database directly, as someone editing it behind the
    /// store's back would (a test's way of ageing rows); the store must be closed.
    pub fn execute(&self, sql: &str) {
        match &self.url {
            #[cfg(feature = "postgres")]
            Some(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client.batch_execute(sql).unwrap();
            }
            #[cfg(not(feature = "postgres"))]
            Some(_) => unreachable!(),
            None => {
                let conn = rusqlite::Connection::open(self.path.join("charts.db")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.is_some()
    }

    /// The place's folder, for what a test writes beside the store.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// What names this place to another process: see [`place_at`].
    pub fn location(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => self.path.display().to_string(),
        }
    }
}

/// A fresh, empty database on the server `admin` names; its URL.
#[cfg(feature = "postgres")]
fn new_database(admin: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    // The server's URL with this database in place of its own; its parameters kept.
    let (url, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (base, _) = url.rsplit_once('/').expect("a URL ending in /database");
    match query {
        "" => format!("{base}/{name}"),
        q => format!("{base}/{name}?{q}"),
    }
}
