//! samod (a Rust automerge-repo server) as the side-by-side benchmark runs it
//! (`tests/benches/sidebyside`): documents on disk in `DATA_DIR`, every peer may read and
//! write every document, WebSockets on `/sync` with axum's defaults, as samod's own examples
//! serve it. Prints `LISTENING <port>`.
//!
//! Run: `samod-server DATA_DIR`

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::routing::get;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or("usage: samod-server DATA_DIR")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let repo = samod::Repo::build_tokio()
            .with_storage(samod::storage::TokioFilesystemStorage::new(dir))
            .load()
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = samod::Url::parse(&format!("ws://{}/sync", listener.local_addr()?))?;
        let acceptor = repo.make_acceptor(url).map_err(|_| "the repo stopped")?;
        let app = axum::Router::new()
            .route("/sync", get(upgrade))
            .with_state(acceptor);
        println!("LISTENING {}", listener.local_addr()?.port());
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn upgrade(
    State(acceptor): State<samod::AcceptorHandle>,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    ws.on_upgrade(move |socket| async move {
        // The connection runs on the repo's own tasks from here.
        let _ = acceptor.accept_axum(socket, None);
    })
}
