//! The data model of the store: revisions, key ranges, values, transactions and watch events.
//!
//! Everything here mirrors etcd v3's API, because that is the contract Kubernetes is built on.

use std::fmt;

/// A point in the store's history: the global counter every write advances.
///
/// Revisions start at 1 for an empty store and only ever grow; a Kubernetes `resourceVersion`
/// is the decimal form of one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    /// The revision that follows this one.
    #[must_use]
    pub fn next(self) -> Self {
        Revision(self.0 + 1)
    }

    /// The raw counter value.
    #[must_use]
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The end of a [`KeyRange`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RangeEnd {
    /// The range holds exactly its start key.
    Single,
    /// The range holds every key `k` with `start <= k < end`.
    Before(Vec<u8>),
    /// The range holds every key from its start onwards.
    Unbounded,
}

/// A set of keys: one key, a prefix, or a half-open interval, as etcd's `key`/`range_end` pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// The first key in the range.
    pub start: Vec<u8>,
    /// Where the range stops.
    pub end: RangeEnd,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange { start: key.into(), end: RangeEnd::Single }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start).map_or(RangeEnd::Unbounded, RangeEnd::Before);
        KeyRange { start, end }
    }

    /// Every key starting with `prefix` that sorts at or after `from` (for paginated lists).
    pub fn prefix_from(prefix: &[u8], from: impl Into<Vec<u8>>) -> Self {
        let end = prefix_end(prefix).map_or(RangeEnd::Unbounded, RangeEnd::Before);
        KeyRange { start: from.into(), end }
    }

    /// Whether `key` lies inside the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == self.start.as_slice(),
            RangeEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
            RangeEnd::Unbounded => key >= self.start.as_slice(),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no such key
/// exists (an empty prefix or one made only of `0xff` bytes).
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key and its value as of some revision, with etcd's per-key bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// How many times the key was written since it was created; 1 after creation.
    pub version: i64,
}

/// What a compare inside a transaction looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's last-write revision (0 when the key does not exist).
    ModRevision(Revision),
    /// The key's creation revision (0 when the key does not exist).
    CreateRevision(Revision),
    /// The key's version (0 when the key does not exist).
    Version(i64),
    /// The key's value (a compare against a missing key is false).
    Value(Vec<u8>),
}

/// How a compare relates the key's current state to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Current equals target.
    Equal,
    /// Current differs from target.
    NotEqual,
    /// Current is greater than target.
    Greater,
    /// Current is less than target.
    Less,
}

/// One condition of a transaction, evaluated against the latest state of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key whose state is compared.
    pub key: Vec<u8>,
    /// The relation that must hold.
    pub op: CompareOp,
    /// What is compared.
    pub target: CompareTarget,
}

impl Compare {
    /// True when `key` exists.
    pub fn exists(key: impl Into<Vec<u8>>) -> Self {
        Compare { key: key.into(), op: CompareOp::Greater, target: CompareTarget::Version(0) }
    }

    /// True when `key` does not exist.
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Version(0) }
    }

    /// True when `key` was last written at exactly `revision` — optimistic concurrency.
    pub fn mod_revision_is(key: impl Into<Vec<u8>>, revision: Revision) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(revision) }
    }

    /// True when `key` has exactly `version` writes since its creation.
    pub fn version_is(key: impl Into<Vec<u8>>, version: i64) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Version(version) }
    }

    /// Evaluates the compare against the key's current state (`None` when missing).
    #[must_use]
    pub fn holds_for(&self, current: Option<&KeyValue>) -> bool {
        let ordering = match &self.target {
            CompareTarget::ModRevision(want) => current.map_or(0, |kv| kv.mod_revision.0).cmp(&want.0),
            CompareTarget::CreateRevision(want) => current.map_or(0, |kv| kv.create_revision.0).cmp(&want.0),
            CompareTarget::Version(want) => current.map_or(0, |kv| kv.version).cmp(want),
            CompareTarget::Value(want) => match current {
                Some(kv) => kv.value.as_slice().cmp(want.as_slice()),
                None => return false,
            },
        };
        match self.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }
}

/// One operation inside a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Read one key.
    Get(Vec<u8>),
    /// Write one key.
    Put {
        /// The key to write.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Delete one key (no effect when it does not exist).
    Delete(Vec<u8>),
}

impl TxnOp {
    /// The key the operation touches.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Get(key) | TxnOp::Put { key, .. } | TxnOp::Delete(key) => key,
        }
    }

    /// Whether the operation writes.
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, TxnOp::Get(_))
    }
}

