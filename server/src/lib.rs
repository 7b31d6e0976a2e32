//! chartsync-server: the sync server. It keeps charts in its store, syncs them with devices
//! over `GET /sync` (automerge-repo's WebSocket protocol) under bearer tokens it issues
//! (`chartsync-server token`), and answers `GET /healthz`.
//!
//! The binary is `src/main.rs`, which calls [`main`]. The end-to-end tests (the workspace's
//! `tests/` crate) build the same entry point into a binary of their own, so they run the
//! real server as a separate process that they can kill.

mod accounting;
mod admin;
mod api;
mod attachments;
mod auth;
mod break_glass;
mod bulk;
mod census;
pub mod cli;
mod coding;
mod completion;
mod console;
mod directory;
mod holds;
mod import;
mod in_process;
mod metrics;
mod openapi;
mod paging;
mod physicians;
mod proofs;
mod records;
mod retention;
mod roi;
mod store_key;
mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chartsync_core::chart::Role;
use chartsync_core::protocol::MAX_MESSAGE_BYTES;
use chartsync_core::store::{ChartStore, StoreOptions};

use auth::Keys;
use clap::{Parser, Subcommand};
use sync::Hub;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Access;
pub use in_process::InProcessServer;
pub use sync::{Effects, Limits, ServerConnection};

