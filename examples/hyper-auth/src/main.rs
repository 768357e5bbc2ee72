//! tenantkit-auth protecting a plain hyper server.
//!
//! ```text
//! cargo run -p hyper-auth
//! curl -H "Authorization: Bearer <printed token>" localhost:3000/hello
//! ```

use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519()?),
        JwtConfig::new("hyper-auth", "hyper-auth"),
    );
    let demo = Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Admin,
        [],
        SessionId::new(),
    );
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!(
        "a demo admin token (15 minutes):\n{}",
        tokens.issue(&demo)?.token
    );
    hyper_auth::serve(listener, tokens).await?;
    Ok(())
}
