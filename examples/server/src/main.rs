//! The tenantkit reference server.
//!
//! ```text
//! cargo run -p tenantkit-server                 # serve on 127.0.0.1:8080, SQLite under ./data
//! cargo run -p tenantkit-server -- migrate      # apply migrations and exit
//! cargo run -p tenantkit-server -- --help       # every setting and its environment variable
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantkit_server::{init_tracing, keys, migrate, run, shutdown_signal, Config};

/// The tenantkit reference server: a multi-tenant SaaS backend in one binary.
#[derive(Debug, Parser)]
#[command(name = "tenantkit-server", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage the development signing keys under `<data dir>/keys`.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a new key that signs from the next start on; older keys keep verifying until
    /// their files are deleted.
    Rotate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run(cli.config, shutdown_signal()).await,
        Command::Migrate => migrate(&cli.config).await,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => keys::rotate_dev_key(&cli.config).map(|path| {
            println!("new signing key: {}", path.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "tenantkit-server failed");
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
