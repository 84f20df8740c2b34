use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::RequestId;

/// The outcome of one request, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The request this completes.
    pub id: RequestId,
    /// Bytes transferred (0 for fsync), or a negated errno.
    pub res: i64,
}

/// How a [`CompletionQueue::wait`] ended.
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
/// The producer learns whether the queue was empty so it can signal a wake-up (an eventfd)
/// once per batch instead of once per completion.
#[derive(Default)]
pub struct CompletionQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
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

    /// Queues a completion. Returns `true` when the queue was empty, i.e. the consumer
    /// may be asleep and needs a wake-up.
    pub fn push(&self, completion: Completion) -> bool {
        let mut inner = self.lock();
        let was_empty = inner.items.is_empty();
        inner.items.push_back(completion);
        if inner.waiters > 0 {
            self.ready.notify_all();
        }
        was_empty
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

    /// Blocks until at least `min` completions are queued or `timeout` passes
    /// (`None` waits forever).
    pub fn wait(&self, min: usize, timeout: Option<Duration>) -> WaitOutcome {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        inner.waiters += 1;
        let outcome = loop {
            if inner.items.len() >= min {
                break WaitOutcome::Ready;
            }
            match deadline {
                None => inner = self.ready.wait(inner).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break WaitOutcome::TimedOut;
                    }
                    inner = self
                        .ready
                        .wait_timeout(inner, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        };
        inner.waiters -= 1;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
    fn wait_times_out_when_nothing_arrives() {
        let q = CompletionQueue::new();
        assert_eq!(
            q.wait(1, Some(Duration::from_millis(20))),
            WaitOutcome::TimedOut
        );
        assert_eq!(q.wait(0, Some(Duration::ZERO)), WaitOutcome::Ready);
    }

    #[test]
    fn a_waiter_wakes_when_a_completion_is_pushed() {
        let q = Arc::new(CompletionQueue::new());
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.wait(2, None))
        };
        q.push(c(1));
        q.push(c(2));
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Ready);
    }
}
