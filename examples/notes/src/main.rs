//! `cargo run -p tenantkit-notes`: the notes app, on SQLite under `./data/notes` unless
//! `DATABASE_URL` says otherwise (on PostgreSQL, `MIGRATION_DATABASE_URL` names the tables'
//! owner, who migrates). Also `PORT`, `NOTES_PUBLIC_URL` and `STRIPE_WEBHOOK_SECRET`.

use std::{net::SocketAddr, path::Path};

use tenantkit_core::Database;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), tenantkit_notes::BoxError> {
    tracing_subscriber::fmt().init();
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let port = var("PORT", "3000");
    let url = var("DATABASE_URL", "sqlite://data/notes/notes.db");
    let migrations = tenantkit_notes::migrations();
    Database::migrate_at(&var("MIGRATION_DATABASE_URL", &url), &migrations).await?;
    let public_url = var("NOTES_PUBLIC_URL", &format!("http://localhost:{port}"));
    let whsec = var("STRIPE_WEBHOOK_SECRET", "whsec_development_only");
    let db = Database::connect(&url).await?;
    let app = tenantkit_notes::Notes::new(db, Path::new("data/notes"), &public_url, &whsec)?;

    // The server, the billing worker and the storage sweeper, until Ctrl-C.
    let (stop, listener) = (CancellationToken::new(), format!("127.0.0.1:{port}"));
    let listener = tokio::net::TcpListener::bind(listener).await?;
    let service = axum::Router::into_make_service_with_connect_info::<SocketAddr>(app.router());
    let server =
        axum::serve(listener, service).with_graceful_shutdown(stop.clone().cancelled_owned());
    let (worker, sweeper) = (app.worker(), app.sweeper());
    let background =
        async { tokio::join!(worker.run(stop.cancelled()), sweeper.run(stop.cancelled())) };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    };
    let (served, ..) = tokio::join!(server.into_future(), background, ctrl_c);
    Ok(served?)
}
