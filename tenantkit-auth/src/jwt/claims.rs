//! The claims of a tenantkit access token.

use serde::{Deserialize, Serialize};

/// The JWT claims tenantkit issues: who (`sub`), where (`tid`, `role`), what (`scope`), which
/// session (`sid`), how its sign-in authenticated (`amr`), and the standard `iss`, `aud`, `jti`, `iat`, `nbf`, `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The tenant id.
    pub tid: String,
    /// The role in that tenant.
    pub role: String,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The session (refresh-token family) id.
    pub sid: String,
    /// How the session's sign-in authenticated (RFC 8176 values such as `"pwd"`); omitted
    /// when empty, and empty for a token without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// A unique token id.
    pub jti: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before (seconds since the epoch).
    pub nbf: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}
