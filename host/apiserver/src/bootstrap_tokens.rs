//! Bootstrap tokens, as Kubernetes defines them: `<id>.<secret>` (6 and 16 characters of
//! `[a-z0-9]`), stored as a Secret `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` with an optional `expiration`. A node joins with one
//! (`capstan agent --token`); `capstan token create` makes one and `capstan server` prints one.
//!
//! A valid token authenticates as `system:bootstrap:<id>` in the groups `system:bootstrappers`
//! (and any listed in `auth-extra-groups`). Capstan has no RBAC yet, so that identity may do
//! what any authenticated user may.

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::objects::ObjectRef;
use crate::server::ApiServer;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Where bootstrap token Secrets live.
pub const NAMESPACE: &str = "kube-system";

const ID_LENGTH: usize = 6;
const SECRET_LENGTH: usize = 16;

/// `(id, secret)` of a string shaped like a bootstrap token.
#[must_use]
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |part: &str, length: usize| {
        part.len() == length && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (valid(id, ID_LENGTH) && valid(secret, SECRET_LENGTH)).then_some((id, secret))
}

/// A new random token `(id, secret)`.
pub fn generate() -> Result<(String, String), ring::error::Unspecified> {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; ID_LENGTH + SECRET_LENGTH];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    // 252 is the largest multiple of 36 below 256; resample above it to stay uniform.
    let mut chars = Vec::with_capacity(bytes.len());
    let random = ring::rand::SystemRandom::new();
    for mut b in bytes {
        while b >= 252 {
            let mut one = [0u8; 1];
            random.fill(&mut one)?;
            b = one[0];
        }
        chars.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
    }
    let text: String = chars.into_iter().collect();
    Ok((text[..ID_LENGTH].to_string(), text[ID_LENGTH..].to_string()))
}

/// The Secret that stores token `id.secret`, expiring at `expiration` (RFC 3339) if given.
#[must_use]
pub fn secret(id: &str, secret: &str, expiration: Option<&str>, description: &str) -> Value {
    let mut data = json!({
        "token-id": id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "description": description,
    });
    if let Some(expiration) = expiration {
        data["expiration"] = json!(expiration);
    }
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "stringData": data,
    })
}

/// The `expiration` of a token created now that lives for `ttl`.
#[must_use]
pub fn expiration_after(ttl: std::time::Duration) -> String {
    let at = jiff::Timestamp::now().as_second().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
    jiff::Timestamp::from_second(at).map_or_else(|_| jiff::Timestamp::MAX.to_string(), |t| t.to_string())
}

/// Whether a token Secret is unexpired at `now` (seconds since the epoch).
#[must_use]
pub fn unexpired(stored: &Value, now: i64) -> bool {
    match data_text(stored, "expiration") {
        Some(expiration) => expiration.parse::<jiff::Timestamp>().is_ok_and(|t| t.as_second() > now),
        None => true,
    }
}

/// A token Secret's `data` entry, decoded.
#[must_use]
pub fn data_text(object: &Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = object.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The identity token `(id, secret)` authenticates as, given its stored Secret and the time now
/// (seconds since the epoch).
#[must_use]
pub fn verify(stored: &Value, id: &str, secret: &str, now: i64) -> Option<Identity> {
    if stored.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || stored.pointer("/metadata/deletionTimestamp").is_some()
        || data_text(stored, "token-id").as_deref() != Some(id)
        || data_text(stored, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    let stored_secret = data_text(stored, "token-secret")?;
    if !equal_in_constant_time(stored_secret.as_bytes(), secret.as_bytes()) {
        return None;
    }
    if !unexpired(stored, now) {
        return None;
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = data_text(stored, "auth-extra-groups") {
        groups.extend(
            extra.split(',').map(str::trim).filter(|g| g.starts_with("system:bootstrappers:")).map(String::from),
        );
    }
    Some(Identity::new(format!("system:bootstrap:{id}"), groups))
}

/// Authenticates a bearer token that is a bootstrap token stored in this cluster.
pub async fn authenticate(server: &ApiServer, token: &str) -> Option<Identity> {
    let (id, secret) = parse(token)?;
    let secrets = ApiServer::resource("", "v1", "secrets").ok()?;
    let name = format!("bootstrap-token-{id}");
    let stored =
        server.objects.get(&ObjectRef { info: secrets, namespace: Some(NAMESPACE.into()), name }).await.ok()?;
    verify(&stored, id, secret, jiff::Timestamp::now().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, secret_text: &str, expiration: Option<&str>) -> Value {
        use base64::Engine as _;
        let mut object = super::secret(id, secret_text, expiration, "test");
        let data: serde_json::Map<String, Value> = object["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (k.clone(), json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default())))
            })
            .collect();
        object["data"] = Value::Object(data);
        object
    }

    #[test]
    fn tokens_have_the_bootstrap_shape() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        for bad in
            ["abcdef0123456789abcdef", "abcde.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde"]
        {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let (id, secret) = generate().unwrap_or_default();
        assert!(parse(&format!("{id}.{secret}")).is_some(), "{id}.{secret}");
        assert_ne!(generate().unwrap_or_default(), (id, secret));
    }

    #[test]
    fn a_stored_unexpired_token_authenticates_as_a_bootstrapper() {
        let now = 1_800_000_000;
        let object = stored("abcdef", "0123456789abcdef", Some("2030-01-01T00:00:00Z"));
        let identity = verify(&object, "abcdef", "0123456789abcdef", now);
        assert_eq!(
            identity,
            Some(Identity::new(
                "system:bootstrap:abcdef",
                vec!["system:bootstrappers".into(), "system:authenticated".into()]
            ))
        );
        assert_eq!(verify(&object, "abcdef", "0123456789abcdee", now), None, "wrong secret");
        assert_eq!(verify(&object, "abcdef", "0123456789abcdef", 1_900_000_000), None, "expired");
        let mut other_type = object.clone();
        other_type["type"] = json!("Opaque");
        assert_eq!(verify(&other_type, "abcdef", "0123456789abcdef", now), None, "not a bootstrap token");
        let forever = stored("abcdef", "0123456789abcdef", None);
        assert!(verify(&forever, "abcdef", "0123456789abcdef", now).is_some(), "no expiration");
    }
}
