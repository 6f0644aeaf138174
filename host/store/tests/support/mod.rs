//! Backends for the store tests: a fresh embedded database, or a real etcd member.

#![allow(dead_code, reason = "each test binary uses a different part of the support module")]

use std::sync::{Arc, OnceLock};

use capstan_store::{EmbeddedStore, EtcdConfig, EtcdStore, Store};
use capstan_testbed::EtcdServer;
use tempfile::TempDir;

/// A store under test and whatever keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    _etcd: Option<EtcdServer>,
}

impl Fixture {
    /// A new embedded store in a temporary directory.
    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path().join("store.db")).expect("open embedded store");
        Fixture { store: Arc::new(store), _dir: Some(dir), _etcd: None }
    }

    /// A store on the etcd member shared by this test binary, under a prefix of its own so tests
    /// do not see each other's keys. Revisions are shared, so tests only assert relative ones.
    pub async fn etcd_shared() -> Self {
        static SHARED: OnceLock<EtcdServer> = OnceLock::new();
        let server = SHARED.get_or_init(|| EtcdServer::start().expect("start etcd"));
        let prefix = format!("/test-{:016x}/registry", rand::random::<u64>());
        let config = EtcdConfig { endpoints: vec![server.endpoint().to_string()], prefix };
        let store = EtcdStore::connect(config).await.expect("connect to etcd");
        Fixture { store: Arc::new(store), _dir: None, _etcd: None }
    }

    /// A store on an etcd member of its own, for tests that compact (compaction is global).
    pub async fn etcd_private() -> Self {
        let server = EtcdServer::start().expect("start etcd");
        let store =
            EtcdStore::connect(EtcdConfig::new(vec![server.endpoint().to_string()])).await.expect("connect to etcd");
        Fixture { store: Arc::new(store), _dir: None, _etcd: Some(server) }
    }
}
