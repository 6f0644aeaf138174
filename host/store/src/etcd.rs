//! The etcd backend: a real etcd v3 cluster through `etcd-client`.
//!
//! Keys are stored under a prefix (`/registry` by default, as kube-apiserver's `--etcd-prefix`),
//! so the API server's `/pods/default/web-1` lives at `/registry/pods/default/web-1` and several
//! tools can share one etcd cluster. Revisions, compares, watches and compaction are etcd's own.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as etcd;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Result, StoreError};
use crate::model::{
    CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeEnd, RangeRequest, RangeResponse, Revision,
    Txn, TxnOp, TxnOpResult, TxnResponse, WatchRequest, prefix_end,
};
use crate::store::{Store, WatchStream, validate_txn};

/// How many keys one etcd range request reads; larger ranges are read in pages.
const RANGE_PAGE: usize = 500;

/// How long one unary request may take before etcd counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the etcd cluster is and which part of its key space is ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key; `/registry` as in Kubernetes.
    pub prefix: String,
}

impl EtcdConfig {
    /// The members at `endpoints`, keys under `/registry`.
    #[must_use]
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig { endpoints, prefix: "/registry".to_string() }
    }
}

/// The etcd-backed store.
pub struct EtcdStore {
    client: etcd::Client,
    config: EtcdConfig,
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers; an unreachable cluster fails with
    /// [`StoreError::Unavailable`] naming the endpoints.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let unavailable = |reason: String| StoreError::Unavailable { endpoints: config.endpoints.join(","), reason };
        if config.endpoints.is_empty() {
            return Err(unavailable("no endpoints were given".to_string()));
        }
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = tokio::time::timeout(REQUEST_TIMEOUT, etcd::Client::connect(&config.endpoints, Some(options)))
            .await
            .map_err(|_| unavailable("timed out connecting".to_string()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let store = EtcdStore { client, config };
        // The client connects lazily; one read proves a member answers.
        store.current_revision().await?;
        Ok(store)
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.config.prefix.len() + key.len());
        full.extend_from_slice(self.config.prefix.as_bytes());
        full.extend_from_slice(key);
        full
    }

    /// The etcd `range_end` for a range, `None` for a single key.
    fn range_end(&self, range: &KeyRange) -> Option<Vec<u8>> {
        match &range.end {
            RangeEnd::Single => None,
            RangeEnd::Before(end) => Some(self.full_key(end)),
            // "\0" is etcd's "to the end of the key space".
            RangeEnd::Unbounded => Some(prefix_end(self.config.prefix.as_bytes()).unwrap_or_else(|| vec![0])),
        }
    }

    fn key_value(&self, kv: &etcd::KeyValue) -> KeyValue {
        let key = kv.key().strip_prefix(self.config.prefix.as_bytes()).unwrap_or(kv.key());
        KeyValue {
            key: key.to_vec(),
            value: kv.value().to_vec(),
            create_revision: Revision(kv.create_revision()),
            mod_revision: Revision(kv.mod_revision()),
            version: kv.version(),
        }
    }

    /// Runs one unary request with a deadline, translating etcd's errors.
    async fn call<T>(
        &self,
        operation: &'static str,
        requested: Option<Revision>,
        request: impl Future<Output = Result<T, etcd::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.translate(operation, requested, &e)),
            Err(_) => Err(StoreError::Unavailable {
                endpoints: self.config.endpoints.join(","),
                reason: format!("{operation} timed out after {}s", REQUEST_TIMEOUT.as_secs()),
            }),
        }
    }

    fn translate(&self, operation: &'static str, requested: Option<Revision>, error: &etcd::Error) -> StoreError {
        let message = error.to_string();
        if let Some(requested) = requested {
            if message.contains("required revision has been compacted") {
                return StoreError::Compacted { requested, compacted: None };
            }
            if message.contains("required revision is a future revision") {
                return StoreError::FutureRevision { requested, current: None };
            }
        }
        match error {
            etcd::Error::TransportError(_) | etcd::Error::IoError(_) => {
                StoreError::Unavailable { endpoints: self.config.endpoints.join(","), reason: message }
            }
            etcd::Error::GRpcStatus(status)
                if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) =>
            {
                StoreError::Unavailable { endpoints: self.config.endpoints.join(","), reason: message }
            }
            _ => StoreError::backend(operation, message),
        }
    }

    fn compare(&self, compare: &crate::model::Compare) -> etcd::Compare {
        let key = self.full_key(&compare.key);
        let op = match compare.op {
            CompareOp::Equal => etcd::CompareOp::Equal,
            CompareOp::NotEqual => etcd::CompareOp::NotEqual,
            CompareOp::Greater => etcd::CompareOp::Greater,
            CompareOp::Less => etcd::CompareOp::Less,
        };
        match &compare.target {
            CompareTarget::ModRevision(r) => etcd::Compare::mod_revision(key, op, r.0),
            CompareTarget::CreateRevision(r) => etcd::Compare::create_revision(key, op, r.0),
            CompareTarget::Version(v) => etcd::Compare::version(key, op, *v),
            CompareTarget::Value(v) => etcd::Compare::value(key, op, v.clone()),
        }
    }

    fn op(&self, op: &TxnOp) -> etcd::TxnOp {
        match op {
            TxnOp::Get(key) => etcd::TxnOp::get(self.full_key(key), None),
            TxnOp::Put { key, value } => {
                etcd::TxnOp::put(self.full_key(key), value.clone(), Some(etcd::PutOptions::new().with_prev_key()))
            }
            TxnOp::Delete(key) => {
                etcd::TxnOp::delete(self.full_key(key), Some(etcd::DeleteOptions::new().with_prev_key()))
            }
        }
    }

    fn op_result(&self, response: &etcd::TxnOpResponse) -> Result<TxnOpResult> {
        Ok(match response {
            etcd::TxnOpResponse::Get(get) => TxnOpResult::Get(get.kvs().first().map(|kv| self.key_value(kv))),
            etcd::TxnOpResponse::Put(put) => TxnOpResult::Put { prev: put.prev_key().map(|kv| self.key_value(kv)) },
            etcd::TxnOpResponse::Delete(delete) => {
                TxnOpResult::Delete { prev: delete.prev_kvs().first().map(|kv| self.key_value(kv)) }
            }
            etcd::TxnOpResponse::Txn(_) => return Err(StoreError::backend("txn", "unexpected nested transaction")),
        })
    }

    fn event(&self, event: &etcd::Event) -> Option<Event> {
        let kv = self.key_value(event.kv()?);
        let prev = event.prev_kv().map(|kv| self.key_value(kv));
        Some(match event.event_type() {
            etcd::EventType::Put => Event { kind: EventKind::Put, kv, prev },
            etcd::EventType::Delete => Event {
                kind: EventKind::Delete,
                kv: KeyValue { value: Vec::new(), create_revision: Revision(0), version: 0, ..kv },
                prev,
            },
        })
    }
}

