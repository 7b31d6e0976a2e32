//! chartsync-server: the sync server. This first version serves its health check and the
//! code-set it validates against; the WebSocket sync endpoint, the store, auth and audit come
//! with the sync issue.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::{routing::get, Json, Router};
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
    let app = Router::new().route("/healthz", get(healthz));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "chartsync-server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("chartsync-server stopped");
    Ok(())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "schema": chartsync_core::chart::SCHEMA_V1,
        "icd10cm": chartsync_core::codes::ICD10CM_CODE_SET,
    }))
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