#[derive(Parser)]
#[command(name = "chartsync-server", version, about = "chartsync sync server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sync endpoint (also what runs with no subcommand).
    Serve(ServeArgs),
    /// Print a bearer token for a device or a person, signed with the data directory's key.
    Token(TokenArgs),
    /// Retire the token-signing key and make a new one: tokens already issued keep working
    /// (until they expire, or until the retired key file is deleted); new ones use the new
    /// key. Restart the server to take it up.
    RotateTokenKey {
        #[arg(long, default_value = "./chartsync-data")]
        data_dir: PathBuf,
    },
    /// The staff directory: who may sign in on a tablet, in which role, on which wards.
    Staff {
        #[command(flatten)]
        args: admin::AdminArgs,
        #[command(subcommand)]
        command: admin::StaffCommand,
    },
    /// Enrolled tablets: print an enrolment code, list them.
    Device {
        #[command(flatten)]
        args: admin::AdminArgs,
        #[command(subcommand)]
        command: admin::DeviceCommand,
    },
    /// Revoke a person, a certificate or a device: what it proves from then on is held.
    Revoke {
        #[command(flatten)]
        args: admin::AdminArgs,
        #[command(flatten)]
        revoke: admin::RevokeArgs,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The server's data directory (its key is made there on first use).
    #[arg(long, default_value = "./chartsync-data")]
    data_dir: PathBuf,
    /// The user the token speaks for.
    #[arg(long)]
    user: String,
    /// technician, nurse, physician, coder, records_supervisor or admin.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// A ward the token covers; repeat for more; `*` for every ward (the records office).
    #[arg(long = "ward", required = true)]
    wards: Vec<String>,
    /// How long the token lasts: 90s, 30m, 12h, 7d (at most 30 days).
    #[arg(long, default_value = "12h", value_parser = auth::parse_ttl)]
    ttl: std::time::Duration,
}

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    Role::from_token(s).map_err(|e| e.to_string())
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the server keeps its store (and its keys, and the receipts of what it accepted).
    #[arg(long, default_value = "./chartsync-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    store_key: store_key::StoreKeyArgs,
    /// Keep the charts in this PostgreSQL database instead of the data directory's SQLite
    /// file: postgres://user:password@host:5432/database. Give it in the environment
    /// (CHARTSYNC_DATABASE_URL, from a file only the server's user reads) rather than on the
    /// command line, where other users see it. Several server nodes on one database:
    /// docs/deploy.md.
    #[arg(long, env = "CHARTSYNC_DATABASE_URL")]
    database_url: Option<String>,
    /// On PostgreSQL: the most connections this node keeps open to the database.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1000))]
    database_connections: u32,
    /// How long a certificate for a person on a tablet lasts: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "7d", value_parser = auth::parse_ttl)]
    certificate_validity: std::time::Duration,
    /// How long a tablet may sit idle before the signed-in person is locked.
    #[arg(long, default_value = "5m", value_parser = auth::parse_ttl)]
    idle_lock: std::time::Duration,
    /// Wrong PINs before a tablet erases the person's key.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pin_attempts: u32,
    /// How long break-glass access to a chart lasts.
    #[arg(long, default_value = "4h", value_parser = auth::parse_ttl)]
    break_glass: std::time::Duration,
    /// Documents one sync connection may name before it is closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_documents_per_connection: usize,
    /// Requests for documents a connection may not see (or that do not exist), in 10 seconds,
    /// before it is closed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_denials: u32,
    /// Sync connections one sign-in (a person's token, or a tablet) may hold open at once.
    #[arg(long, default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    max_connections_per_user: usize,
    /// A sync connection that sends nothing (not even a ping) for this long is closed.
    #[arg(long, default_value = "10m", value_parser = auth::parse_ttl)]
    idle_timeout: std::time::Duration,
    /// A records console session with no request for this long is signed out (45 CFR
    /// 164.312(a)(2)(iii)); the page warns two minutes before.
    #[arg(long, default_value = "15m", value_parser = auth::parse_ttl)]
    console_idle: std::time::Duration,
    /// Delinquent records, as a percentage of the average monthly discharges, above which the
    /// records office is over its limit (the Joint Commission's old rule was 50).
    #[arg(long, default_value_t = chartsync_core::store::DEFAULT_THRESHOLD_PERCENT, value_parser = clap::value_parser!(u32).range(1..=1000))]
    delinquency_threshold: u32,
    /// Days after discharge the claim is held for the coding: when a chart in the coding
    /// queue is due.
    #[arg(long, default_value_t = chartsync_core::store::DEFAULT_BILL_HOLD_DAYS, value_parser = clap::value_parser!(u32).range(0..=365))]
    bill_hold_days: u32,
    /// Days a delinquent record may stay incomplete past its due date before its physician
    /// is on the console's suspension list (the medical staff bylaws' grace after notice).
    #[arg(long, default_value_t = physicians::DEFAULT_SUSPENSION_GRACE_DAYS, value_parser = clap::value_parser!(u32).range(0..=365))]
    suspension_grace_days: u32,
    /// How long a tablet keeps a chart read-only after it left the tablet's wards (from the
    /// transfer or discharge as charted) before removing it from its store, once the server
    /// has everything written on it there: 0s to 365d.
    #[arg(long, env = "CHARTSYNC_PURGE_AFTER", default_value = "24h", value_parser = auth::parse_purge_after)]
    purge_after: std::time::Duration,
    /// The URL this server is reached at by outside systems (`https://charts.example:8443`):
    /// what a Bulk Data client's signed assertion must name as its audience, and the base of
    /// the URLs it is given. Without it, the request's Host header stands for it.
    #[arg(long, env = "CHARTSYNC_PUBLIC_URL")]
    public_url: Option<String>,
    /// Let charts leave tablets before a backup (`chartsync-records backup`) holds what was
    /// written on them there: for a hospital that backs the data directory up by other means.
    /// Without it, a tablet removes a chart only once the latest backup has it, so a restore
    /// loses nothing a tablet removed. (On PostgreSQL, backups are the database's own: no wait.)
    #[arg(long, env = "CHARTSYNC_PURGE_WITHOUT_BACKUP")]
    purge_without_backup: bool,
    /// MiB a scanned document's file may be (a PDF, JPEG or PNG filed on a chart).
    #[arg(long, default_value_t = attachments::DEFAULT_MAX_ATTACHMENT_MIB, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=attachments::MAX_ATTACHMENT_MIB_LIMIT as u64))]
    max_attachment_mib: usize,
    /// How long a Bulk Data export's files are kept after it finishes, for its client to fetch
    /// (the manifest's `Expires`); then the export and its files are deleted: 1m to 30d.
    #[arg(long, default_value = "24h", value_parser = auth::parse_bulk_files_ttl)]
    bulk_files_ttl: std::time::Duration,
    /// Sync states (kept per device and chart, to shorten reconnects) unused for this long are
    /// forgotten; such a device syncs from the start.
    #[arg(long, default_value = "30d", value_parser = auth::parse_ttl)]
    sync_state_ttl: std::time::Duration,
    /// New charts one connection may leave unfinished at once: sent in part, with changes
    /// waiting for those they build on. (Charts only announced take none.)
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    max_pending_charts: usize,
    /// Changes (or whole documents) one sync message may carry.
    #[arg(long, default_value_t = 100_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    max_changes_per_message: usize,
    /// KiB one change, or one whole document, may inflate to (automerge compresses large
    /// changes).
    #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(16..=1024 * 1024))]
    max_inflated_kib_per_change: u64,
    /// KiB all of one sync message's changes may inflate to.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(16..=4 * 1024 * 1024))]
    max_inflated_kib_per_message: u64,
    /// KiB one sync connection may have waiting in each direction (received and not yet
    /// handled; made and not yet sent): past it, the server reads nothing more from the device,
    /// and makes nothing more for it, until it catches up.
    #[arg(long, default_value_t = 32 * 1024, value_parser = clap::value_parser!(u64).range(16..=4 * 1024 * 1024))]
    max_queued_kib: u64,
    /// KiB of changes one outgoing sync message carries at most; a chart with more goes in
    /// several (one change larger than that goes alone). Inside the 16 MiB frame limit.
    #[arg(long, default_value_t = 4 * 1024, value_parser = clap::value_parser!(u64).range(16..=8 * 1024))]
    max_outgoing_message_kib: u64,
    /// MiB of memory open charts may take before the least recently used are dropped (they
    /// are read from the store again when next needed; charts in use are never dropped).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    chart_cache_mib: usize,
    /// Threads for the store's work beside the async workers. A burst of documents otherwise
    /// grows the server to hundreds of threads, each keeping a stack and allocator caches.
    #[arg(long, default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=512))]
    blocking_threads: usize,
}

