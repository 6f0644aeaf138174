//! Work queues as client-go has them: a key waiting is queued once however often it is added, a
//! key being processed is never handed to a second worker (a change during processing queues it
//! again once the first worker is done), failed keys come back after a per-key exponential
//! backoff bounded by an overall token bucket, and keys can be added after a delay.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How failed keys are retried.
#[derive(Clone, Debug)]
pub struct RateLimits {
    /// The first retry's delay; doubled on each further failure of the key.
    pub base_delay: Duration,
    /// The longest per-key delay.
    pub max_delay: Duration,
    /// Retries per second across all keys (the token bucket's refill rate).
    pub qps: f64,
    /// How many retries may go at once before the bucket throttles.
    pub burst: u32,
}

impl Default for RateLimits {
    /// client-go's default controller rate limiter: 5 ms … 1000 s per key, 10 qps burst 100.
    fn default() -> Self {
        Self { base_delay: Duration::from_millis(5), max_delay: Duration::from_secs(1000), qps: 10.0, burst: 100 }
    }
}

/// A work queue of keys `K`. Cheap to clone; clones share the queue.
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<K> {
    state: Mutex<State<K>>,
    ready: Condvar,
    delayed: Mutex<Delayed<K>>,
    delayed_changed: Condvar,
    limits: RateLimits,
}

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    bucket: TokenBucket,
    shutting_down: bool,
    adds: u64,
}

struct Delayed<K> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    sequence: u64,
    stopped: bool,
}

struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Takes a token, returning how long the caller must wait for it.
    fn reserve(&mut self, limits: &RateLimits, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.qps).min(f64::from(limits.burst));
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || limits.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / limits.qps)
        }
    }
}

impl<K: Clone + Eq + Hash + Ord + Send + 'static> WorkQueue<K> {
    /// An empty queue with its delay thread.
    #[must_use]
    pub fn new(limits: RateLimits) -> Self {
        let bucket = TokenBucket { tokens: f64::from(limits.burst), last: Instant::now() };
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                bucket,
                shutting_down: false,
                adds: 0,
            }),
            ready: Condvar::new(),
            delayed: Mutex::new(Delayed { heap: BinaryHeap::new(), sequence: 0, stopped: false }),
            delayed_changed: Condvar::new(),
            limits,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("workqueue-delay".into())
            .spawn(move || delay_loop(&weak))
            .map_or_else(|e| tracing::error!(error = %e, "cannot start a work queue's delay thread"), drop);
        Self { inner }
    }

    fn state(&self) -> MutexGuard<'_, State<K>> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `key` dirty: queues it unless it is already waiting; if a worker holds it, it is
    /// queued again when that worker calls [`done`](Self::done).
    pub fn add(&self, key: K) {
        let mut state = self.state();
        if state.shutting_down || !state.dirty.insert(key.clone()) {
            return;
        }
        state.adds += 1;
        if state.processing.contains(&key) {
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.inner.ready.notify_one();
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let mut delayed = self.inner.delayed.lock().unwrap_or_else(PoisonError::into_inner);
        delayed.sequence += 1;
        let sequence = delayed.sequence;
        delayed.heap.push(Reverse((Instant::now() + delay, sequence, key)));
        drop(delayed);
        self.inner.delayed_changed.notify_one();
    }

    /// Adds `key` after its backoff: 5 ms doubled per consecutive failure, at most 1000 s, and
    /// no sooner than the overall token bucket allows.
    pub fn add_rate_limited(&self, key: K) {
        let delay = self.backoff(&key);
        self.add_after(key, delay);
    }

    /// The delay the next rate-limited add of `key` gets (and counts the failure).
    pub fn backoff(&self, key: &K) -> Duration {
        let limits = &self.inner.limits;
        let mut state = self.state();
        let failures = state.failures.entry(key.clone()).or_insert(0);
        let exponent = (*failures).min(40);
        *failures += 1;
        let per_key = limits.base_delay.saturating_mul(1u32 << exponent.min(31)).min(limits.max_delay);
        let per_key = if exponent > 31 { limits.max_delay } else { per_key };
        let overall = state.bucket.reserve(limits, Instant::now());
        per_key.max(overall)
    }

    /// Forgets `key`'s failures, so its next failure starts the backoff over.
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// How many times `key` has failed in a row.
    #[must_use]
    pub fn failures(&self, key: &K) -> u32 {
        self.state().failures.get(key).copied().unwrap_or(0)
    }

    /// Blocks until a key is available and hands it out, marking it processing; `None` once the
    /// queue shuts down.
    #[must_use]
    pub fn get(&self) -> Option<K> {
        let mut state = self.state();
        loop {
            if let Some(key) = state.queue.pop_front() {
                state.dirty.remove(&key);
                state.processing.insert(key.clone());
                return Some(key);
            }
            if state.shutting_down {
                return None;
            }
            state = self.inner.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Ends processing of `key`, queueing it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut state = self.state();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.inner.ready.notify_one();
        }
    }

    /// Keys waiting (not counting those being processed or delayed).
    #[must_use]
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// Whether no key waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys handed to workers right now.
    #[must_use]
    pub fn processing(&self) -> usize {
        self.state().processing.len()
    }

    /// Total adds that marked a key dirty.
    #[must_use]
    pub fn adds(&self) -> u64 {
        self.state().adds
    }

    /// Stops handing out keys: [`get`](Self::get) returns `None` to every worker.
    pub fn shut_down(&self) {
        self.state().shutting_down = true;
        self.inner.ready.notify_all();
        self.inner.delayed.lock().unwrap_or_else(PoisonError::into_inner).stopped = true;
        self.inner.delayed_changed.notify_all();
    }
}

