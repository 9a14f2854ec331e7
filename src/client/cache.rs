//! The result cache (DESIGN §2 "Cache"): an LRU with a time-to-live holding the
//! results of successful calls, with single flight for concurrent identical misses.
//!
//! * Only successes are stored; an error is handed to the callers that shared its
//!   flight and then forgotten, so the next call computes again.
//! * Keys are built by the caller (for example `start_run|run-1|pulse-7`).
//! * Values are `Arc<serde_json::Value>`, so a hit costs a lock, a hash lookup, a
//!   clock read and one reference-count increment.
//! * Events go to `tracing` (target `cerebros.bridge.cache`, field `event` =
//!   `hit|miss|store|evict|purge`, field `key`) and are counted in [`CacheStats`].
//!
//! # Single flight
//!
//! The LRU and the table of keys being computed live behind one
//! [`parking_lot::Mutex`], so "look up, else join or open a flight" is one atomic
//! step and a result is stored and its flight closed in another: a caller can never
//! miss both the stored value and the flight that produced it. The lock is never
//! held across an `.await` or while user code runs.
//!
//! A flight's outcome is published once, under the flight's own small mutex, and
//! announced through a [`tokio::sync::Notify`]. (A blocking caller, such as
//! `Client::call_blocking`, drives the same async path on a runtime of its own.)
//!
//! If a leader goes away without an outcome (its future was dropped, or its compute
//! closure panicked), the flight is closed as *abandoned*: its waiters wake up and
//! start over, and the first of them to do so leads a new flight with its own
//! compute closure.
//!
//! A waiter keeps its own deadline: [`ResultCache::get_or_compute_within`] stops
//! waiting on another caller's flight once its own time is up (a `timeout` error),
//! however long the leader's deadline is; the leader goes on.

use crate::core::error::{BridgeError, ErrorClass, Result};
use lru::LruCache;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The `tracing` target of cache events.
pub const TRACE_TARGET: &str = "cerebros.bridge.cache";

macro_rules! cache_event {
    ($event:literal, $key:expr) => {
        tracing::debug!(target: "cerebros.bridge.cache", event = $event, key = %$key)
    };
    ($event:literal, $key:expr, $($rest:tt)+) => {
        tracing::debug!(target: "cerebros.bridge.cache", event = $event, key = %$key, $($rest)+)
    };
}

/// Counters of a [`ResultCache`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups the cache could not answer (absent or expired); one per
    /// [`ResultCache::get`] or `get_or_compute*` call that did not hit, whether it
    /// then computed or waited on another caller's flight.
    pub misses: u64,
    /// Successful results stored.
    pub stores: u64,
    /// Entries pushed out as least recently used to make room for a new one.
    pub evictions: u64,
    /// Entries dropped for being expired when looked up, or by [`ResultCache::purge`].
    pub purges: u64,
}

/// One stored result and when it was stored.
struct Entry {
    value: Arc<Value>,
    stored_at: Instant,
}

/// What a flight ended with.
#[derive(Clone)]
enum Outcome {
    /// The leader finished, with a value or an error.
    Done(Result<Arc<Value>>),
    /// The leader went away (cancelled or panicked) without finishing.
    Abandoned,
}

/// One computation in progress, shared by its leader and its waiters.
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    /// Wakes the waiters.
    notify: Notify,
}

impl Flight {
    fn new() -> Self {
        Flight {
            outcome: Mutex::new(None),
            notify: Notify::new(),
        }
    }

    /// Publishes the outcome (first call wins) and wakes every waiter.
    fn publish(&self, outcome: Outcome) {
        {
            let mut slot = self.outcome.lock();
            if slot.is_some() {
                return;
            }
            *slot = Some(outcome);
        }
        self.notify.notify_waiters();
    }

    fn outcome(&self) -> Option<Outcome> {
        self.outcome.lock().clone()
    }

    /// Waits for the outcome from async code.
    async fn wait(&self) -> Outcome {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a publish in between is not missed.
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            notified.await;
        }
    }
}