impl ServeArgs {
    fn policy(&self) -> chartsync_core::trust::Policy {
        chartsync_core::trust::Policy {
            certificate_secs: self.certificate_validity.as_secs(),
            idle_lock_secs: self.idle_lock.as_secs(),
            pin_attempts: self.pin_attempts,
            break_glass_secs: self.break_glass.as_secs(),
        }
    }
}

/// The command line: `serve` (the default) or `token`. Returns when the server has stopped.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    few_arenas();
    let cli = Cli::parse();
    let blocking_threads = match &cli.command {
        Some(Command::Serve(a)) => a.blocking_threads,
        // Not serving (or serving with every default): the default.
        _ => 16,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Store work runs on blocking threads (`block_in_place` in the sync workers,
        // `spawn_blocking` elsewhere). Left at tokio's 512, a burst of documents grew the
        // server to 518 threads, each with its own stack and allocator caches: resident
        // memory that grew round after round (RELIABILITY.md, "Memory that returns"). The
        // store has one writer and a few readers, so a few threads do all the work there is;
        // the rest waits in tokio's queue.
        .max_blocking_threads(blocking_threads)
        .build()?
        .block_on(run(cli))
}

/// A PostgreSQL URL as a log may show it: `postgresql://host:port/database`, without the
/// user's password (or anything else the URL carries).
pub(crate) fn database_name(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "a PostgreSQL database (its URL does not parse)".into();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
        })
        .collect();
    format!(
        "postgresql://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// glibc gives busy threads allocator arenas of their own (up to eight per core), and each
/// keeps what was freed in it: measured in the soak bench, resident memory kept growing
/// with two arenas per core and levelled off with two in all (RELIABILITY.md, "Memory that
/// returns"). The server's work is paced by its store, not by `malloc`. `MALLOC_ARENA_MAX`,
/// when set, still decides.
fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // automerge opens an INFO span for every column of every change it parses: at
            // the default, the log would format them all (4% of a reconnect's CPU).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,automerge=warn".into()),
        )
        .init();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        Some(Command::Token(t)) => {
            std::fs::create_dir_all(&t.data_dir)?;
            let keys = Keys::load_or_create(&t.data_dir)?;
            println!("{}", keys.issue(&t.user, t.role, &t.wards, t.ttl));
            return Ok(());
        }
        Some(Command::RotateTokenKey { data_dir }) => {
            let kid = Keys::rotate(&data_dir)?;
            println!("{kid}");
            eprintln!(
                "new token key {kid}; the old one is kept as token.key.*.retired for the tokens it signed (delete it after 30 days, or now to sign everyone out); restart the server"
            );
            return Ok(());
        }
        Some(Command::Staff { args, command }) => return admin::staff(args, command),
        Some(Command::Device { args, command }) => return admin::device(args, command),
        Some(Command::Revoke { args, revoke }) => return admin::revoke(args, revoke),
        None => Cli::parse_from(["chartsync-server", "serve"])
            .command
            .and_then(|c| match c {
                Command::Serve(a) => Some(a),
                _ => None,
            })
            .ok_or("the default serve arguments do not parse")?,
    };
    std::fs::create_dir_all(&args.data_dir)?;
    private_directory(&args.data_dir)?;
    // Held until the server exits: `chartsync-records import` and `compact` wait for it, as
    // writes from outside would bypass the server's cache and its ward censuses.
    let lock = cli::lock_file(&args.data_dir)?;
    if lock.try_lock().is_err() {
        let message = format!(
            "{} is in use by another chartsync-server or a chartsync-records import",
            args.data_dir.display()
        );
        tracing::error!("{message}");
        return Err(message.into());
    }
    let path = args.data_dir.join("charts.db");
    // Every change the server commits is receipted beside the store, so that after a restore
    // from a backup it recognises what tablets send back (docs/operations.md).
    let receipts_path = args.data_dir.join(RECEIPTS_FILE);
    let recovery = if args.data_dir.join(RECOVERY_MARKER).exists() {
        let known = chartsync_core::store::Receipts::load(&receipts_path)?;
        tracing::warn!(
            receipts = known.len(),
            "restored from a backup: taking back from tablets the changes accepted before"
        );
        Some(Arc::new(known))
    } else {
        None
    };
    // A database's encryption at rest is its host's (docs/deploy.md); the key is the file's.
    let encryption_key = match &args.database_url {
        Some(_) => None,
        None => match args.store_key.resolve(&args.data_dir, &path, false) {
            Ok(key) => key,
            Err(e) => {
                tracing::error!("{e}");
                return Err(e.into());
            }
        },
    };
    match &encryption_key {
        Some((_, store_key::KeySource::Default { path, made: true })) => tracing::warn!(
            key = %path.display(),
            "made a new key for the store: back it up apart from the data directory; without it the store cannot be opened"
        ),
        Some((_, source)) => tracing::info!(key = %source, "the store is encrypted"),
        None if args.database_url.is_some() => {}
        None => tracing::warn!("the store is not encrypted (--unencrypted-store)"),
    }
    let options = StoreOptions {
        encryption_key: encryption_key.map(|(key, _)| key),
        on_rebuild: Some(log_rebuild()),
        receipts: Some(Arc::new(chartsync_core::store::Receipts::open(
            &receipts_path,
        )?)),
        cache_bytes: args.chart_cache_mib * 1024 * 1024,
        connections: args.database_connections,
        ..StoreOptions::default()
    };
    // Where the store is, as the log may say it: a file's path, or a database's host and
    // name (never its URL, which may carry a password).
    let place = match &args.database_url {
        Some(url) => database_name(url),
        None => path.display().to_string(),
    };
    let opened = match &args.database_url {
        Some(url) => ChartStore::open_postgres(url, options),
        None => ChartStore::open(&path, options),
    };
    let store = match opened {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(store = %place, error = %e, "cannot open the chart store");
            return Err(e.into());
        }
    };
    tracing::info!(
        store = %place,
        charts = store.stats()?.charts,
        // On a database, how this node appears in the outbox and as the lease's holder.
        node = store.node(),
        "chart store open"
    );
    // In a database, every node holds the serving lock, shared, for its whole life: the
    // records office's offline writes wait for every node to stop (the data directory's lock
    // does this for a file).
    let _serving = match &args.database_url {
        Some(_) => Some(
            store
                .serving_lock(false)?
                .ok_or("the database is locked by a chartsync-records import or compaction; wait for it to finish")?,
        ),
        None => None,
    };
    let checkpoint_store = store.clone();
    let keys = Arc::new(Keys::load_or_create(&args.data_dir)?);
    let trust = Arc::new(directory::Trust::load_or_create(
        &args.data_dir,
        args.policy(),
    )?);
    let (changes, _) = tokio::sync::broadcast::channel(1024);
    let keeper = census::Keeper::start(store.clone())?;
    let censuses = keeper.censuses();
    forward_commits(&store, keeper, changes.clone());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut hub = Hub::new(
        store.clone(),
        // Devices key what they know of the server by this id: in a database, every node
        // answers as one server, so it is the database's own (a node that dies loses no
        // device its sync state).
        match &args.database_url {
            Some(_) => store.storage_id()?,
            None => storage_id(&args.data_dir)?,
        },
        trust.clone(),
        (changes, censuses),
        shutdown,
        recovery,
        sync::Limits {
            documents_per_connection: args.max_documents_per_connection,
            denials_per_window: args.max_denials,
            connections_per_user: args.max_connections_per_user,
            idle: args.idle_timeout,
            pending_per_connection: args.max_pending_charts,
            content: chartsync_core::protocol::ContentBounds {
                changes_per_message: args.max_changes_per_message,
                inflated_bytes_per_change: args.max_inflated_kib_per_change << 10,
                inflated_bytes_per_message: args.max_inflated_kib_per_message << 10,
            },
            queued_bytes: (args.max_queued_kib << 10) as usize,
            outgoing_message_bytes: (args.max_outgoing_message_kib << 10) as usize,
            ..sync::Limits::default()
        },
    )?;
    hub.purge_after = args.purge_after;
    hub.purge_needs_backup &= !args.purge_without_backup;
    let hub = Arc::new(hub);
    let stopping = hub.clone();
    // Exports this server was running when it stopped will never finish: their clients are
    // told so. (On PostgreSQL another node may be running its own: only those a day old.)
    let abandoned = match &args.database_url {
        Some(_) => std::time::Duration::from_secs(24 * 3600),
        None => std::time::Duration::ZERO,
    };
    match store.fail_abandoned_bulk_jobs(abandoned) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "bulk exports left running by the last run: failed"
        ),
        Err(e) => tracing::error!(error = %e, "could not look for abandoned bulk exports"),
    }
    // Destructions whose approval this server was carrying out when it stopped: finished,
    // as approved (each chart is checked again).
    match store.interrupted_destructions(abandoned) {
        Ok(batches) => {
            for (id, approver) in batches {
                match store.resume_destruction(
                    id,
                    &approver,
                    "server-restart",
                    chartsync_core::chart::Timestamp::now(),
                ) {
                    Ok(_) => tracing::warn!(
                        batch = id,
                        "a destruction's approval, interrupted by the last run, finished"
                    ),
                    Err(e) => {
                        tracing::error!(batch = id, error = %e, "could not finish an interrupted destruction")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "could not look for interrupted destructions"),
    }
    break_glass::sweep(store.clone());
    forget_sync_states(store.clone(), args.sync_state_ttl);
    bulk::expire(store.clone(), args.bulk_files_ttl);
    count_delinquency(store.clone());
    let mut sessions = hub.sessions.subscribe();
    // The records office's REST, documented as it is routed (server/src/openapi.rs).
    let (documented, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(records::deficiencies))
        .routes(routes!(records::assign))
        .routes(routes!(records::acknowledge))
        .routes(routes!(records::delinquency))
        .routes(routes!(records::coding_queue))
        .routes(routes!(records::patient_index))
        .routes(routes!(records::search_charts))
        .routes(routes!(records::disclosures))
        .routes(routes!(coding::search_codes))
        .routes(routes!(coding::show, coding::propose))
        .routes(routes!(coding::change))
        .routes(routes!(roi::log))
        .routes(routes!(roi::receive))
        .routes(routes!(roi::move_request))
        .routes(routes!(roi::extend))
        .routes(routes!(roi::prepare))
        .routes(routes!(accounting::list, accounting::log))
        .routes(routes!(accounting::show))
        .routes(routes!(accounting::extend))
        .routes(routes!(accounting::provide))
        .routes(routes!(completion::show))
        .routes(routes!(completion::add))
        .routes(routes!(completion::withdraw))
        .routes(routes!(physicians::list))
        .routes(routes!(physicians::one))
        .routes(routes!(api::audit))
        .routes(routes!(holds::list))
        .routes(routes!(holds::show))
        .routes(routes!(holds::accept))
        .routes(routes!(holds::reject))
        .routes(routes!(break_glass::queue, break_glass::ask))
        .routes(routes!(break_glass::review))
        .routes(routes!(retention::rules))
        .routes(routes!(retention::set_rule))
        .routes(routes!(retention::list))
        .routes(routes!(retention::holds, retention::place))
        .routes(routes!(retention::lift))
        .routes(routes!(retention::batches, retention::propose))
        .routes(routes!(retention::show))
        .routes(routes!(retention::approve))
        .routes(routes!(retention::cancel))
        .routes({
            // The scan's own body limit (the rest of the API keeps axum's default).
            let (schemas, paths, method) = routes!(attachments::upload);
            let limit = attachments::form_limit(args.max_attachment_mib << 20);
            (
                schemas,
                paths,
                method.layer(axum::extract::DefaultBodyLimit::max(limit)),
            )
        })
        .routes(routes!(attachments::download))
        .split_for_parts();
    let doc = Arc::new(doc);
    let app = Router::new()
        .merge(documented)
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/sync", get(sync_endpoint))
        .route("/api/charts", get(api::charts))
        .route("/api/charts/{id}", get(api::chart))
        .route("/api/charts/{id}/fhir", get(records::fhir_export))
        .route("/api/staff", get(directory::list_staff))
        .route(
            "/api/staff/{user}",
            axum::routing::put(directory::put_staff),
        )
        .route("/api/devices", get(directory::list_devices))
        .route("/api/devices/enrolments", post(directory::new_enrolment))
        .route("/api/devices/challenge", post(directory::challenge))
        .route("/api/devices/enrol", post(directory::enrol))
        .route("/api/devices/{id}/sign-in", post(directory::sign_in))
        .route("/api/devices/{id}/session", post(directory::session))
        .route("/api/devices/{id}/wipe", post(directory::wipe))
        .route("/api/devices/{id}/purges", get(directory::device_purges))
        .route("/api/certificates", get(directory::list_certificates))
        .route("/api/break-glass/{id}/end", post(break_glass::end))
        .route(
            "/api/devices/{id}/break-glass",
            post(break_glass::ask_from_tablet),
        )
        .route(
            "/api/revocations",
            get(directory::list_revocations).post(directory::revoke),
        )
        .route("/metrics", get(api::metrics))
        .route("/api/bulk-clients", get(bulk::clients).post(bulk::register))
        .route("/api/bulk-clients/{id}/revoke", post(bulk::revoke))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(bulk::smart_configuration),
        )
        .route("/fhir/auth/token", post(bulk::token))
        .route("/fhir/Patient/$export", get(bulk::export_patients))
        .route("/fhir/Group/{ward}/$export", get(bulk::export_group))
        .route(
            "/fhir/bulkstatus/{job}",
            get(bulk::status).delete(bulk::delete),
        )
        .route("/fhir/bulkfiles/{job}/{file}", get(bulk::file))
        .merge(console::routes(args.max_attachment_mib << 20))
        .with_state(AppState {
            store,
            keys,
            hub,
            trust,
            console: Arc::new(console::session::Sessions::new(args.console_idle)),
            delinquency_threshold: args.delinquency_threshold,
            bill_hold_days: args.bill_hold_days,
            suspension_grace_days: args.suspension_grace_days,
            imports: Arc::default(),
            public_url: args
                .public_url
                .as_deref()
                .map(|u| Arc::from(u.trim_end_matches('/'))),
            max_attachment_bytes: args.max_attachment_mib << 20,
            bulk_files_ttl: args.bulk_files_ttl,
        });
    // Before the server says it listens: a stop sent as soon as it does is a clean stop.
    let signalled = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "chartsync-server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signalled.await;
            // Open sync connections close too, saving their sync state.
            let _ = stop.send(true);
        })
        .await?;
    // Open connections save their sync state before the store is folded and closed.
    let closed = sessions.wait_for(|open| *open == 0);
    if tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; stopping without them");
    }
    stopping.denial_audit.finish();
    // The change-feed thread still holds the store; leave the file whole all the same.
    if let Err(e) = checkpoint_store.checkpoint() {
        tracing::warn!(error = %e, "could not fold the write-ahead log into the store file");
    }
    tracing::info!("chartsync-server stopped");
    drop(lock);
    Ok(())
}

