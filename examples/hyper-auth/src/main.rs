//! tenantkit-auth protecting a plain hyper server.
//!
//! ```text
//! cargo run -p hyper-auth
//! curl -H "Authorization: Bearer <printed token>" localhost:3000/hello
//! websocat -H "Authorization: Bearer <token>" --protocol tenantkit.v1 ws://localhost:3000/v1/realtime
//! ```
//!
//! With `HYPER_AUTH_JWKS=<path to the issuer's jwks.json>` the server holds the issuer's public
//! keys only: it verifies the tokens that issuer signs (issuer `HYPER_AUTH_ISSUER`, audience
//! `HYPER_AUTH_AUDIENCE`, both `hyper-auth` by default) and can sign nothing. No refresh
//! secret, session store or database is involved either way.

use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setting = |name: &str| std::env::var(name).unwrap_or_else(|_| "hyper-auth".to_owned());
    let config = JwtConfig::new(setting("HYPER_AUTH_ISSUER"), setting("HYPER_AUTH_AUDIENCE"));
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let tokens = match std::env::var_os("HYPER_AUTH_JWKS") {
        Some(path) => {
            let keys = KeySet::from_jwks(&std::fs::read_to_string(path)?)?;
            println!("verifying with {} public key(s)", keys.verifiers().count());
            AccessTokens::new(keys, config)
        }
        None => {
            let tokens = AccessTokens::new(KeySet::new(SigningKey::generate_ed25519()?), config);
            let demo = Principal::new(
                UserId::new(),
                TenantId::new(),
                Role::Admin,
                [],
                SessionId::new(),
            );
            println!(
                "a demo admin token (15 minutes):\n{}",
                tokens.issue(&demo)?.token
            );
            tokens
        }
    };
    // The broadcaster: in-memory backplane, default limits. Publish from anywhere with
    // `realtime.publish(tenant, "tenant", "thing.happened", &data)`.
    let realtime = tenantkit_realtime::Realtime::builder(tokens.clone()).build();
    hyper_auth::serve(listener, tokens, realtime).await?;
    Ok(())
}