/// A compare-then-act transaction: if every compare holds, `success` runs, otherwise `failure`.
///
/// All writes of the branch that runs share one new revision, and become visible together.
/// A key may be written at most once per branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Operations run otherwise.
    pub failure: Vec<TxnOp>,
}

/// What one [`TxnOp`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The key's value, if it existed.
    Get(Option<KeyValue>),
    /// The key's value before the put, if it existed.
    Put {
        /// Previous value.
        prev: Option<KeyValue>,
    },
    /// The key's value before the delete; `None` means nothing was deleted.
    Delete {
        /// Previous value.
        prev: Option<KeyValue>,
    },
}

/// The outcome of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
    /// One result per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

/// A read of a key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    /// The keys to read.
    pub range: KeyRange,
    /// Read as of this revision instead of the latest.
    pub revision: Option<Revision>,
    /// Return at most this many keys (in key order); `count` still counts them all.
    pub limit: Option<usize>,
    /// Return only the count, no key-values.
    pub count_only: bool,
}

impl RangeRequest {
    /// A read of the latest state of `range`, without limit.
    #[must_use]
    pub fn new(range: KeyRange) -> Self {
        RangeRequest { range, revision: None, limit: None, count_only: false }
    }

    /// Reads as of `revision`.
    #[must_use]
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    /// Returns at most `limit` key-values.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Returns only the count.
    #[must_use]
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// The result of a [`RangeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// The key-values, in key order (empty when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds, ignoring `limit`.
    pub count: u64,
    /// Whether `limit` cut the result short.
    pub more: bool,
    /// The store's current revision when the read was served.
    pub revision: Revision,
}

/// Whether a watch event is a write or a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change to one key, as delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete, only `key` and `mod_revision` (the revision of the
    /// deletion) are set.
    pub kv: KeyValue,
    /// The key before the change, when it existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which the change happened.
    #[must_use]
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A watch over a key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The keys to watch.
    pub range: KeyRange,
    /// The first revision whose changes are delivered (inclusive, as etcd's `start_revision`).
    /// `None` starts with the next change.
    pub start_revision: Option<Revision>,
}

impl WatchRequest {
    /// Every change to `range` made after `revision` (Kubernetes' "watch from resourceVersion").
    #[must_use]
    pub fn after(range: KeyRange, revision: Revision) -> Self {
        WatchRequest { range, start_revision: Some(revision.next()) }
    }

    /// Every change to `range` from now on.
    #[must_use]
    pub fn from_now(range: KeyRange) -> Self {
        WatchRequest { range, start_revision: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_that_can_grow() {
        let cases: &[(&[u8], Option<&[u8]>)] =
            &[(b"/registry/pods/", Some(b"/registry/pods0")), (b"a\xff", Some(b"b")), (b"\xff\xff", None), (b"", None)];
        for (prefix, want) in cases {
            assert_eq!(prefix_end(prefix).as_deref(), *want, "prefix {prefix:?}");
        }
    }

    #[test]
    fn key_range_contains_matches_its_bounds() {
        let prefix = KeyRange::prefix("/a/");
        assert!(prefix.contains(b"/a/x"));
        assert!(!prefix.contains(b"/a"));
        assert!(!prefix.contains(b"/b/x"));
        let single = KeyRange::key("/a");
        assert!(single.contains(b"/a"));
        assert!(!single.contains(b"/a/"));
        let all = KeyRange::prefix("");
        assert!(all.contains(b"anything"));
    }

    #[test]
    fn compares_follow_etcd_semantics_for_missing_keys() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: Revision(3),
            mod_revision: Revision(5),
            version: 2,
        };
        let cases = [
            (Compare::exists("k"), Some(&kv), true),
            (Compare::exists("k"), None, false),
            (Compare::missing("k"), None, true),
            (Compare::missing("k"), Some(&kv), false),
            (Compare::mod_revision_is("k", Revision(5)), Some(&kv), true),
            (Compare::mod_revision_is("k", Revision(4)), Some(&kv), false),
            (Compare::mod_revision_is("k", Revision(0)), None, true),
            (Compare::version_is("k", 2), Some(&kv), true),
            (
                Compare { key: b"k".to_vec(), op: CompareOp::Equal, target: CompareTarget::Value(b"v".to_vec()) },
                None,
                false,
            ),
            (
                Compare { key: b"k".to_vec(), op: CompareOp::Less, target: CompareTarget::CreateRevision(Revision(4)) },
                Some(&kv),
                true,
            ),
        ];
        for (compare, current, want) in cases {
            assert_eq!(compare.holds_for(current), want, "{compare:?} against {current:?}");
        }
    }
}
