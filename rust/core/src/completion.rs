use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::RequestId;

/// The outcome of one request, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request this completes.
    pub id: RequestId,
    /// Bytes transferred (0 for fsync), or a negated errno.
    pub res: i64,
}

/// How a wait for completions ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// At least the requested number of completions is queued.
    Ready,
    /// The deadline passed first.
    TimedOut,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Completion>,
    waiters: usize,
}

/// Completed requests waiting for the thread that delivers them (many producers, any consumer).
///
/// The consumer sleeps on a wake-up (an eventfd) that the producer signals when
/// [`CompletionQueue::push`] says so: for the first completion into an empty queue (one
/// wake-up per batch for an event loop that drains everything it is woken for), and for
/// every completion while a consumer is registered with [`CompletionQueue::register_waiter`]
/// (one that needs several and sleeps again after counting too few).
#[derive(Default)]
pub struct CompletionQueue {
    inner: Mutex<Inner>,
}

/// A registered waiter (see [`CompletionQueue::register_waiter`]); dropping it unregisters.
pub struct Waiter<'a> {
    queue: &'a CompletionQueue,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.queue.lock().waiters -= 1;
    }
}

impl CompletionQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque half-updated, so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a completion. Returns `true` when the consumer may be asleep waiting for it
    /// and needs a wake-up: the queue was empty, or a waiter is registered.
    pub fn push(&self, completion: Completion) -> bool {
        let mut inner = self.lock();
        let wake = inner.items.is_empty() || inner.waiters > 0;
        inner.items.push_back(completion);
        wake
    }

    /// Registers a consumer about to sleep until enough completions are queued: until
    /// the returned guard is dropped, every push asks for a wake-up. Register before
    /// looking at [`CompletionQueue::len`], so no push between the look and the sleep
    /// goes unannounced.
    pub fn register_waiter(&self) -> Waiter<'_> {
        self.lock().waiters += 1;
        Waiter { queue: self }
    }

    /// Takes up to `max` completions, oldest first. The flag says whether more remain.
    pub fn take(&self, max: usize) -> (Vec<Completion>, bool) {
        let mut inner = self.lock();
        let n = inner.items.len().min(max);
        let batch: Vec<Completion> = inner.items.drain(..n).collect();
        (batch, !inner.items.is_empty())
    }

    /// How many completions are queued.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64) -> Completion {
        Completion {
            id: RequestId(id),
            res: 0,
        }
    }

    #[test]
    fn only_the_first_push_into_an_empty_queue_asks_for_a_wakeup() {
        let q = CompletionQueue::new();
        assert!(q.push(c(1)));
        assert!(!q.push(c(2)));
        let (batch, more) = q.take(10);
        assert_eq!(batch.len(), 2);
        assert!(!more);
        assert!(
            q.push(c(3)),
            "empty again, so the next push must wake the consumer"
        );
    }

    #[test]
    fn take_respects_max_and_reports_leftovers() {
        let q = CompletionQueue::new();
        for i in 0..5 {
            q.push(c(i));
        }
        let (batch, more) = q.take(2);
        assert_eq!(batch, vec![c(0), c(1)]);
        assert!(more);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn every_push_asks_for_a_wakeup_while_a_waiter_is_registered() {
        let q = CompletionQueue::new();
        assert!(q.push(c(1)));
        assert!(!q.push(c(2)), "nobody waits: one wake-up per batch");
        let waiter = q.register_waiter();
        assert!(
            q.push(c(3)),
            "a waiter counting towards a minimum must see each one"
        );
        assert!(q.push(c(4)));
        let second = q.register_waiter();
        drop(waiter);
        assert!(q.push(c(5)), "still one waiter registered");
        drop(second);
        assert!(!q.push(c(6)), "back to first-push-only");
        assert_eq!(q.len(), 6);
    }
}