/// The data directory holds every chart and the keys: only the server's user may enter it.
fn private_directory(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::info!(dir = %dir.display(), from = format!("{mode:o}"), "the data directory is now private (0700)");
        }
    }
    Ok(())
}

/// Runs `job` on a blocking thread when the lease comes to this store (at start, on SQLite)
/// and then every `period` while it holds it: on a database shared by several nodes, once for
/// all of them, by the lease's holder, and by the next holder should it die.
pub(crate) fn while_holding_lease<T: Send + 'static>(
    store: Arc<ChartStore>,
    period: std::time::Duration,
    job: impl Fn(&ChartStore) -> T + Send + Sync + 'static,
    done: impl Fn(T) + Send + 'static,
) {
    let job = Arc::new(job);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut last: Option<(i64, tokio::time::Instant)> = None;
        loop {
            every.tick().await;
            let Some(epoch) = store.lease_epoch() else {
                continue;
            };
            // A new epoch is the lease come afresh: its work is due at once.
            if last.is_some_and(|(e, at)| e == epoch && at.elapsed() < period) {
                continue;
            }
            last = Some((epoch, tokio::time::Instant::now()));
            let (store, job) = (store.clone(), job.clone());
            if let Ok(outcome) = tokio::task::spawn_blocking(move || job(&store)).await {
                done(outcome);
            }
        }
    });
}