/// Moves delayed keys into the queue when their time comes; ends with the queue.
fn delay_loop<K: Clone + Eq + Hash + Ord + Send + 'static>(weak: &std::sync::Weak<Inner<K>>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut delayed = inner.delayed.lock().unwrap_or_else(PoisonError::into_inner);
        if delayed.stopped {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while delayed.heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            if let Some(Reverse((_, _, key))) = delayed.heap.pop() {
                due.push(key);
            }
        }
        // Wake at least once a second so the thread notices its queue has been dropped.
        let wait = delayed.heap.peek().map_or(Duration::from_secs(1), |Reverse((at, _, _))| {
            at.saturating_duration_since(now).min(Duration::from_secs(1))
        });
        if due.is_empty() {
            drop(inner.delayed_changed.wait_timeout(delayed, wait).unwrap_or_else(PoisonError::into_inner));
            continue;
        }
        drop(delayed);
        let queue = WorkQueue { inner };
        for key in due {
            queue.add(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::time::Duration;

    use super::{RateLimits, WorkQueue};

    fn queue() -> WorkQueue<String> {
        WorkQueue::new(RateLimits::default())
    }

    #[test]
    fn a_waiting_key_is_queued_once() {
        let q = queue();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_key_being_processed_is_requeued_only_after_done() {
        let q = queue();
        q.add("a".into());
        let key = q.get().unwrap();
        q.add("a".into());
        assert_eq!(q.len(), 0, "never handed to a second worker while processing");
        q.done(&key);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().unwrap(), "a");
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap_and_forget_resets_it() {
        let limits = RateLimits { qps: 1e9, burst: 1_000_000, ..RateLimits::default() };
        let q: WorkQueue<String> = WorkQueue::new(limits);
        let key = "a".to_owned();
        let delays: Vec<Duration> = (0..4).map(|_| q.backoff(&key)).collect();
        let expected = [5, 10, 20, 40].map(Duration::from_millis);
        assert_eq!(delays, expected);
        for _ in 0..40 {
            q.backoff(&key);
        }
        assert_eq!(q.backoff(&key), Duration::from_secs(1000));
        q.forget(&key);
        assert_eq!(q.backoff(&key), Duration::from_millis(5));
    }

    #[test]
    fn the_token_bucket_throttles_bursts_of_failures_across_keys() {
        let limits = RateLimits { qps: 10.0, burst: 2, ..RateLimits::default() };
        let q: WorkQueue<String> = WorkQueue::new(limits);
        assert_eq!(q.backoff(&"a".to_owned()), Duration::from_millis(5));
        assert_eq!(q.backoff(&"b".to_owned()), Duration::from_millis(5));
        assert!(q.backoff(&"c".to_owned()) >= Duration::from_millis(90), "third retry waits for a token");
    }

    #[test]
    fn delayed_keys_arrive_after_their_delay() {
        let q = queue();
        q.add_after("later".into(), Duration::from_millis(30));
        assert!(q.is_empty());
        assert_eq!(q.get().unwrap(), "later");
    }

    #[test]
    fn shut_down_releases_waiting_workers() {
        let q = queue();
        let worker = {
            let q = q.clone();
            std::thread::spawn(move || q.get())
        };
        std::thread::sleep(Duration::from_millis(20));
        q.shut_down();
        assert_eq!(worker.join().unwrap(), None);
    }
}