/// Everything behind the cache's one lock.
struct State {
    lru: LruCache<String, Entry>,
    flights: HashMap<String, Arc<Flight>>,
    /// Bumped by [`ResultCache::purge`]: flights opened before it store nothing.
    generation: u64,
}

/// What the LRU holds for a key at a given time.
enum Lookup {
    /// A value younger than the TTL.
    Fresh(Arc<Value>),
    /// An expired entry, now removed (dropped by the caller, outside the lock).
    Expired(Entry),
    /// Nothing.
    Missing,
}

impl State {
    /// The stored value for `key` if it is younger than `ttl` at `now`; an expired
    /// entry is removed.
    fn lookup(&mut self, key: &str, now: Instant, ttl: Duration) -> Lookup {
        match self.lru.get(key) {
            Some(entry) if now.saturating_duration_since(entry.stored_at) < ttl => {
                Lookup::Fresh(Arc::clone(&entry.value))
            }
            Some(_) => self.lru.pop(key).map_or(Lookup::Missing, Lookup::Expired),
            None => Lookup::Missing,
        }
    }
}

/// The answer to "look up, else join or open a flight".
enum Step {
    Hit(Arc<Value>),
    Lead(Arc<Flight>, u64),
    Wait(Arc<Flight>),
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    evictions: AtomicU64,
    purges: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// An LRU + TTL cache of successful call results, with single flight.
///
/// `ResultCache` is `Send + Sync`; share it behind an [`Arc`].
///
/// ```
/// use cerebros_bridge::client::cache::ResultCache;
/// use serde_json::json;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cerebros_bridge::core::error::Result<()> {
/// let cache = ResultCache::new(512, Duration::from_secs(30));
/// let key = "start_run|run-1|pulse-7".to_string();
///
/// // A miss computes and stores the result ...
/// let first = cache
///     .get_or_compute(key.clone(), || async { Ok(json!({"run_id": "run-1"})) })
///     .await?;
/// // ... and the next call is a hit: the compute closure does not run.
/// let again = cache
///     .get_or_compute(key.clone(), || async { unreachable!("cached") })
///     .await?;
/// assert_eq!(first, again);
/// assert_eq!(cache.get(&key).unwrap()["run_id"], "run-1");
///
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.stores), (2, 1, 1));
/// # Ok(())
/// # }
/// ```
pub struct ResultCache {
    /// `None` for a disabled cache.
    state: Option<Mutex<State>>,
    capacity: NonZeroUsize,
    ttl: Duration,
    counters: Counters,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("enabled", &self.is_enabled())
            .field("max_entries", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ResultCache {
    /// A cache holding at most `max_entries` results, each for `ttl` after it was
    /// stored. `max_entries == 0` gives a [disabled](ResultCache::disabled) cache.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        match NonZeroUsize::new(max_entries) {
            Some(capacity) => ResultCache {
                state: Some(Mutex::new(State {
                    lru: LruCache::new(capacity),
                    flights: HashMap::new(),
                    generation: 0,
                })),
                capacity,
                ttl,
                counters: Counters::default(),
            },
            None => Self::disabled_with_ttl(ttl),
        }
    }

    /// A cache that holds nothing: [`get`](ResultCache::get) always returns `None`
    /// and `get_or_compute*` just runs the computation (no single flight). It emits
    /// no events and counts nothing.
    pub fn disabled() -> Self {
        Self::disabled_with_ttl(Duration::ZERO)
    }

    fn disabled_with_ttl(ttl: Duration) -> Self {
        ResultCache {
            state: None,
            capacity: NonZeroUsize::MIN,
            ttl,
            counters: Counters::default(),
        }
    }