/// Forgets stale sync states daily.
fn forget_sync_states(store: Arc<ChartStore>, age: std::time::Duration) {
    while_holding_lease(
        store,
        std::time::Duration::from_secs(24 * 3600),
        move |store| store.forget_sync_states(age),
        |outcome| match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(states = n, "stale sync states forgotten"),
            Err(e) => tracing::error!(error = %e, "could not forget stale sync states"),
        },
    );
}

/// Counts the day's delinquency every hour, so that each day keeps its last count for the
/// records office's trend.
fn count_delinquency(store: Arc<ChartStore>) {
    while_holding_lease(
        store,
        std::time::Duration::from_secs(3600),
        |store| store.count_delinquency_day(chartsync_core::chart::Timestamp::now()),
        |outcome| {
            if let Err(e) = outcome {
                tracing::error!(error = %e, "could not count the day's delinquency");
            }
        },
    );
}

/// Logs the audit index's rebuild (after an upgrade of the audit's rules) at every tenth of
/// the way: on a large store it takes minutes, before the server listens.
fn log_rebuild() -> chartsync_core::store::RebuildListener {
    chartsync_core::store::RebuildListener(Arc::new(|done, total| {
        let step = (total / 10).max(1);
        if done == 0 {
            tracing::info!(
                charts = total,
                "the chart audit's rules changed: rebuilding its index"
            );
        } else if done % step == 0 || done == total {
            tracing::info!(done, charts = total, "rebuilding the chart audit index");
        }
    }))
}

