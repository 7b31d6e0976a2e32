//! The key of the server's store (SQLCipher), and where it comes from: never the data
//! directory, so a copy of the data directory alone reads as noise (RELIABILITY.md,
//! "Encrypted at rest"; docs/operations.md).
//!
//! In order, the first that is given:
//! 1. `--store-key-file PATH` (or `CHARTSYNC_STORE_KEY_FILE`): a file holding 64 hex digits;
//! 2. `CHARTSYNC_STORE_KEY`: the 64 hex digits themselves;
//! 3. a systemd credential named `chartsync-store-key` (`LoadCredential=` or
//!    `LoadCredentialEncrypted=`; systemd sets `CREDENTIALS_DIRECTORY`);
//! 4. `$XDG_CONFIG_HOME/chartsync/store.key` (or `~/.config/…`), made with a new store.
//!
//! `--unencrypted-store` keeps a plain SQLite store, for development. A plain store found
//! where a key is expected is refused with the command that encrypts it
//! (`chartsync-records encrypt`), never opened as if nothing were wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use chartsync_core::store::EncryptionKey;

/// The name of the systemd credential that holds the key.
pub const CREDENTIAL: &str = "chartsync-store-key";
/// The environment variable that holds the key itself.
pub const KEY_VARIABLE: &str = "CHARTSYNC_STORE_KEY";

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreKeyArgs {
    /// A file holding the store's encryption key (64 hex digits), outside the data directory.
    /// Without it: CHARTSYNC_STORE_KEY, then the systemd credential `chartsync-store-key`,
    /// then $XDG_CONFIG_HOME/chartsync/store.key (made with a new store).
    #[arg(long, global = true, env = "CHARTSYNC_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
    /// Keep the store unencrypted (plain SQLite), for development only.
    #[arg(long, global = true)]
    pub unencrypted_store: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreKeyError {
    #[error("{0}: the store's key must not be kept in the data directory (a copy of the directory would carry its own key); move it elsewhere")]
    InDataDirectory(PathBuf),
    #[error("{0}: not a store key (64 hex digits)")]
    Malformed(String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the store in {dir} is encrypted and no key was found: give --store-key-file, CHARTSYNC_STORE_KEY or the systemd credential chartsync-store-key")]
    NoKey { dir: PathBuf },
    #[error("the store in {dir} is not encrypted: stop the server and run `chartsync-records encrypt --data-dir {dir}` (with the same key options), or start with --unencrypted-store")]
    PlainStore { dir: PathBuf },
    #[error("no place for the store's key: set XDG_CONFIG_HOME or HOME, or give --store-key-file")]
    NoHome,
}

/// Where the key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Variable,
    Credential(PathBuf),
    /// The default file; `made`: it was made just now, for a new store.
    Default {
        path: PathBuf,
        made: bool,
    },
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) | KeySource::Credential(p) | KeySource::Default { path: p, .. } => {
                write!(f, "{}", p.display())
            }
            KeySource::Variable => f.write_str(KEY_VARIABLE),
        }
    }
}

/// Whether the file at `path` is a plain (unencrypted) SQLite database: its header is
/// readable. An encrypted store's first bytes are its random salt.
pub fn is_plain_store(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == b"SQLite format 3\0")
}

