//! The pool's job queue: bounded, lock-free for producers, and careful about wake-ups.
//!
//! Two rules keep calls fast on a machine where one futex wake-up costs ~25 µs:
//!
//! * A worker takes a job only once it holds the GIL ([`JobQueue::pop`] is called
//!   attached). A worker that dequeued first and then waited for the GIL would hold the
//!   job hostage for up to a switch interval while another worker sat idle.
//! * [`JobQueue::push`] wakes a parked worker only when the queue holds more jobs than
//!   workers spinning on it: an idle worker first spins for a short while (GIL
//!   released) and picks up the next job without any system call on either side, but
//!   it takes one job only, so a second job pushed during its spin wakes another
//!   worker rather than waiting behind the first.

use crossbeam_queue::ArrayQueue;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A bounded multi-producer, multi-consumer queue of `T` with spin-then-park waiting.
pub(crate) struct JobQueue<T> {
    items: ArrayQueue<T>,
    spinning: AtomicUsize,
    sleepers: Mutex<usize>,
    wake: Condvar,
    closed: AtomicBool,
}

impl<T> JobQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        JobQueue {
            items: ArrayQueue::new(capacity.max(1)),
            spinning: AtomicUsize::new(0),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `item`, or gives it back when the queue is full.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        self.items.push(item)?;
        fence(Ordering::SeqCst);
        if self.items.len() > self.spinning.load(Ordering::SeqCst) {
            let sleepers = self.sleepers.lock();
            if *sleepers > 0 {
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Takes the next item, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        self.items.pop()
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Waits until an item is probably available (another worker may still take it
    /// first) or the queue is closed: spins for up to `spin` unless `may_spin` is false,
    /// then parks. Returns `false` once the queue is closed.
    pub(crate) fn wait_for_item(
        &self,
        spin: Duration,
        pure_spin: Duration,
        may_spin: bool,
    ) -> bool {
        if may_spin && self.spin_for_item(spin, pure_spin) {
            return !self.is_closed();
        }
        let mut sleepers = self.sleepers.lock();
        *sleepers += 1;
        while self.items.is_empty() && !self.is_closed() {
            self.wake.wait(&mut sleepers);
        }
        *sleepers -= 1;
        !self.is_closed()
    }

    fn spin_for_item(&self, spin: Duration, pure_spin: Duration) -> bool {
        self.spinning.fetch_add(1, Ordering::SeqCst);
        let found = crate::inprocess::spin::wait_until(spin, pure_spin, || {
            !self.items.is_empty() || self.is_closed()
        });
        self.spinning.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        found
    }

    /// Number of workers spinning on the queue right now.
    pub(crate) fn spinners(&self) -> usize {
        self.spinning.load(Ordering::Relaxed)
    }

    /// Closes the queue: every waiter wakes and sees it closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _sleepers = self.sleepers.lock();
        self.wake.notify_all();
    }

    /// Whether [`JobQueue::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounded_fifo() {
        let queue = JobQueue::new(2);
        assert!(queue.push(1).is_ok());
        assert!(queue.push(2).is_ok());
        assert_eq!(queue.push(3), Err(3));
        assert_eq!(queue.pop(), Some(1));
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_parked_waiter_wakes_on_push_and_on_close() {
        let queue = Arc::new(JobQueue::new(4));
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.wait_for_item(Duration::ZERO, Duration::ZERO, false))
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.push(7).unwrap();
        assert!(waiter.join().unwrap());
        assert_eq!(queue.pop(), Some(7));
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                queue.wait_for_item(Duration::from_micros(50), Duration::ZERO, true)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.close();
        assert!(!waiter.join().unwrap());
    }

    #[test]
    fn a_second_item_pushed_while_a_worker_spins_wakes_a_parked_one() {
        let queue = Arc::new(JobQueue::new(4));
        let (woke_tx, woke_rx) = std::sync::mpsc::channel();
        let parked = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let open = queue.wait_for_item(Duration::ZERO, Duration::ZERO, false);
                let _ = woke_tx.send(open);
            })
        };
        while *queue.sleepers.lock() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Another worker is spinning: it will take the first item by itself.
        queue.spinning.fetch_add(1, Ordering::SeqCst);
        queue.push(1).unwrap();
        queue.push(2).unwrap();
        let woke = woke_rx.recv_timeout(Duration::from_secs(2));
        queue.spinning.fetch_sub(1, Ordering::SeqCst);
        queue.close();
        parked.join().unwrap();
        assert_eq!(
            woke,
            Ok(true),
            "the parked worker slept through the second item"
        );
    }
}
