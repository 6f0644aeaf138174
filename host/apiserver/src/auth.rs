//! Authentication: every request carries a verified client certificate or a known bearer token
//! (a fixed one, or a service-account token this server issued).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::sa_tokens::ServiceAccountTokens;
use crate::status::ApiError;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity with the implicit `system:authenticated` group added.
    #[must_use]
    pub fn new(user: impl Into<String>, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        Identity { user: user.into(), groups }
    }
}

/// The identity the TLS layer verified from the connection's client certificate, if any.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<Identity>);

/// Reads user (CN) and groups (O) from a client certificate the TLS layer already verified.
#[must_use]
pub fn identity_from_certificate(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some(Identity::new(user, groups))
}

/// The bearer token of a request (`Authorization: Bearer …`), if it has one.
#[must_use]
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Bearer tokens the server accepts: fixed ones, and service-account tokens it issued.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    fixed: HashMap<String, Identity>,
    service_accounts: Option<Arc<ServiceAccountTokens>>,
}

impl Tokens {
    /// Accepts `token` as `identity`.
    pub fn insert(&mut self, token: String, identity: Identity) {
        self.fixed.insert(token, identity);
    }

    /// Accepts the service-account tokens `issuer` signed.
    pub fn accept_service_accounts(&mut self, issuer: Arc<ServiceAccountTokens>) {
        self.service_accounts = Some(issuer);
    }

    /// Authenticates a request: the connection's certificate first, then an `Authorization:
    /// Bearer` header. Anonymous requests are refused.
    pub fn authenticate(&self, peer: Option<&PeerIdentity>, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if let Some(PeerIdentity(Some(identity))) = peer {
            return Ok(identity.clone());
        }
        let Some(token) = bearer_token(headers) else { return Err(ApiError::Unauthorized) };
        if let Some(identity) = self.fixed.get(token) {
            return Ok(identity.clone());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.service_accounts.as_ref().and_then(|issuer| issuer.verify(token, now)).ok_or(ApiError::Unauthorized)
    }
}
