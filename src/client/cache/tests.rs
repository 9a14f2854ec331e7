use super::*;
use crate::core::error::{BridgeError, ErrorClass};
use serde_json::json;
use std::sync::atomic::AtomicUsize;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn is_send_and_sync() {
    assert_send_sync::<ResultCache>();
    assert_send_sync::<Arc<ResultCache>>();
}

#[tokio::test]
async fn hit_and_miss() {
    let cache = ResultCache::new(8, Duration::from_secs(60));
    assert!(cache.get("a").is_none());
    let v = cache
        .get_or_compute("a".into(), || async { Ok(json!({"x": 1})) })
        .await
        .unwrap();
    assert_eq!(*v, json!({"x": 1}));
    let hit = cache.get("a").unwrap();
    assert!(Arc::ptr_eq(&v, &hit), "a hit hands out the stored Arc");
    let again = cache
        .get_or_compute("a".into(), || async { panic!("must not compute on a hit") })
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&v, &again));
    assert_eq!(cache.len(), 1);
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 2,
            misses: 2,
            stores: 1,
            evictions: 0,
            purges: 0
        }
    );
}

#[tokio::test]
async fn ttl_really_expires() {
    // The check right after the store must run within the TTL even on a loaded machine;
    // the sleeps outlast it by a tenth of a second.
    let cache = ResultCache::new(8, Duration::from_millis(300));
    let calls = AtomicUsize::new(0);
    let compute = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(json!(1))
    };
    cache.get_or_compute("k".into(), compute).await.unwrap();
    assert!(cache.get("k").is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(cache.get("k").is_none(), "expired entry must not hit");
    assert_eq!(cache.len(), 0, "expired entry is removed on lookup");
    assert_eq!(cache.stats().purges, 1);
    // And a compute after expiry runs again.
    cache.get_or_compute("k".into(), compute).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    cache.get_or_compute("k".into(), compute).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.stats().purges, 2);
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn lru_eviction_order() {
    let cache = ResultCache::new(3, Duration::from_secs(60));
    let store =
        |k: &'static str| cache.get_or_compute(k.into(), move || async move { Ok(json!(k)) });
    for k in ["a", "b", "c"] {
        store(k).await.unwrap();
    }
    // Touch "a": "b" is now the least recently used.
    assert!(cache.get("a").is_some());
    store("d").await.unwrap();
    assert!(cache.get("b").is_none(), "b was least recently used");
    assert_eq!(cache.len(), 3);
    // Order now, least recent first: c, a, d. Adding e evicts c.
    store("e").await.unwrap();
    assert!(cache.get("c").is_none());
    for k in ["a", "d", "e"] {
        assert_eq!(*cache.get(k).unwrap(), json!(k));
    }
    assert_eq!(cache.stats().evictions, 2);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = ResultCache::new(8, Duration::from_secs(60));
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let err = cache
            .get_or_compute("bad".into(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(BridgeError::new(ErrorClass::Timeout, "too slow"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "each call computes again");
    assert!(cache.get("bad").is_none());
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().stores, 0);
    // A later success is stored.
    cache
        .get_or_compute("bad".into(), || async { Ok(json!("ok")) })
        .await
        .unwrap();
    assert_eq!(*cache.get("bad").unwrap(), json!("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_misses_compute_once() {
    let cache = Arc::new(ResultCache::new(64, Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            cache
                .get_or_compute("start_run|run-1|pulse-7".into(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(json!({"run_id": "run-1"}))
                })
                .await
        }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap().unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one compute");
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    let s = cache.stats();
    assert_eq!(s.hits + s.misses, 100);
    assert_eq!(s.stores, 1);
}

#[tokio::test]
async fn a_waiter_gives_up_at_its_own_deadline_and_the_leader_goes_on() {
    let cache = ResultCache::new(8, Duration::from_secs(60));
    let leader = cache.get_or_compute_within("k".into(), Duration::from_secs(60), || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(json!("slow"))
    });
    let waiter = async {
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        let outcome = cache
            .get_or_compute_within("k".into(), Duration::from_millis(100), || async {
                unreachable!("the waiter joins the leader's flight")
            })
            .await;
        (outcome, start.elapsed())
    };
    let (leader, (waiter, waited)) = tokio::join!(leader, waiter);
    let err = waiter.unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout);
    assert_eq!(err.details["timeout_ms"], 100);
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert_eq!(*leader.unwrap(), json!("slow"));
    assert_eq!(*cache.get("k").unwrap(), json!("slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_get_the_leaders_error() {
    let cache = Arc::new(ResultCache::new(64, Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            cache
                .get_or_compute("k".into(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(BridgeError::new(ErrorClass::Exception, "boom").with_op("start_run"))
                })
                .await
        }));
    }
    for t in tasks {
        let res = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("waiter must not hang")
            .unwrap();
        let err = res.unwrap_err();
        assert_eq!(err.class, ErrorClass::Exception);
        assert_eq!(err.message, "boom");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.len(), 0);
    // A later call computes again.
    let v = cache
        .get_or_compute("k".into(), || async { Ok(json!(2)) })
        .await
        .unwrap();
    assert_eq!(*v, json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_leader_does_not_hang_waiters() {
    let cache = Arc::new(ResultCache::new(64, Duration::from_secs(60)));
    let takeovers = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("k".into(), || async move {
                    let _ = started_tx.send(());
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(json!("never"))
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let mut waiters = Vec::new();
    for i in 0..10 {
        let (cache, takeovers) = (cache.clone(), takeovers.clone());
        waiters.push(tokio::spawn(async move {
            cache
                .get_or_compute("k".into(), || async move {
                    takeovers.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(json!({"by": i}))
                })
                .await
        }));
    }
    // Let the waiters join the leader's flight, then cancel the leader.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        takeovers.load(Ordering::SeqCst),
        0,
        "waiters joined the flight"
    );
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    let mut values = Vec::new();
    for w in waiters {
        let v = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("waiter must not hang after its leader is cancelled")
            .unwrap()
            .unwrap();
        values.push(v);
    }
    assert_eq!(takeovers.load(Ordering::SeqCst), 1, "one waiter takes over");
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    assert!(cache.get("k").is_some());
}

#[tokio::test]
async fn a_panicking_leader_releases_its_waiters() {
    let cache = Arc::new(ResultCache::new(64, Duration::from_secs(60)));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("k".into(), || async move {
                    started_tx.send(()).unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    panic!("leader dies");
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let v = cache
        .get_or_compute("k".into(), || async { Ok(json!("taken over")) })
        .await
        .unwrap();
    assert_eq!(*v, json!("taken over"));
    assert!(leader.await.is_err());
}

#[tokio::test]
async fn purge_drops_everything_and_detaches_flights() {
    let cache = ResultCache::new(8, Duration::from_secs(60));
    for k in ["a", "b"] {
        cache
            .get_or_compute(k.into(), || async { Ok(json!(1)) })
            .await
            .unwrap();
    }
    cache.purge();
    assert_eq!(cache.len(), 0);
    assert!(cache.get("a").is_none());
    assert_eq!(cache.stats().purges, 2);

    // A flight that straddles a purge answers its caller but stores nothing.
    let v = cache
        .get_or_compute("c".into(), || async {
            cache.purge();
            Ok(json!("stale"))
        })
        .await
        .unwrap();
    assert_eq!(*v, json!("stale"));
    assert!(cache.get("c").is_none());
}

#[tokio::test]
async fn disabled_cache_just_computes() {
    let cache = ResultCache::disabled();
    assert!(!cache.is_enabled());
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let v = cache
            .get_or_compute("k".into(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(json!(1))
            })
            .await
            .unwrap();
        assert_eq!(*v, json!(1));
        assert!(cache.get("k").is_none());
    }
    assert_eq!(
        *cache
            .get_or_compute("k".into(), || async { Ok(json!(2)) })
            .await
            .unwrap(),
        json!(2)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats(), CacheStats::default());
    assert!(!ResultCache::new(0, Duration::from_secs(1)).is_enabled());
}

#[test]
fn stats_serialize() {
    let s = CacheStats {
        hits: 1,
        misses: 2,
        stores: 3,
        evictions: 4,
        purges: 5,
    };
    assert_eq!(
        serde_json::to_value(s).unwrap(),
        json!({"hits": 1, "misses": 2, "stores": 3, "evictions": 4, "purges": 5})
    );
}

mod events {
    use super::*;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Records the `event` field of every cache event.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    struct EventField<'a>(&'a mut Option<String>);

    impl Visit for EventField<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "event" {
                *self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "event" {
                *self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Recorder {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            if event.metadata().target() != TRACE_TARGET {
                return;
            }
            let mut name = None;
            event.record(&mut EventField(&mut name));
            if let Some(name) = name {
                self.0.lock().push(name);
            }
        }
    }

    #[test]
    fn emits_hit_miss_store_evict_purge() {
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        let _guard = tracing::subscriber::set_default(subscriber);

        let cache = ResultCache::new(1, Duration::from_secs(60));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = |k: &'static str, v: i64| {
            runtime
                .block_on(cache.get_or_compute(k.into(), || async move { Ok(json!(v)) }))
                .unwrap()
        };
        assert!(cache.get("a").is_none()); // miss
        store("a", 1); // miss, store
        assert!(cache.get("a").is_some()); // hit
        store("b", 2); // miss, store, evict
        cache.purge(); // purge

        let seen = recorder.0.lock().clone();
        assert_eq!(
            seen,
            ["miss", "miss", "store", "hit", "miss", "store", "evict", "purge"],
        );
        for name in ["hit", "miss", "store", "evict", "purge"] {
            assert!(
                seen.iter().any(|s| s == name),
                "no {name} event in {seen:?}"
            );
        }
    }
}
