//! chartsync-server: the sync server. So far it opens its chart store and serves its health
//! check; the WebSocket sync endpoint, auth and audit come with the sync issue.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use chartsync_core::store::{ChartStore, StoreOptions};
use clap::{Parser, Subcommand};

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
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the server keeps its store.
    #[arg(long, default_value = "./chartsync-data")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => ServeArgs {
            listen: "127.0.0.1:8080".parse()?,
            data_dir: "./chartsync-data".into(),
        },
    };
    std::fs::create_dir_all(&args.data_dir)?;
    let path = args.data_dir.join("charts.db");
    let store = match ChartStore::open(&path, StoreOptions::default()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(store = %path.display(), error = %e, "cannot open the chart store");
            return Err(e.into());
        }
    };
    tracing::info!(store = %path.display(), charts = store.stats()?.charts, "chart store open");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(store);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "chartsync-server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("chartsync-server stopped");
    Ok(())
}

async fn healthz(
    State(store): State<Arc<ChartStore>>,
) -> Result<Json<serde_json::Value>, (StatusCode, Json<serde_json::Value>)> {
    let stats = tokio::task::spawn_blocking(move || store.stats())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match stats {
        Ok(stats) => Ok(Json(serde_json::json!({
            "status": "ok",
            "schema": chartsync_core::chart::SCHEMA_V1,
            "icd10cm": chartsync_core::codes::ICD10CM_CODE_SET,
            "store": {
                "version": chartsync_core::store::schema::VERSION,
                "charts": stats.charts,
                "charts_open": stats.charts_cached,
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

/// Ctrl-C or SIGTERM: stop accepting, finish what is in flight, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