impl EtcdStore {
    /// One etcd range request.
    async fn range_page(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let mut options = etcd::GetOptions::new();
        if let Some(end) = self.range_end(&request.range) {
            options = options.with_range(end);
        }
        if let Some(limit) = request.limit {
            options = options.with_limit(limit as i64);
        }
        if let Some(revision) = request.revision {
            options = options.with_revision(revision.0);
        }
        if request.count_only {
            options = options.with_count_only();
        }
        let mut kv = self.client.kv_client();
        let key = self.full_key(&request.range.start);
        let response = self.call("range", request.revision, kv.get(key, Some(options))).await?;
        Ok(RangeResponse {
            kvs: response.kvs().iter().map(|kv| self.key_value(kv)).collect(),
            count: response.count() as u64,
            more: response.more(),
            revision: Revision(response.header().map_or(0, etcd::ResponseHeader::revision)),
        })
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        // etcd's gRPC messages are capped (4 MiB by default), so large ranges are read in pages
        // at one revision, as kube-apiserver reads etcd, and joined.
        let mut page =
            RangeRequest { limit: Some(request.limit.map_or(RANGE_PAGE, |l| l.min(RANGE_PAGE))), ..request.clone() };
        let mut result = self.range_page(&page).await?;
        let pinned = request.revision.unwrap_or(result.revision);
        let total = result.count;
        while result.more && !request.count_only && request.limit.is_none_or(|l| result.kvs.len() < l) {
            let Some(last) = result.kvs.last() else { break };
            let mut after = last.key.clone();
            after.push(0);
            page.range = KeyRange { start: after, end: request.range.end.clone() };
            page.revision = Some(pinned);
            if let Some(limit) = request.limit {
                page.limit = Some((limit - result.kvs.len()).min(RANGE_PAGE));
            }
            let next = self.range_page(&page).await?;
            result.more = next.more;
            result.kvs.extend(next.kvs);
        }
        result.count = total;
        result.more = request.limit.is_some_and(|l| total > l as u64);
        Ok(result)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        validate_txn(&txn)?;
        let request = etcd::Txn::new()
            .when(txn.compares.iter().map(|c| self.compare(c)).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(|op| self.op(op)).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(|op| self.op(op)).collect::<Vec<_>>());
        let mut kv = self.client.kv_client();
        let response = self.call("txn", None, kv.txn(request)).await?;
        let results = response.op_responses().iter().map(|r| self.op_result(r)).collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: Revision(response.header().map_or(0, etcd::ResponseHeader::revision)),
            results,
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        let mut options = etcd::WatchOptions::new().with_prev_key();
        if let Some(end) = self.range_end(&request.range) {
            options = options.with_range(end);
        }
        if let Some(start) = request.start_revision {
            options = options.with_start_revision(start.0);
        }
        let mut client = self.client.watch_client();
        let key = self.full_key(&request.range.start);
        let mut stream = self.call("watch", None, client.watch(key, Some(options))).await?;
        let (sender, receiver) = mpsc::channel(512);
        let this = EtcdStore { client: self.client.clone(), config: self.config.clone() };
        let requested = request.start_revision.unwrap_or_default();
        tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => {
                        let _ = sender.send(Err(StoreError::backend("watch", "etcd closed the watch stream"))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = sender.send(Err(this.translate("watch", None, &e))).await;
                        return;
                    }
                };
                if message.compact_revision() != 0 {
                    let compacted = Some(Revision(message.compact_revision()));
                    let _ = sender.send(Err(StoreError::Compacted { requested, compacted })).await;
                    return;
                }
                if message.canceled() {
                    let reason = format!("etcd cancelled the watch: {}", message.cancel_reason());
                    let _ = sender.send(Err(StoreError::backend("watch", reason))).await;
                    return;
                }
                for event in message.events().iter().filter_map(|e| this.event(e)) {
                    if sender.send(Ok(event)).await.is_err() {
                        // The consumer is gone; dropping `stream` cancels the etcd watch.
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.client.kv_client();
        let options = etcd::CompactionOptions::new().with_physical();
        self.call("compact", Some(revision), kv.compact(revision.0, Some(options))).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("etcd:{} (prefix {})", self.config.endpoints.join(","), self.config.prefix)
    }
}