fn exists_with_data(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

impl StoreKeyArgs {
    /// The key for the store `store` in `data_dir` (`None`: keep it plain), and where it came
    /// from. A plain store found while a key is expected is refused unless `plain_ok` (the
    /// command that encrypts it).
    pub fn resolve(
        &self,
        data_dir: &Path,
        store: &Path,
        plain_ok: bool,
    ) -> Result<Option<(EncryptionKey, KeySource)>, StoreKeyError> {
        if self.unencrypted_store {
            return Ok(None);
        }
        if !plain_ok && is_plain_store(store) {
            return Err(StoreKeyError::PlainStore {
                dir: data_dir.to_path_buf(),
            });
        }
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(path) = &self.store_key_file {
            return read_key_file(path, data_dir).map(|k| Some((k, KeySource::File(path.clone()))));
        }
        if let Some(hex) = env(KEY_VARIABLE) {
            let key = parse_key(hex.to_string_lossy().trim())
                .ok_or_else(|| StoreKeyError::Malformed(KEY_VARIABLE.into()))?;
            return Ok(Some((key, KeySource::Variable)));
        }
        if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
            let path = PathBuf::from(dir).join(CREDENTIAL);
            if path.exists() {
                return read_key_file(&path, data_dir)
                    .map(|k| Some((k, KeySource::Credential(path))));
            }
        }
        let config = env("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or(StoreKeyError::NoHome)?;
        let path = config.join("chartsync").join("store.key");
        if path.exists() {
            return read_key_file(&path, data_dir).map(|k| {
                Some((
                    k,
                    KeySource::Default {
                        path: path.clone(),
                        made: false,
                    },
                ))
            });
        }
        if exists_with_data(store) {
            return Err(StoreKeyError::NoKey {
                dir: data_dir.to_path_buf(),
            });
        }
        let key = make_key_file(&path)?;
        Ok(Some((key, KeySource::Default { path, made: true })))
    }
}

fn parse_key(hex_digits: &str) -> Option<EncryptionKey> {
    let bytes: [u8; 32] = hex::decode(hex_digits).ok()?.try_into().ok()?;
    Some(EncryptionKey::new(bytes))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreKeyError + '_ {
    move |error| StoreKeyError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn read_key_file(path: &Path, data_dir: &Path) -> Result<EncryptionKey, StoreKeyError> {
    let real = std::fs::canonicalize(path).map_err(io(path))?;
    if let Ok(dir) = std::fs::canonicalize(data_dir) {
        if real.starts_with(&dir) {
            return Err(StoreKeyError::InDataDirectory(path.to_path_buf()));
        }
    }
    let text = std::fs::read_to_string(&real).map_err(io(path))?;
    parse_key(text.trim()).ok_or_else(|| StoreKeyError::Malformed(path.display().to_string()))
}

/// A new random key, written to `path` (0600, its directory 0700), which must not exist.
fn make_key_file(path: &Path) -> Result<EncryptionKey, StoreKeyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreKeyError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e.to_string()),
    })?;
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io(dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    writeln!(file, "{}", hex::encode(bytes)).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(EncryptionKey::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: Option<PathBuf>) -> StoreKeyArgs {
        StoreKeyArgs {
            store_key_file: file,
            unencrypted_store: false,
        }
    }

    #[test]
    fn a_key_file_in_the_data_directory_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let inside = data.path().join("store.key");
        std::fs::write(&inside, "ab".repeat(32)).unwrap();
        let store = data.path().join("charts.db");
        assert!(matches!(
            args(Some(inside)).resolve(data.path(), &store, false),
            Err(StoreKeyError::InDataDirectory(_))
        ));
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_by_name() {
        let data = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let file = keys.path().join("store.key");
        for bad in ["", "not hex", &"ab".repeat(31), &"ab".repeat(33)] {
            std::fs::write(&file, bad).unwrap();
            let err = args(Some(file.clone()))
                .resolve(data.path(), &data.path().join("charts.db"), false)
                .unwrap_err();
            assert!(matches!(err, StoreKeyError::Malformed(_)), "{bad:?}: {err}");
            assert!(!err.to_string().contains("abab"), "the key is not quoted");
        }
        std::fs::write(&file, format!("{}\n", "ab".repeat(32))).unwrap();
        let (key, source) = args(Some(file.clone()))
            .resolve(data.path(), &data.path().join("charts.db"), false)
            .unwrap()
            .unwrap();
        assert_eq!(key, EncryptionKey::new([0xab; 32]));
        assert_eq!(source, KeySource::File(file));
    }

    #[test]
    fn a_plain_store_is_refused_with_the_command_that_encrypts_it() {
        let data = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let file = keys.path().join("store.key");
        std::fs::write(&file, "cd".repeat(32)).unwrap();
        let store = data.path().join("charts.db");
        chartsync_core::store::ChartStore::open(
            &store,
            chartsync_core::store::StoreOptions::default(),
        )
        .unwrap();
        let err = args(Some(file.clone()))
            .resolve(data.path(), &store, false)
            .unwrap_err();
        assert!(matches!(err, StoreKeyError::PlainStore { .. }));
        assert!(
            err.to_string().contains("chartsync-records encrypt"),
            "{err}"
        );
        // The command that encrypts it may open it.
        assert!(args(Some(file)).resolve(data.path(), &store, true).is_ok());
        // And a development server that asks for a plain store gets one.
        let plain = StoreKeyArgs {
            store_key_file: None,
            unencrypted_store: true,
        };
        assert!(plain.resolve(data.path(), &store, false).unwrap().is_none());
    }
}
