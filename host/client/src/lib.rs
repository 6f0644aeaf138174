//! The client Capstan's own components use to reach the API server.
//!
//! The scheduler, the controller manager and node agents talk to the API server exactly as an
//! external client would — over HTTPS, authenticated, through admission and validation — so
//! they see the same objects, watches and errors as kubectl. This crate builds that client from
//! a kubeconfig (the admin kubeconfig `capstan server` writes, or one a joining agent was given)
//! or from a server URL, CA and bearer token. [`plugins`] has what the scheduler and the
//! controller manager share for the Plugin objects they load.

pub mod plugins;

use std::path::Path;

pub use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// The cause.
        source: kube::config::KubeconfigError,
    },
    /// The configuration did not yield a client (bad URL, certificate or TLS setup).
    #[error("cannot build a client for {server}: {reason}")]
    Build {
        /// The server URL.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

/// A client for the cluster named by the current context of the kubeconfig at `path`.
pub async fn from_kubeconfig(path: &Path) -> Result<Client, ClientError> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|source| ClientError::Kubeconfig { path: path.display().to_string(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Kubeconfig { path: path.display().to_string(), source })?;
    build(config)
}

/// A client for `server` (an `https://` URL) that trusts `ca_pem` and authenticates with the
/// bearer `token`.
pub fn from_token(server: &str, ca_pem: &str, token: &str) -> Result<Client, ClientError> {
    let build_error = |reason: String| ClientError::Build { server: server.to_owned(), reason };
    let url = server.parse().map_err(|e| build_error(format!("not a URL: {e}")))?;
    let mut config = kube::Config::new(url);
    let der = pem_certificates(ca_pem);
    if der.is_empty() {
        return Err(build_error("the CA bundle holds no PEM certificate".into()));
    }
    config.root_cert = Some(der);
    config.auth_info.token = Some(token.to_owned().into());
    build(config)
}

fn build(config: kube::Config) -> Result<Client, ClientError> {
    let server = config.cluster_url.to_string();
    Client::try_from(config).map_err(|e| ClientError::Build { server, reason: e.to_string() })
}

/// The DER bytes of each `CERTIFICATE` block in `pem`.
fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (line, body.as_mut()) {
            ("-----BEGIN CERTIFICATE-----", _) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(text)) => {
                if let Some(der) = decode_base64(text) {
                    out.push(der);
                }
                body = None;
            }
            (_, Some(text)) => text.push_str(line),
            _ => {}
        }
    }
    out
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|c| *c == byte)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pem_blocks() {
        // "hello" in base64, wrapped as a certificate block.
        let pem = "junk\n-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem), vec![b"hello".to_vec()]);
        assert!(pem_certificates("no blocks").is_empty());
    }

    #[test]
    fn rejects_a_bad_ca_bundle() {
        let err = from_token("https://127.0.0.1:6443", "nothing", "t").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("cannot build a client for https://127.0.0.1:6443: the CA bundle holds no PEM certificate")
        );
    }
}
