//! Service-account tokens: the JWTs `serviceaccounts/<name>/token` (a `TokenRequest`, as
//! `kubectl create token` and projected token volumes ask for) issues, and the bearer-token
//! check that accepts them as `system:serviceaccount:<namespace>:<name>`.
//!
//! Tokens are signed with HMAC-SHA-256 under a key kept in the server's PKI directory
//! (`sa.key`), so only this server's key can mint or verify them (upstream signs with an
//! asymmetric key so that others can verify too). Claims follow upstream's: issuer, subject,
//! audiences, expiry, and the `kubernetes.io` claim naming the namespace, account and bound pod.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

use crate::auth::Identity;

/// The issuer (and default audience) of the tokens, as upstream's default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token is bound to besides its account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundObject {
    /// `Pod`, `Secret` or `Node`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// What a token is issued for.
#[derive(Clone, Debug)]
pub struct TokenClaims<'a> {
    /// The account's namespace.
    pub namespace: &'a str,
    /// The account's name.
    pub name: &'a str,
    /// The account's UID.
    pub uid: &'a str,
    /// Who the token is meant for.
    pub audiences: &'a [String],
    /// When it was issued (seconds since the epoch).
    pub issued_at: i64,
    /// How long it is valid.
    pub expiration_seconds: i64,
    /// The object it is bound to.
    pub bound: Option<&'a BoundObject>,
}

/// Mints and verifies service-account tokens.
pub struct ServiceAccountTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceAccountTokens")
    }
}

impl ServiceAccountTokens {
    /// Tokens signed with `secret`.
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// A signed token for `claims`.
    #[must_use]
    pub fn issue(&self, claims: &TokenClaims<'_>) -> String {
        let mut kubernetes = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.name, "uid": claims.uid},
        });
        if let Some(bound) = claims.bound {
            kubernetes[bound.kind.to_ascii_lowercase()] = json!({"name": bound.name, "uid": bound.uid});
        }
        let payload = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "aud": claims.audiences,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "exp": claims.issued_at + claims.expiration_seconds,
            "kubernetes.io": kubernetes,
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let signed = format!("{header}.{body}");
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, signed.as_bytes()).as_ref());
        format!("{signed}.{signature}")
    }

    /// The account a token at time `now` authenticates, if it is one of ours, unexpired, and
    /// meant for this API server (its audiences include [`ISSUER`]).
    #[must_use]
    pub fn verify(&self, token: &str, now: i64) -> Option<Identity> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, body) = signed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, signed.as_bytes(), &signature).ok()?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return None;
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        let expires = claims.get("exp").and_then(Value::as_i64)?;
        let not_before = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now >= expires || now + 60 < not_before {
            return None;
        }
        let audiences = claims.get("aud").and_then(Value::as_array)?;
        if !audiences.iter().any(|a| a.as_str() == Some(ISSUER)) {
            return None;
        }
        let subject = claims.get("sub").and_then(Value::as_str)?;
        let rest = subject.strip_prefix("system:serviceaccount:")?;
        let (namespace, _) = rest.split_once(':')?;
        let groups = vec!["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{namespace}")];
        Some(Identity::new(subject, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::{BoundObject, ISSUER, ServiceAccountTokens, TokenClaims};

    const NOW: i64 = 1_800_000_000;

    fn claims<'a>(audiences: &'a [String], bound: Option<&'a BoundObject>) -> TokenClaims<'a> {
        TokenClaims {
            namespace: "team",
            name: "builder",
            uid: "u-1",
            audiences,
            issued_at: NOW,
            expiration_seconds: 600,
            bound,
        }
    }

    #[test]
    fn tokens_authenticate_their_account_until_they_expire() {
        let tokens = ServiceAccountTokens::new(b"secret");
        let audiences = [ISSUER.to_owned()];
        let pod = BoundObject { kind: "Pod".into(), name: "p".into(), uid: "pod-uid".into() };
        let token = tokens.issue(&claims(&audiences, Some(&pod)));
        let identity = tokens.verify(&token, NOW + 10).unwrap_or_else(|| panic!("a fresh token verifies"));
        assert_eq!(identity.user, "system:serviceaccount:team:builder");
        assert!(identity.groups.contains(&"system:serviceaccounts:team".to_owned()));
        assert!(identity.groups.contains(&"system:authenticated".to_owned()));
        assert!(tokens.verify(&token, NOW + 600).is_none(), "expired");
        assert!(ServiceAccountTokens::new(b"other").verify(&token, NOW).is_none(), "another key");
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(tokens.verify(&tampered, NOW).is_none(), "tampered");
        let elsewhere = [String::from("vault")];
        assert!(tokens.verify(&tokens.issue(&claims(&elsewhere, None)), NOW).is_none(), "meant for someone else");
    }
}
