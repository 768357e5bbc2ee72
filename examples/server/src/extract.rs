//! The extractors the routes use: all of them tenantkit-core's (`tenantkit_core::axum`), whose
//! rejections are problem answers with a stable code. The client comes from the connection's
//! `ConnectInfo` and the state's trusted proxies (`AppState::proxies`); the caller
//! (`Principal`, `Option<Principal>`) from the JWT layer.

pub use tenantkit_core::ClientInfo as Client;
pub use tenantkit_core::axum::{
    ApiId, ApiIds, ApiJson, ClientIp, IfMatch, Listing, MAX_QUERY_PARAMETERS, NoFilter, PageQuery,
    QueryFilter, TenantRead, TenantWrite, etag,
};