#[derive(Clone)]
struct AppState {
    store: Arc<ChartStore>,
    keys: Arc<Keys>,
    hub: Arc<Hub>,
    trust: Arc<directory::Trust>,
    console: Arc<console::session::Sessions>,
    /// Percent of the average monthly discharges (`--delinquency-threshold`).
    delinquency_threshold: u32,
    /// `--bill-hold-days`.
    bill_hold_days: u32,
    /// `--suspension-grace-days`.
    suspension_grace_days: u32,
    /// The console's chart imports since the server started.
    imports: Arc<console::import::Imports>,
    /// `--public-url`, without a trailing slash.
    public_url: Option<Arc<str>>,
    /// `--max-attachment-mib`, in bytes.
    max_attachment_bytes: usize,
    /// `--bulk-files-ttl`.
    bulk_files_ttl: std::time::Duration,
}

/// The store's change feed, onto a channel every connection listens to; the ward censuses
/// follow each commit, and their own changes go out on the same channel. Between commits (at
/// least each second) the keeper looks at the lease: on a database shared by several nodes
/// the censuses are kept by whichever node holds it.
fn forward_commits(
    store: &ChartStore,
    mut keeper: census::Keeper,
    changes: tokio::sync::broadcast::Sender<chartsync_core::store::ChartChanged>,
) {
    let feed = store.subscribe();
    std::thread::Builder::new()
        .name("chartsync-feed".into())
        .spawn(move || loop {
            let mut out = Vec::new();
            match feed.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(event) => {
                    let census_events = keeper.on_change(&event);
                    out.push(event);
                    out.extend(census_events);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // The store closed.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            out.extend(keeper.tick());
            for e in out {
                let _ = changes.send(e);
            }
        })
        .ok();
}

/// The receipts of every change the server committed (`chartsync_core::store::Receipts`).
pub const RECEIPTS_FILE: &str = "receipts";
/// Written by `chartsync-records restore`: the store was restored from a backup.
pub const RECOVERY_MARKER: &str = "restored";

/// Marks `data_dir` as restored from a backup (`RECOVERY_MARKER`).
fn mark_restored(data_dir: &Path) -> std::io::Result<()> {
    let at = chartsync_core::chart::Timestamp::now().to_rfc3339();
    std::fs::write(
        data_dir.join(RECOVERY_MARKER),
        format!("restored at {at}\n"),
    )
}

/// The server's storage id: what devices key their sync state for this server by.
pub(crate) fn storage_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("storage-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => {
            let id = chartsync_core::seeded::uuid_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// `GET /sync`: the token from `Authorization: Bearer` or `?token=` (browsers cannot set
/// headers on a WebSocket), checked before the upgrade.
async fn sync_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let access = match api::authenticate(&app, &headers, Some(&query)) {
        Ok(a) => a,
        Err(e) => {
            app.hub.metrics.sign_ins_refused.inc();
            return api::unauthorized(e);
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let hub = app.hub.clone();
    // One person (or tablet) holds a bounded number of connections at once.
    let Some(slot) = sync::ConnectionSlot::take(&hub, &access.user) else {
        hub.metrics.closed_at_bounds.inc();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(serde_json::json!({
                "error": "too many sync connections open under this sign-in"
            })),
        )
            .into_response();
    };
    let live = sync::Live::new(&hub);
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Grown as frames need it, not 128 KiB for every idle connection.
        .read_buffer_size(hub.limits.read_buffer_bytes)
        .on_upgrade(move |socket| sync::serve_socket(socket, hub, access, (live, slot)))
}

async fn healthz(
    State(AppState { store, .. }): State<AppState>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    let engine = store.engine();
    let (node, held) = (store.node().to_string(), store.holds_lease());
    let stats = tokio::task::spawn_blocking(move || {
        Ok::<_, chartsync_core::store::StoreError>((store.stats()?, store.lease_holder()?))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    match stats {
        Ok((stats, holder)) => Ok(Json(serde_json::json!({
            "status": "ok",
            "schema": chartsync_core::chart::SCHEMA_V1,
            "icd10cm": chartsync_core::codes::ICD10CM_CODE_SET,
            // Every code-set year installed: a code is checked for its encounter's year.
            "code_set_years": chartsync_core::codes::years::code_set_years()
                .into_iter()
                .map(|(fy, icd10cm)| serde_json::json!({ "fiscal_year": fy, "icd10cm": icd10cm }))
                .collect::<Vec<_>>(),
            "store": {
                // Answered only when the database does: a node whose database is away is
                // unavailable (503), and a load balancer sends its devices elsewhere.
                "engine": engine,
                "version": chartsync_core::store::schema::VERSION,
                "charts": stats.charts,
                "charts_open": stats.charts_cached,
            },
            // Who does the single-writer work (ward censuses, compaction, sweeps): on SQLite
            // the one server; on a database, the node the lease's row names.
            "node": node,
            "lease": {
                "held": held,
                "holder": holder.as_ref().map(|h| h.node.as_str()),
                "epoch": holder.as_ref().map(|h| h.epoch),
                "since": holder
                    .as_ref()
                    .and_then(|h| chartsync_core::chart::Timestamp::from_unix_millis(h.since).ok())
                    .map(|t| t.to_rfc3339()),
            },
        }))),
        Err(error) => {
            tracing::error!(%error, "health check: the store does not answer");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "store unavailable", "error": error })),
            ))
        }
    }
}

/// Ctrl-C or SIGTERM: stop accepting, finish what is in flight, exit. The handlers are in
/// place when this returns, not when the future is first polled: a SIGTERM that came between
/// the two took the default action and killed the server uncleanly (a test that stopped it
/// as soon as it listened failed now and then).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = interrupt.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