    /// Whether this cache stores anything (false for [`ResultCache::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.state.is_some()
    }

    /// How long a stored result stays valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The stored result for `key` if there is one younger than the TTL.
    ///
    /// An expired entry found here is removed (event `purge`) and the lookup counts
    /// as a miss. This is the hot path: one lock, one hash lookup, one clock read.
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        let found = self.hit(key);
        if found.is_none() && self.state.is_some() {
            Counters::bump(&self.counters.misses, 1);
            cache_event!("miss", key);
        }
        found
    }

    /// Like [`get`](ResultCache::get), but a miss is not counted: for callers that go
    /// on to [`get_or_compute`](ResultCache::get_or_compute), which counts it.
    pub fn hit(&self, key: &str) -> Option<Arc<Value>> {
        let state = self.state.as_ref()?;
        let now = Instant::now();
        let lookup = state.lock().lookup(key, now, self.ttl);
        match lookup {
            Lookup::Fresh(value) => {
                self.note_hit(key);
                Some(value)
            }
            Lookup::Expired(entry) => {
                self.note_expired(key);
                drop(entry);
                None
            }
            Lookup::Missing => None,
        }
    }

    /// The cached result for `key`, else the result of `compute`, stored on success.
    ///
    /// Concurrent calls for the same missing key share one computation: the first
    /// runs its `compute`, the others wait for its outcome, success or error, and
    /// their own closures are dropped unused. Errors are never stored. If the
    /// computing caller is cancelled (its future dropped) or panics, a waiting caller
    /// takes over with its own `compute`.
    pub async fn get_or_compute<F, Fut>(&self, key: String, compute: F) -> Result<Arc<Value>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value>>,
    {
        self.get_or_compute_until(key, None, compute).await
    }

    /// [`get_or_compute`](ResultCache::get_or_compute) for a caller with a deadline:
    /// waiting on another caller's flight for the same key, it gives up `limit` after
    /// this call began, with a `timeout` error (the flight goes on for its own
    /// callers). Its own computation, when it leads, is bounded by `compute` itself.
    pub async fn get_or_compute_within<F, Fut>(
        &self,
        key: String,
        limit: Duration,
        compute: F,
    ) -> Result<Arc<Value>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value>>,
    {
        let deadline = Instant::now() + limit;
        self.get_or_compute_until(key, Some((deadline, limit)), compute)
            .await
    }

    /// The body of both async variants: `wait_limit` is the waiter's deadline and the
    /// limit it came from (for the error message).
    async fn get_or_compute_until<F, Fut>(
        &self,
        key: String,
        wait_limit: Option<(Instant, Duration)>,
        compute: F,
    ) -> Result<Arc<Value>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value>>,
    {
        if self.state.is_none() {
            return compute().await.map(Arc::new);
        }
        let mut first = true;
        loop {
            match self.begin(&key, first) {
                Step::Hit(value) => return Ok(value),
                Step::Lead(flight, generation) => {
                    let guard = LeaderGuard::new(self, &key, flight, generation);
                    let result = compute().await;
                    return guard.finish(result);
                }
                Step::Wait(flight) => {
                    let outcome = match wait_limit {
                        None => flight.wait().await,
                        Some((deadline, limit)) => {
                            let until = tokio::time::Instant::from_std(deadline);
                            tokio::time::timeout_at(until, flight.wait())
                                .await
                                .map_err(|_| waited_too_long(&key, limit))?
                        }
                    };
                    match outcome {
                        Outcome::Done(result) => return result,
                        Outcome::Abandoned => first = false,
                    }
                }
            }
        }
    }

    /// Drops every stored result (one event `purge` with key `*` and the number of
    /// `entries`). Computations in flight still answer their callers but store
    /// nothing, and later callers no longer join them.
    pub fn purge(&self) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let mut st = state.lock();
        let old = std::mem::replace(&mut st.lru, LruCache::new(self.capacity));
        st.flights.clear();
        st.generation = st.generation.wrapping_add(1);
        drop(st);
        let entries = old.len();
        drop(old);
        Counters::bump(&self.counters.purges, entries as u64);
        cache_event!("purge", "*", entries);
    }

    /// The number of stored results, counting expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.state
            .as_ref()
            .map_or(0, |state| state.lock().lru.len())
    }

    /// Whether no result is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            purges: c.purges.load(Ordering::Relaxed),
        }
    }

    fn note_hit(&self, key: &str) {
        Counters::bump(&self.counters.hits, 1);
        cache_event!("hit", key);
    }

    fn note_expired(&self, key: &str) {
        Counters::bump(&self.counters.purges, 1);
        cache_event!("purge", key, reason = "expired");
    }

    /// Under one lock: a fresh stored value, else the flight to join, else a new
    /// flight led by the caller. `count` says whether to count the hit or miss (only
    /// a call's first pass does).
    fn begin(&self, key: &str, count: bool) -> Step {
        let state = self.state.as_ref().expect("begin on an enabled cache");
        let now = Instant::now();
        let mut st = state.lock();
        let expired = match st.lookup(key, now, self.ttl) {
            Lookup::Fresh(value) => {
                drop(st);
                if count {
                    self.note_hit(key);
                }
                return Step::Hit(value);
            }
            Lookup::Expired(entry) => Some(entry),
            Lookup::Missing => None,
        };
        let step = match st.flights.get(key) {
            Some(flight) => Step::Wait(Arc::clone(flight)),
            None => {
                let flight = Arc::new(Flight::new());
                st.flights.insert(key.to_owned(), Arc::clone(&flight));
                Step::Lead(flight, st.generation)
            }
        };
        drop(st);
        if expired.is_some() {
            self.note_expired(key);
        }
        drop(expired);
        if count {
            Counters::bump(&self.counters.misses, 1);
            cache_event!("miss", key);
        }
        step
    }
}

