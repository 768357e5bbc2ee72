use super::*;

#[test]
fn passwords_never_appear_in_debug_output() {
    let config = Config {
        database_url: Some("postgres://app:s3cret@db:5432/tk".into()),
        database_migration_url: Some("postgres://owner:hunter2@db/tk".into()),
        ..Config::default()
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(shown.contains("postgres://app:***@db:5432/tk"));
}

#[test]
fn the_forwarding_header_is_a_setting_and_a_bad_one_is_refused() {
    use clap::Parser;
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }
    let default = Cli::try_parse_from(["tenantkit-server"]).expect("defaults");
    assert_eq!(
        default.config.proxies().header(),
        tenantkit_core::ForwardedHeader::XForwardedFor
    );
    let chosen = Cli::try_parse_from(["tenantkit-server", "--forwarded-header", "forwarded"])
        .expect("forwarded");
    assert_eq!(
        chosen.config.proxies().header(),
        tenantkit_core::ForwardedHeader::Forwarded
    );
    let err = Cli::try_parse_from(["tenantkit-server", "--forwarded-header", "x-real-ip"])
        .expect_err("an unknown header");
    let message = err.to_string();
    assert!(
        message.contains("x-real-ip") && message.contains("x-forwarded-for, forwarded"),
        "{message}"
    );
}

#[test]
fn the_default_database_is_sqlite_in_the_data_folder() {
    let config = Config {
        data_dir: "/tmp/x".into(),
        ..Config::default()
    };
    assert_eq!(config.database_url(), "sqlite:///tmp/x/tenantkit.db");
    assert_eq!(
        redact_url("sqlite://data/tenantkit.db"),
        "sqlite://data/tenantkit.db"
    );
}
