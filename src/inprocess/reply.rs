//! A one-shot reply slot that a worker fills and a caller waits on, either from a
//! plain thread or from an async task.
//!
//! Waking a parked thread costs ~25–30 µs on the VMs this runs on (one futex wake-up),
//! more than ten times a short Python call. So a waiter first *spins* for a short,
//! bounded time and only then parks (a thread) or registers its waker (a task); the
//! writer pays for a wake-up only when somebody is actually asleep.

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

enum Waiter {
    None,
    Thread(Thread),
    Task(Waker),
}

/// The shared state of one reply.
pub struct ReplySlot<T> {
    ready: AtomicBool,
    value: Mutex<Option<T>>,
    waiter: Mutex<Waiter>,
}

impl<T> ReplySlot<T> {
    /// An empty slot, shared between the writer and the reader.
    pub fn new() -> Arc<Self> {
        Arc::new(ReplySlot {
            ready: AtomicBool::new(false),
            value: Mutex::new(None),
            waiter: Mutex::new(Waiter::None),
        })
    }

    /// Fills the slot and wakes the waiter, if one sleeps. Only the first fill counts.
    pub fn fill(&self, value: T) {
        {
            let mut slot = self.value.lock();
            if slot.is_some() || self.ready.load(Ordering::Acquire) {
                return;
            }
            *slot = Some(value);
        }
        self.ready.store(true, Ordering::Release);
        match std::mem::replace(&mut *self.waiter.lock(), Waiter::None) {
            Waiter::None => {}
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }

    /// Whether the slot has been filled.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<T> {
        if self.is_ready() {
            self.value.lock().take()
        } else {
            None
        }
    }

    /// Busy-waits for up to `budget` (see [`crate::inprocess::spin`]), returning the value if it
    /// arrives in time.
    pub fn spin_take(&self, budget: Duration, pure_spin: Duration) -> Option<T> {
        if crate::inprocess::spin::wait_until(budget, pure_spin, || self.is_ready()) {
            self.take()
        } else {
            None
        }
    }

    /// Blocks the current thread until the slot is filled or `deadline` passes.
    pub fn wait_until(&self, deadline: Instant) -> Option<T> {
        loop {
            if let Some(value) = self.take() {
                return Some(value);
            }
            *self.waiter.lock() = Waiter::Thread(std::thread::current());
            if let Some(value) = self.take() {
                return Some(value);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// A future that resolves when the slot is filled (no deadline: wrap it in
    /// `tokio::time::timeout`).
    pub fn wait(self: &Arc<Self>) -> ReplyFuture<T> {
        ReplyFuture { slot: self.clone() }
    }
}

/// Future returned by [`ReplySlot::wait`].
pub struct ReplyFuture<T> {
    slot: Arc<ReplySlot<T>>,
}

impl<T> Future for ReplyFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(value) = self.slot.take() {
            return Poll::Ready(value);
        }
        *self.slot.waiter.lock() = Waiter::Task(cx.waker().clone());
        match self.slot.take() {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_take() {
        let slot = ReplySlot::new();
        slot.fill(7);
        slot.fill(8);
        assert_eq!(
            slot.spin_take(Duration::from_micros(1), Duration::ZERO),
            Some(7)
        );
    }

    #[test]
    fn blocking_wait_wakes_on_fill_and_times_out() {
        let slot = ReplySlot::<u32>::new();
        let writer = slot.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.fill(1);
        });
        assert_eq!(
            slot.wait_until(Instant::now() + Duration::from_secs(5)),
            Some(1)
        );
        handle.join().unwrap();
        let empty = ReplySlot::<u32>::new();
        let start = Instant::now();
        assert_eq!(
            empty.wait_until(Instant::now() + Duration::from_millis(30)),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn async_wait_wakes_on_fill() {
        let slot = ReplySlot::<u32>::new();
        let writer = slot.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            writer.fill(3);
        });
        assert_eq!(slot.wait().await, 3);
    }
}