/// The error of a caller whose own deadline passed while it waited on another
/// caller's flight.
fn waited_too_long(key: &str, limit: Duration) -> BridgeError {
    BridgeError::new(
        ErrorClass::Timeout,
        format!(
            "no reply within {} ms: an identical call (cache key `{key}`) was already running and had not finished",
            limit.as_millis()
        ),
    )
    .with_detail("timeout_ms", limit.as_millis() as u64)
    .with_detail("cache_key", key)
}

/// Held by a flight's leader while it computes. [`finish`](LeaderGuard::finish)
/// stores a success and publishes the outcome; dropping it unfinished (the leader's
/// future was dropped, or its closure panicked) closes the flight as abandoned, so
/// waiters never hang.
struct LeaderGuard<'a> {
    cache: &'a ResultCache,
    key: &'a str,
    flight: Arc<Flight>,
    generation: u64,
    finished: bool,
}

impl<'a> LeaderGuard<'a> {
    fn new(cache: &'a ResultCache, key: &'a str, flight: Arc<Flight>, generation: u64) -> Self {
        LeaderGuard {
            cache,
            key,
            flight,
            generation,
            finished: false,
        }
    }

    fn finish(mut self, result: Result<Value>) -> Result<Arc<Value>> {
        self.finished = true;
        let result = result.map(Arc::new);
        let cache = self.cache;
        let state = cache.state.as_ref().expect("leader of an enabled cache");
        let mut stored = false;
        let mut displaced = None;
        {
            let mut st = state.lock();
            Self::close(&mut st, self.key, &self.flight);
            if let Ok(value) = &result {
                if st.generation == self.generation {
                    let entry = Entry {
                        value: Arc::clone(value),
                        stored_at: Instant::now(),
                    };
                    displaced = st.lru.push(self.key.to_owned(), entry);
                    stored = true;
                }
            }
        }
        // A displaced entry under the same key is a replacement (of an expired
        // entry), not an eviction.
        let evicted = displaced.filter(|(k, _)| k != self.key);
        self.flight.publish(Outcome::Done(result.clone()));
        if stored {
            Counters::bump(&cache.counters.stores, 1);
            cache_event!("store", self.key);
        }
        if let Some((evicted_key, _)) = evicted {
            Counters::bump(&cache.counters.evictions, 1);
            cache_event!("evict", evicted_key);
        }
        result
    }

    /// Removes the flight from the table if it is still the one registered there
    /// (a purge may have detached it, and a new flight may have taken the key).
    fn close(st: &mut State, key: &str, flight: &Arc<Flight>) {
        if st
            .flights
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
        {
            st.flights.remove(key);
        }
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(state) = self.cache.state.as_ref() {
            Self::close(&mut state.lock(), self.key, &self.flight);
        }
        self.flight.publish(Outcome::Abandoned);
        tracing::debug!(
            target: "cerebros.bridge.cache",
            key = %self.key,
            "flight abandoned by its leader; waiters retry"
        );
    }
}

#[cfg(test)]
mod tests;
