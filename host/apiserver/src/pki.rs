//! The cluster's credentials: a CA, the serving certificate, the admin's client certificate and
//! bearer token, and the kubeconfig that carries them — created on first start, reused after.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why the credentials could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// The credential.
        what: &'static str,
        /// The cause.
        source: rcgen::Error,
    },
}

/// The user the admin credentials authenticate as, in the group that may do everything.
pub const ADMIN_USER: &str = "capstan-admin";
/// Kubernetes' superuser group.
pub const ADMIN_GROUP: &str = "system:masters";

/// PEM-encoded credentials.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The cluster CA certificate.
    pub ca_cert: String,
    /// The API server's serving certificate.
    pub server_cert: String,
    /// Its private key.
    pub server_key: String,
    /// The admin's client certificate.
    pub admin_cert: String,
    /// Its private key.
    pub admin_key: String,
    /// The admin's bearer token.
    pub admin_token: String,
    /// The secret service-account tokens are signed with (`sa.key`).
    pub service_account_key: String,
}

const FILES: [&str; 6] = ["ca.crt", "server.crt", "server.key", "admin.crt", "admin.key", "admin.token"];

impl Pki {
    /// Loads the credentials from `dir`, creating them when they do not exist yet. `hosts` are
    /// the names and addresses the serving certificate is valid for.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self, PkiError> {
        if FILES.iter().all(|f| dir.join(f).exists()) {
            return Self::load(dir);
        }
        // (A directory from before service-account tokens gets its `sa.key` in `load`.)
        let pki = Self::generate(hosts)?;
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { action: "create", path: dir.into(), source })?;
        let contents =
            [&pki.ca_cert, &pki.server_cert, &pki.server_key, &pki.admin_cert, &pki.admin_key, &pki.admin_token];
        for (name, content) in FILES.iter().zip(contents) {
            write_private(&dir.join(name), content)?;
        }
        Ok(Pki { service_account_key: service_account_key(dir)?, ..pki })
    }

    fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Io { action: "read", path, source })
        };
        Ok(Pki {
            ca_cert: read("ca.crt")?,
            server_cert: read("server.crt")?,
            server_key: read("server.key")?,
            admin_cert: read("admin.crt")?,
            admin_key: read("admin.key")?,
            admin_token: read("admin.token")?.trim().to_string(),
            service_account_key: service_account_key(dir)?,
        })
    }

    fn generate(hosts: &[String]) -> Result<Self, PkiError> {
        let fail = |what| move |source| PkiError::Generate { what, source };
        let ca_key = KeyPair::generate().map_err(fail("CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail("CA"))?;
        ca_params.distinguished_name = name("capstan-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail("CA certificate"))?;
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(fail("serving key"))?;
        let mut server_params = CertificateParams::new(Vec::<String>::new()).map_err(fail("serving certificate"))?;
        server_params.distinguished_name = name("capstan-apiserver", None);
        server_params.subject_alt_names = subject_alt_names(hosts);
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).map_err(fail("serving certificate"))?;

        let admin_key = KeyPair::generate().map_err(fail("admin key"))?;
        let mut admin_params = CertificateParams::new(Vec::<String>::new()).map_err(fail("admin certificate"))?;
        admin_params.distinguished_name = name(ADMIN_USER, Some(ADMIN_GROUP));
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin_params.signed_by(&admin_key, &ca).map_err(fail("admin certificate"))?;

        Ok(Pki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            admin_token: random_token(),
            service_account_key: String::new(),
        })
    }

    /// A kubeconfig for the admin at `server` (`https://127.0.0.1:6443`).
    #[must_use]
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: {ADMIN_USER}\n  user:\n    \
             client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: capstan\n  context:\n    \
             cluster: capstan\n    user: {ADMIN_USER}\n    namespace: default\ncurrent-context: capstan\n",
            ca = b64(&self.ca_cert),
            cert = b64(&self.admin_cert),
            key = b64(&self.admin_key),
        );
        out
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn subject_alt_names(hosts: &[String]) -> Vec<SanType> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(SanType::IpAddress(ip)),
            Err(_) => host.try_into().ok().map(SanType::DnsName),
        })
        .collect()
}

/// A 256-bit random token, hex-encoded, from the kernel's generator via `UUIDv4s`.
/// The service-account signing secret in `dir`, created on first use.
fn service_account_key(dir: &Path) -> Result<String, PkiError> {
    let path = dir.join("sa.key");
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(PkiError::Io { action: "read", path, source }),
    }
    let key = random_token();
    write_private(&path, &key)?;
    Ok(key)
}

fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Writes a file readable only by its owner (it may hold a private key).
pub fn write_private(path: &Path, content: &str) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| PkiError::Io { action: "write", path: path.into(), source })?;
    file.write_all(content.as_bytes()).map_err(|source| PkiError::Io { action: "write", path: path.into(), source })
}
