//! The tenantkit reference server.
//!
//! ```text
//! cargo run -p tenantkit-server                 # serve on 127.0.0.1:8080, SQLite under ./data
//! cargo run -p tenantkit-server -- migrate      # apply migrations and exit
//! cargo run -p tenantkit-server -- --help       # every setting and its environment variable
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tenantkit_core::Role;
use tenantkit_server::{Config, admin, init_tracing, keys, migrate, run, shutdown_signal};

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
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect the Stripe event inbox.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Maintain uploaded files.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Single sign-on: verify a tenant's email domain.
    Sso {
        #[command(subcommand)]
        command: SsoCommand,
    },
    /// Manage the development signing keys under `<data dir>/keys`.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Delete a tenant: its members are removed and their sessions end; the tenant row and its
    /// audit chain are kept (audited as `tenant.deleted`).
    Delete {
        /// The tenant's slug.
        #[arg(long)]
        slug: String,
    },
    /// Create a tenant and its owner (password from TENANTKIT_PASSWORD or standard input).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// URL handle; derived from the name when absent.
        #[arg(long)]
        slug: Option<String>,
        /// The owner's email.
        #[arg(long)]
        owner_email: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user to a tenant: a verified account is attached; an unknown address or an
    /// unverified account is sent an invitation instead (accepting proves the mailbox).
    Create {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// owner, admin, member or viewer.
        #[arg(long, default_value = "member")]
        role: Role,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify every tenant's hash chain and anchors; exits 2 and names the first broken entry
    /// when a row was edited, deleted, reordered, forged without the audit key, or (with a
    /// checkpoint) cut off.
    Verify {
        /// A file written by `audit checkpoint`: the chains must still reach those heads.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Print the head of every tenant's chain as JSON, to keep outside the database.
    Checkpoint,
}

#[derive(Debug, Subcommand)]
enum BillingCommand {
    /// Stored events, newest first, one JSON object per line.
    Events {
        /// Only events in this state: pending, processing, done or dead.
        #[arg(long)]
        state: Option<String>,
    },
    /// Events whose handlers failed too often.
    DeadLetters,
    /// Puts an event back in line for the worker, attempts reset.
    Replay {
        /// The event id (`evt_…`).
        event_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Delete pending uploads expired for over an hour, and objects no upload or file refers
    /// to (older than an hour), once; prints `{expired_uploads, orphans}`.
    Sweep,
}

#[derive(Debug, Subcommand)]
enum SsoCommand {
    /// Mark an email domain a tenant's connection claims as verified (the operator's word,
    /// instead of its DNS record): addresses there may join the tenant just in time.
    VerifyDomain {
        /// The tenant's slug.
        #[arg(long)]
        tenant: String,
        /// The domain (example.com).
        #[arg(long)]
        domain: String,
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
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    slug,
                    owner_email,
                },
        } => match admin::read_password() {
            Ok(password) => {
                admin::create_tenant(&cli.config, &name, slug.as_deref(), &owner_email, &password)
                    .await
                    .map(|created| println!("{created}"))
            }
            Err(err) => Err(err),
        },
        Command::User {
            command:
                UserCommand::Create {
                    email,
                    tenant,
                    role,
                },
        } => admin::create_user(&cli.config, &email, &tenant, role)
            .await
            .map(|created| println!("{created}")),
        Command::Tenant {
            command: TenantCommand::Delete { slug },
        } => admin::delete_tenant(&cli.config, &slug)
            .await
            .map(|deleted| println!("{deleted}")),
        Command::Billing {
            command: BillingCommand::Events { state },
        } => admin::billing_events(&cli.config, state.as_deref())
            .await
            .map(|events| events.iter().for_each(|e| println!("{e}"))),
        Command::Billing {
            command: BillingCommand::DeadLetters,
        } => admin::billing_events(&cli.config, Some("dead"))
            .await
            .map(|events| events.iter().for_each(|e| println!("{e}"))),
        Command::Billing {
            command: BillingCommand::Replay { event_id },
        } => admin::billing_replay(&cli.config, &event_id)
            .await
            .map(|()| println!("{{\"replayed\":\"{event_id}\"}}")),
        Command::Sso {
            command: SsoCommand::VerifyDomain { tenant, domain },
        } => admin::sso_verify_domain(&cli.config, &tenant, &domain)
            .await
            .map(|report| println!("{report}")),
        Command::Storage {
            command: StorageCommand::Sweep,
        } => admin::storage_sweep(&cli.config)
            .await
            .map(|report| println!("{report}")),
        Command::Audit {
            command: AuditCommand::Checkpoint,
        } => admin::audit_checkpoint(&cli.config).await.map(|heads| {
            println!(
                "{}",
                serde_json::to_string_pretty(&heads).unwrap_or_default()
            );
        }),
        Command::Audit {
            command: AuditCommand::Verify { checkpoint },
        } => match admin::verify_audit(&cli.config, checkpoint.as_deref()).await {
            Ok((report, intact)) => {
                for line in report {
                    println!("{line}");
                }
                if intact {
                    Ok(())
                } else {
                    eprintln!("error: the audit log was tampered with");
                    return ExitCode::from(2);
                }
            }
            Err(err) => Err(err),
        },
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
