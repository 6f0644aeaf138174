//! `capstan token create|list`: bootstrap tokens a node joins with (`capstan agent --token`),
//! stored as Secrets in `kube-system` the way kubeadm stores them (see
//! `capstan_apiserver::bootstrap_tokens`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use capstan_apiserver::bootstrap_tokens::{self, NAMESPACE, SECRET_TYPE};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use serde_json::Value;

/// The description of the token `capstan server` prints.
const SERVER_TOKEN: &str = "the join token capstan server prints";

/// `capstan token` subcommands.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Creates a bootstrap token and prints it (`<id>.<secret>`).
    Create {
        /// How long it is valid (e.g. 30m, 24h; 0 for ever).
        #[arg(long, default_value = "24h", value_parser = crate::parse_duration)]
        ttl: Duration,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        cluster: Cluster,
    },
    /// Lists the bootstrap tokens.
    List {
        #[command(flatten)]
        cluster: Cluster,
    },
}

/// Which cluster to talk to.
#[derive(clap::Args)]
pub struct Cluster {
    /// The server's data directory (its kubeconfig is `<data-dir>/kubeconfig`).
    #[arg(long, default_value = "./.capstan", env = "CAPSTAN_DATA_DIR")]
    data_dir: PathBuf,
    /// A kubeconfig to use instead of the data directory's.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Cluster {
    async fn client(&self) -> anyhow::Result<kube::Client> {
        let path = self.kubeconfig.clone().unwrap_or_else(|| self.data_dir.join("kubeconfig"));
        capstan_client::from_kubeconfig(&path)
            .await
            .with_context(|| format!("cannot use the kubeconfig {}", path.display()))
    }
}

/// Runs a `capstan token` subcommand.
pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { ttl, description, cluster } => {
            println!("{}", create(&cluster.client().await?, ttl, &description).await?);
        }
        TokenCommand::List { cluster } => {
            let now = now_seconds();
            println!("{:<24} {:<22} DESCRIPTION", "TOKEN", "EXPIRES");
            for secret in tokens(&cluster.client().await?).await? {
                let field = |key: &str| bootstrap_tokens::data_text(&secret, key).unwrap_or_default();
                let expires = field("expiration");
                let state = if bootstrap_tokens::unexpired(&secret, now) { "" } else { " (expired)" };
                let expires = if expires.is_empty() { "<forever>".to_string() } else { format!("{expires}{state}") };
                println!(
                    "{:<24} {:<22} {}",
                    format!("{}.{}", field("token-id"), field("token-secret")),
                    expires,
                    field("description")
                );
            }
        }
    }
    Ok(())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Creates a token valid for `ttl` (zero: no expiry) and returns it.
pub async fn create(client: &kube::Client, ttl: Duration, description: &str) -> anyhow::Result<String> {
    let (id, secret) = bootstrap_tokens::generate().map_err(|_| anyhow::anyhow!("no randomness for a token"))?;
    let expiration = (!ttl.is_zero()).then(|| bootstrap_tokens::expiration_after(ttl));
    let object = bootstrap_tokens::secret(&id, &secret, expiration.as_deref(), description);
    let object: Secret = serde_json::from_value(object).context("a token Secret")?;
    kube::Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &object)
        .await
        .context("cannot store the token")?;
    Ok(format!("{id}.{secret}"))
}

/// The bootstrap token Secrets, as JSON.
async fn tokens(client: &kube::Client) -> anyhow::Result<Vec<Value>> {
    let listed = kube::Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().fields(&format!("type={SECRET_TYPE}")))
        .await
        .context("cannot list the tokens")?;
    listed.items.into_iter().map(|s| serde_json::to_value(s).context("a Secret")).collect()
}

/// The token `capstan server` prints for joining nodes: an unexpired one it made before, or a
/// new one valid for a day.
pub async fn server_join_token(client: &kube::Client) -> anyhow::Result<String> {
    let now = now_seconds();
    let existing = tokens(client).await?.into_iter().find(|s| {
        bootstrap_tokens::data_text(s, "description").as_deref() == Some(SERVER_TOKEN)
            // At least an hour left, so the printed token is useful.
            && bootstrap_tokens::unexpired(s, now + 3600)
    });
    if let Some(secret) = existing {
        let field = |key: &str| bootstrap_tokens::data_text(&secret, key).unwrap_or_default();
        return Ok(format!("{}.{}", field("token-id"), field("token-secret")));
    }
    create(client, Duration::from_hours(24), SERVER_TOKEN).await
}

/// The command that joins another machine to the server at `address`.
#[must_use]
pub fn join_command(address: &str, token: &str, data_dir: &Path) -> String {
    format!(
        "capstan agent --server https://{address} --token {token} --ca-file {}",
        data_dir.join("pki/ca.crt").display()
    )
}
