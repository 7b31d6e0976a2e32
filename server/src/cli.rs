//! `chartsync-records`: the records office's command line. It works on the server's store
//! directly (`--data-dir`), or reads through a running server's REST API (`--server` with a
//! `--token`): import charts, export one as FHIR, list deficiencies, make a patient's
//! accounting of disclosures, compact the store and verify it; back it up while the server
//! runs, and restore it with the server stopped (docs/operations.md).
//!
//! Writes to the store (import, compact) need the server stopped: they take the data
//! directory's lock, which a running server holds. Reads do not. Every local read and write is
//! audited under `--user`, as the REST API audits its users. Errors name lines, items and
//! chart ids, never a patient's data.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chartsync_core::chart::{check_identifier, ChartId, DeficiencyKind, Role, Timestamp};
use chartsync_core::store::{
    Actor, AuditAction, ChartFilter, ChartStore, DeficiencyFilter, EncryptionKey, RebuildListener,
    StoreError, StoreOptions,
};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "chartsync-records",
    version,
    about = "The records office's tools: import, FHIR export, deficiencies, accounting of disclosures, compact, verify, backup, restore, copy to PostgreSQL"
)]
struct Cli {
    /// The server's data directory, to work on its store directly.
    #[arg(long, global = true, default_value = "./chartsync-data")]
    data_dir: PathBuf,
    /// A running server (http://host:port) to read through instead, with --token.
    #[arg(long, global = true)]
    server: Option<String>,
    /// The bearer token for --server (`chartsync-server token` makes one).
    #[arg(long, global = true, env = "CHARTSYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Who is at the keyboard: the audit trail names them for local reads and imports.
    #[arg(long, global = true, env = "USER", default_value = "records-office")]
    user: String,
    #[command(flatten)]
    store_key: crate::store_key::StoreKeyArgs,
    /// The servers' PostgreSQL database, when the store is there (as `serve --database-url`).
    #[arg(long, global = true, env = "CHARTSYNC_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encrypt a plain store in place (SQLCipher) with the key the server uses (see
    /// --store-key-file); the server must be stopped. The encrypted copy is checked before it
    /// replaces the plain file.
    Encrypt,
    /// Import charts from a JSON array or an NDJSON file: all of them, or (on any error) none.
    Import {
        /// Each item is an admission ({"patient", "encounter", "admitted_at"[, "id"]}) or a
        /// saved chart ({"id", "automerge": base64}).
        file: PathBuf,
    },
    /// Write one chart as a FHIR R4 Bundle.
    ExportFhir {
        /// The chart's id.
        chart: String,
        /// Where to write it (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List deficiencies, soonest due first.
    Deficiencies {
        #[arg(long)]
        ward: Option<String>,
        /// Only those past their due date.
        #[arg(long)]
        overdue: bool,
        /// Only this kind (unsigned_entry, history_physical_missing, ...: docs/records-office.md).
        #[arg(long)]
        kind: Option<String>,
        /// Only those for this person or role: the person they are assigned to, else who the
        /// rules name.
        #[arg(long)]
        responsible: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A patient's accounting of disclosures (45 CFR 164.528), six years back.
    Accounting {
        #[arg(long)]
        mrn: String,
        /// CSV instead of JSON.
        #[arg(long)]
        csv: bool,
    },
    /// File a scanned document (a PDF, JPEG or PNG) on a chart, through a running server
    /// (--server, --token): it checks the file and counts its pages; prints the new entry's
    /// id and the file's hash.
    Attach {
        /// The chart's id.
        chart: String,
        /// The file.
        file: PathBuf,
        /// What it is called on the chart ("Consent to surgery").
        #[arg(long)]
        title: String,
        /// consent, advance_directive, outside_record, correspondence, identification,
        /// insurance or other.
        #[arg(long = "type")]
        document_type: String,
        /// The date the document bears, YYYY-MM-DD.
        #[arg(long)]
        date: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Fold every chart's changes into a snapshot, and the write-ahead log into the file.
    Compact,
    /// Check the file's integrity, that every chart loads, and that the index agrees with it.
    Verify,
    /// Copy the store to a new file with SQLite's online backup: safe while the server runs.
    Backup {
        /// The backup file to write; it must not exist.
        to: PathBuf,
    },
    /// Put a backup in place of the store. The server must be stopped; the store it replaces
    /// is kept beside it, and the server starts in recovery (docs/operations.md).
    Restore {
        /// A file `backup` wrote.
        from: PathBuf,
    },
    /// Copy the store into a new, empty PostgreSQL database, with the server stopped: every
    /// chart, the audit trail, the devices' sync states and the server's storage id, so the
    /// tablets carry on without starting over; then check the copy (docs/deploy.md, "Moving
    /// a hospital"). The file is left as it was.
    Copy {
        /// The database (postgres://user@host/database); better given in the environment,
        /// where other users do not see it.
        #[arg(long, env = "CHARTSYNC_COPY_TO", hide_env_values = true)]
        to: String,
    },
}

/// What went wrong, for the person at the keyboard.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("line {line}: {reason}; nothing was imported")]
    Line { line: usize, reason: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("could not reach the server: {0}")]
    Http(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Key(#[from] crate::store_key::StoreKeyError),
}

/// Runs the command line; the exit code is 0 on success, 1 on failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`deficiencies | head`): what it wanted it has.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    check_identifier("user", &cli.user).map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(server) = &cli.server {
        let token = cli
            .token
            .as_deref()
            .ok_or_else(|| CliError::Usage("--server needs --token (or CHARTSYNC_TOKEN)".into()))?;
        let remote = Remote {
            base: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        };
        return remote.run(cli.command).map(|()| ExitCode::SUCCESS);
    }
    let actor = Actor {
        user: cli.user.clone(),
        role: Role::Admin.token().to_string(),
        device: "chartsync-records".into(),
    };
    if let Some(url) = &cli.database_url {
        if matches!(cli.command, Command::Copy { .. }) {
            return Err(CliError::Usage(
                "copy reads a server's data directory (--data-dir) into the database named by --to; --database-url names a store already in a database".into(),
            ));
        }
        return in_database(url, cli.command, &actor);
    }
    // Only an import or a restore makes a store; anything else on a directory without one is
    // a mistyped path, and leaves nothing behind.
    let store_path = cli.data_dir.join("charts.db");
    if !matches!(
        cli.command,
        Command::Import { .. } | Command::Restore { .. }
    ) && !store_path.exists()
    {
        return Err(CliError::File {
            path: store_path.display().to_string(),
            reason: "no store here; give the server's --data-dir".into(),
        });
    }
    let encrypting = matches!(cli.command, Command::Encrypt);
    let key = cli
        .store_key
        .resolve(&cli.data_dir, &store_path, encrypting)?;
    let keyed = StoreOptions {
        encryption_key: key.as_ref().map(|(key, _)| key.clone()),
        ..StoreOptions::default()
    };
    // A backup reads while the server writes: SQLite's locks keep the copy whole.
    if let Command::Backup { to } = &cli.command {
        eprintln!("copying {} ...", store_path.display());
        let report = chartsync_core::store::backup::backup(&store_path, to, &keyed)?;
        println!(
            "backed up {} charts ({} bytes) to {}",
            report.charts,
            report.bytes,
            to.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Opening the store may upgrade it and rebuild its index, and its reads must not race
    // a server's commits: local work waits for the server to stop.
    let _lock = exclusive(&cli.data_dir)?;
    match cli.command {
        Command::Backup { .. } => {}
        Command::Encrypt => encrypt(&store_path, key)?,
        Command::Restore { from } => restore(&cli.data_dir, &from, &keyed)?,
        Command::Copy { to } => copy(&cli.data_dir, &open_store(&store_path, &keyed)?, &to)?,
        command => {
            return on_store(command, &actor, || {
                Ok(Opened {
                    store: open_store(&store_path, &keyed)?,
                    _lock: None,
                })
            })
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands that work on an open store, wherever it is.
fn on_store(
    command: Command,
    actor: &Actor,
    open: impl Fn() -> Result<Opened, CliError>,
) -> Result<ExitCode, CliError> {
    match command {
        // The file's own tools work on the file, not on an open store.
        Command::Encrypt
        | Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Copy { .. } => {
            return Err(CliError::Usage(
                "encrypt, backup, restore and copy work on the store's file, not on an open store"
                    .into(),
            ))
        }
        Command::Import { file } => {
            import(&*open()?, actor, &file)?;
        }
        Command::Compact => {
            compact(&*open()?)?;
        }
        Command::Verify => {
            let store = open()?;
            if !verify(&store)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Attach { .. } => {
            return Err(CliError::Usage(
                "attach files a document through the running server: give --server and --token"
                    .into(),
            ))
        }
        Command::ExportFhir { chart, output } => {
            let id = parse_chart(&chart)?;
            let store = open()?;
            let bundle = crate::records::audited_fhir_bundle(&store, actor, id)?;
            write_out(
                output.as_deref(),
                &serde_json::to_vec_pretty(&bundle).unwrap_or_default(),
            )?;
        }
        Command::Deficiencies {
            ward,
            overdue,
            kind,
            responsible,
            json,
        } => {
            let kind = kind.as_deref().map(deficiency_kind).transpose()?;
            let store = open()?;
            if let Some(w) = &ward {
                known_ward(&store, w)?;
            }
            let now = Timestamp::now();
            let items = store.worklist(
                &DeficiencyFilter {
                    wards: ward.clone().map(|w| vec![w]),
                    overdue_only: overdue,
                    kind,
                    responsible,
                    ..DeficiencyFilter::default()
                },
                now,
            )?;
            let detail = match &ward {
                Some(w) => format!("deficiencies: ward {w}"),
                None => "deficiencies: every ward".into(),
            };
            store.record_audit(actor, AuditAction::List, None, Some(&detail))?;
            let worklist = crate::records::Worklist {
                as_of: now,
                deficiencies: items,
            };
            let value = serde_json::to_value(worklist).unwrap_or_default();
            print_deficiencies(&value, json)?;
        }
        Command::Accounting { mrn, csv } => {
            check_identifier("mrn", &mrn).map_err(|e| CliError::Usage(e.to_string()))?;
            let store = open()?;
            let accounting =
                crate::records::audited_accounting(&store, actor, &mrn, Timestamp::now())?;
            if accounting.charts.is_empty() {
                return Err(CliError::Usage(crate::records::no_such_patient(&mrn)));
            }
            let body = if csv {
                crate::records::accounting_csv(&accounting)
                    .map_err(|e| CliError::Usage(e.to_string()))?
            } else {
                serde_json::to_vec_pretty(&accounting).unwrap_or_default()
            };
            write_out(None, &body)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands on a store in PostgreSQL. The file's own tools (encrypt, backup, restore)
/// are the database's there.
fn in_database(url: &str, command: Command, actor: &Actor) -> Result<ExitCode, CliError> {
    if matches!(
        command,
        Command::Encrypt | Command::Backup { .. } | Command::Restore { .. }
    ) {
        return Err(CliError::Usage(
            "the store is in PostgreSQL: back it up, restore it and encrypt it with the database's own tools (docs/deploy.md)".into(),
        ));
    }
    let writes = matches!(command, Command::Import { .. } | Command::Compact);
    on_store(command, actor, || {
        let store = ChartStore::open_postgres(
            url,
            StoreOptions {
                // A command does its own work and leaves the nodes' to them.
                lease: false,
                ..StoreOptions::default()
            },
        )?;
        // As the data directory's lock does for a file: writes wait for every server node to
        // stop (each holds this lock shared), and no node starts until they are done.
        let lock = match writes {
            true => Some(store.serving_lock(true)?.ok_or_else(|| {
                CliError::Usage(
                    "the database is in use by a running chartsync-server; stop every node first, or read through a server with --server and a token".into(),
                )
            })?),
            false => None,
        };
        Ok(Opened { store, _lock: lock })
    })
}

/// The store a command works on, and the database's lock while it writes there.
struct Opened {
    store: ChartStore,
    _lock: Option<chartsync_core::store::DatabaseLock>,
}

impl std::ops::Deref for Opened {
    type Target = ChartStore;
    fn deref(&self) -> &ChartStore {
        &self.store
    }
}

/// Puts a backup in place, and marks the data directory as restored: the server then takes
/// back from the tablets what it had accepted since the backup (its receipts), rather than
/// holding other people's changes the tablets send again.
fn restore(data_dir: &Path, from: &Path, options: &StoreOptions) -> Result<(), CliError> {
    if !from.is_file() {
        return Err(CliError::File {
            path: from.display().to_string(),
            reason: "no backup file here".into(),
        });
    }
    eprintln!("checking {} ...", from.display());
    let report = chartsync_core::store::backup::restore(from, &data_dir.join("charts.db"), options)
        .map_err(|e| CliError::File {
            path: from.display().to_string(),
            reason: format!("not restored, the store is as it was: {e}"),
        })?;
    crate::mark_restored(data_dir)?;
    println!("restored {} charts from {}", report.charts, from.display());
    if let Some(previous) = report.previous {
        println!("the store it replaced is kept as {}", previous.display());
    }
    println!(
        "start the server: tablets send again what it lost, and it takes back what it had accepted"
    );
    Ok(())
}

/// Encrypts the plain store in place with `key`, or says it is encrypted already.
fn encrypt(
    store: &Path,
    key: Option<(EncryptionKey, crate::store_key::KeySource)>,
) -> Result<(), CliError> {
    let Some((key, source)) = key else {
        return Err(CliError::Usage(
            "--unencrypted-store: there is no key to encrypt with".into(),
        ));
    };
    if !crate::store_key::is_plain_store(store) {
        // Encrypted already, with this key or another: opening it says which.
        ChartStore::open(
            store,
            StoreOptions {
                encryption_key: Some(key),
                ..StoreOptions::default()
            },
        )?;
        println!("{} is encrypted already, with this key", store.display());
        return Ok(());
    }
    eprintln!("encrypting {} ...", store.display());
    let report = chartsync_core::store::backup::encrypt_in_place(store, &key)?;
    println!(
        "encrypted {} charts and {} audit rows (the chain checked) in {}, with the key from {source}",
        report.charts,
        report.audit_rows,
        store.display()
    );
    if let crate::store_key::KeySource::Default { path, made: true } = &source {
        println!(
            "the key was made just now at {}: back it up apart from the data directory; without it the store cannot be opened",
            path.display()
        );
    }
    println!(
        "backups taken before now are still plain: replace them with a new backup, and keep them as you keep the store"
    );
    Ok(())
}

fn parse_chart(s: &str) -> Result<ChartId, CliError> {
    s.parse()
        .map_err(|_| CliError::Usage("not a chart id (the base58 id the API lists)".into()))
}

/// Opens the store, with a progress bar should its audit index need rebuilding (the audit's
/// rules changed since it was built).
fn open_store(path: &Path, options: &StoreOptions) -> Result<ChartStore, CliError> {
    let progress = bar(0, "rebuilding the audit index");
    let listener = {
        let progress = progress.clone();
        RebuildListener(std::sync::Arc::new(move |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        }))
    };
    let options = StoreOptions {
        on_rebuild: Some(listener),
        ..options.clone()
    };
    let store = ChartStore::open(path, options)?;
    progress.finish_and_clear();
    Ok(store)
}

/// The data directory's lock, which a running server holds for its whole life: writes to the
/// store from outside the server would bypass its cache and its ward censuses, and an upgrade
/// of the store by a newer `chartsync-records` would run under the older server.
fn exclusive(data_dir: &Path) -> Result<std::fs::File, CliError> {
    let file = lock_file(data_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CliError::Usage(format!(
            "{} is in use by a running chartsync-server (or another chartsync-records); stop it first, or read through the server with --server and a token",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

pub(crate) fn lock_file(data_dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("lock"))
}

fn write_out(output: Option<&Path>, bytes: &[u8]) -> Result<(), CliError> {
    match output {
        Some(path) => std::fs::write(path, bytes).map_err(|e| CliError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            if !bytes.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    // Drawn on a terminal only; a log file gets the summary lines.
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn import(store: &ChartStore, actor: &Actor, file: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| CliError::File {
        path: file.display().to_string(),
        reason: e.to_string(),
    })?;
    let checking = bar(0, "checking ");
    let writing = bar(0, "importing");
    let imported = crate::import::import(
        store,
        actor,
        &text,
        |_| true,
        |phase, done, total| {
            let bar = match phase {
                crate::import::Phase::Checking => &checking,
                crate::import::Phase::Importing => {
                    checking.finish_and_clear();
                    &writing
                }
            };
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .map_err(|e| match e {
        crate::import::Failure::Empty => CliError::File {
            path: file.display().to_string(),
            reason: "no charts in it".into(),
        },
        crate::import::Failure::Line { line, reason } => CliError::Line { line, reason },
        crate::import::Failure::Store(e) => e.into(),
    })?;
    writing.finish_and_clear();
    eprintln!(
        "imported {} from {}",
        self::charts(imported.charts.len()),
        file.display()
    );
    // What the patient index now says about them: to look into, not refused (ids only).
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    if !imported.warnings.is_empty() {
        eprintln!(
            "{} patient-index {} to look into (the console's Patient index lists them)",
            imported.warnings.len(),
            if imported.warnings.len() == 1 {
                "warning"
            } else {
                "warnings"
            }
        );
    }
    Ok(())
}

fn compact(store: &ChartStore) -> Result<(), CliError> {
    let charts = store.list(&ChartFilter::default())?;
    let progress = bar(charts.len(), "compacting");
    let (mut before, mut after, mut folded) = (0u64, 0u64, 0u64);
    for c in &charts {
        let report = store.compact(c.id)?;
        before += report.bytes_before;
        after += report.bytes_after;
        folded += report.changes_folded;
        progress.inc(1);
    }
    store.checkpoint()?;
    progress.finish_and_clear();
    eprintln!(
        "compacted {}: {folded} changes folded, {before} bytes to {after}",
        self::charts(charts.len())
    );
    Ok(())
}

/// Reports every problem found; true when there were none.
/// `copy --to URL`: the data directory's store into PostgreSQL, with the server's storage id.
fn copy(data_dir: &Path, store: &ChartStore, url: &str) -> Result<(), CliError> {
    let storage_id = crate::storage_id(data_dir)?;
    let rows = bar(0, "copying rows");
    let checked = bar(0, "checking the copy's charts");
    let report = store.copy_to_postgres(url, &storage_id, |p| match p {
        chartsync_core::store::CopyProgress::Rows { done, total, .. } => {
            rows.set_length(total);
            rows.set_position(done);
        }
        chartsync_core::store::CopyProgress::Checked { done, total } => {
            rows.finish_and_clear();
            checked.set_length(total);
            checked.set_position(done);
        }
    })?;
    rows.finish_and_clear();
    checked.finish_and_clear();
    let total: u64 = report.tables.values().sum();
    println!(
        "copied {} charts ({} rows in {} tables) to {}; every chart loads from the copy as the file has it",
        report.charts,
        total,
        report.tables.len(),
        crate::database_name(url)
    );
    println!(
        "audit trail: {} rows, the same chain on both sides, ending in {}",
        report.audit.rows,
        report
            .audit
            .tip
            .map(hex::encode)
            .unwrap_or_else(|| "nothing (empty)".into())
    );
    println!(
        "storage id {}: the tablets know the database as this server; start the servers with --database-url (docs/deploy.md)",
        report.storage_id
    );
    Ok(())
}

fn verify(store: &ChartStore) -> Result<bool, CliError> {
    let mut problems = Vec::new();
    if let Err(e) = store.verify() {
        problems.push(e.to_string());
    }
    // The audit trail's chain: an edit, a deletion or a reordering breaks it at that row.
    match store.verify_audit() {
        Ok(chain) => eprintln!(
            "audit trail: {} rows, chained, ending in {} (note it: a trail cut short at its end leaves a shorter chain that is still whole)",
            chain.rows,
            chain
                .tip
                .map(hex::encode)
                .unwrap_or_else(|| "nothing (empty)".into())
        ),
        Err(e) => problems.push(e.to_string()),
    }
    let charts = store.list(&ChartFilter::default())?;
    let progress = bar(charts.len(), "verifying");
    for c in &charts {
        if let Err(e) = store.check_chart(c.id) {
            problems.push(e.to_string());
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    for p in &problems {
        eprintln!("problem: {p}");
    }
    if problems.is_empty() {
        eprintln!(
            "verified: the file is whole and {} load and agree with their index",
            self::charts(charts.len())
        );
    } else {
        eprintln!(
            "{} found in {}",
            if problems.len() == 1 {
                "1 problem".to_string()
            } else {
                format!("{} problems", problems.len())
            },
            self::charts(charts.len())
        );
    }
    Ok(problems.is_empty())
}

/// A deficiency kind by its token; a wrong one is told the kinds there are.
fn deficiency_kind(token: &str) -> Result<DeficiencyKind, CliError> {
    DeficiencyKind::from_token(token).map_err(|_| {
        let kinds: Vec<&str> = DeficiencyKind::ALL.iter().map(|k| k.token()).collect();
        CliError::Usage(format!(
            "no deficiency kind {token:?}; the kinds are {}",
            kinds.join(", ")
        ))
    })
}

/// A ward no chart in the store is on is a mistyped name, not an empty worklist.
fn known_ward(store: &ChartStore, ward: &str) -> Result<(), CliError> {
    let wards = store.wards()?;
    if wards.iter().any(|w| w == ward) {
        Ok(())
    } else {
        Err(CliError::Usage(crate::records::no_such_ward(ward, &wards)))
    }
}

/// A table of deficiencies, or the JSON as the API gives it.
fn print_deficiencies(value: &serde_json::Value, json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<8} {:<10} {:<30} {:<14} {:<26} {:<16} record",
        "due", "overdue", "ward", "chart", "mrn", "kind", "responsible"
    )?;
    let empty = Vec::new();
    for item in value["deficiencies"].as_array().unwrap_or(&empty) {
        let d = &item["deficiency"];
        let due = d["due_at"]
            .as_str()
            .map(|s| &s[..s.len().min(19)])
            .unwrap_or("-");
        writeln!(
            out,
            "{:<20} {:<8} {:<10} {:<30} {:<14} {:<26} {:<16} {}",
            due,
            if item["overdue"] == true {
                "OVERDUE"
            } else {
                ""
            },
            item["ward"].as_str().unwrap_or(""),
            item["chart"].as_str().unwrap_or(""),
            item["mrn"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or(""),
            d["responsible"].as_str().unwrap_or("-"),
            format!(
                "{}/{}",
                d["section"].as_str().unwrap_or(""),
                d["record_id"].as_str().unwrap_or("")
            )
            .trim_end_matches('/'),
        )?;
    }
    Ok(())
}

/// "1 chart", "2 charts".
fn charts(n: usize) -> String {
    if n == 1 {
        "1 chart".into()
    } else {
        format!("{n} charts")
    }
}

/// Reads through a running server's REST API.
struct Remote {
    base: String,
    token: String,
}

impl Remote {
    fn run(&self, command: Command) -> Result<(), CliError> {
        match command {
            Command::Attach {
                chart,
                file,
                title,
                document_type,
                date,
                description,
            } => {
                let id = parse_chart(&chart)?;
                let bytes = std::fs::read(&file).map_err(|e| CliError::File {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                })?;
                use ureq::unversioned::multipart::{Form, Part};
                let mut form = Form::new()
                    .text("title", &title)
                    .text("document_type", &document_type)
                    .part("file", Part::bytes(&bytes).file_name("document"));
                if let Some(d) = &date {
                    form = form.text("document_date", d);
                }
                if let Some(d) = &description {
                    form = form.text("description", d);
                }
                let body = self.send(&format!("/api/charts/{id}/attachments"), form)?;
                let filed: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| CliError::Http(format!("the server's answer did not read: {e}")))?;
                let done = if filed["restored"] == true {
                    "the file restored, of entry"
                } else {
                    "filed as entry"
                };
                println!(
                    "{done} {} ({} bytes, {} page(s), sha256 {})",
                    filed["entry_id"].as_str().unwrap_or_default(),
                    filed["attachment"]["size"],
                    filed["attachment"]["pages"],
                    filed["attachment"]["hash"].as_str().unwrap_or_default(),
                );
                Ok(())
            }
            Command::ExportFhir { chart, output } => {
                let id = parse_chart(&chart)?;
                let body = self.get(&format!("/api/charts/{id}/fhir"))?;
                write_out(output.as_deref(), &body)
            }
            Command::Deficiencies {
                ward,
                overdue,
                kind,
                responsible,
                json,
            } => {
                let mut query = Vec::new();
                if let Some(w) = &ward {
                    query.push(format!("ward={}", encode(w)));
                }
                if overdue {
                    query.push("overdue=true".into());
                }
                if let Some(k) = &kind {
                    query.push(format!("kind={}", deficiency_kind(k)?.token()));
                }
                if let Some(r) = &responsible {
                    query.push(format!("responsible={}", encode(r)));
                }
                let body = self.get(&format!("/api/deficiencies?{}", query.join("&")))?;
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| CliError::Http(format!("the answer is not JSON: {e}")))?;
                print_deficiencies(&value, json)
            }
            Command::Accounting { mrn, csv } => {
                check_identifier("mrn", &mrn).map_err(|e| CliError::Usage(e.to_string()))?;
                let format = if csv { "csv" } else { "json" };
                let body = self.get(&format!("/api/disclosures?mrn={}&format={format}", encode(&mrn)))?;
                write_out(None, &body)
            }
            Command::Import { .. }
            | Command::Compact
            | Command::Verify
            | Command::Backup { .. }
            | Command::Restore { .. }
            | Command::Copy { .. }
            | Command::Encrypt => Err(CliError::Usage(
                "import, compact, verify, backup, restore, encrypt and copy work on the store itself: give --data-dir, not --server".into(),
            )),
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, CliError> {
        let response = Self::agent()
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("User-Agent", "chartsync-records")
            .call();
        Self::answer(response)
    }

    /// Posts a multipart form.
    fn send(
        &self,
        path: &str,
        form: ureq::unversioned::multipart::Form<'_>,
    ) -> Result<Vec<u8>, CliError> {
        let response = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("User-Agent", "chartsync-records")
            .send(form);
        Self::answer(response)
    }

    /// A 2xx answer's body, or what the server said was wrong.
    fn answer(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, CliError> {
        let mut response = response.map_err(|e| CliError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| CliError::Http(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| "no reason given".into());
            return Err(CliError::Server { status, message });
        }
        Ok(body)
    }
}

/// Percent-encodes a query value (MRNs and ward names are identifiers, but may hold `:` or
/// `@`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
