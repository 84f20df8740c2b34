//! Completions parked for a consumer thread and announced on an eventfd.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use caio_core::{Completion, CompletionQueue, WaitOutcome};

use crate::io::wait_readable;
use crate::{CompletionSink, EventFd};

/// A [`CompletionQueue`] whose consumer sleeps on an [`EventFd`] (an event loop's reader,
/// or a thread blocked in [`EventQueue::wait`]).
///
/// The eventfd is signalled when a completion lands in an empty queue, and again by
/// [`EventQueue::take`] if it leaves completions behind, so a consumer that drains after
/// every wake-up never misses one. While a thread waits for a minimum number, every
/// completion signals it (see [`CompletionQueue::push`]).
pub struct EventQueue {
    queue: CompletionQueue,
    eventfd: EventFd,
}

impl EventQueue {
    /// Creates the queue and its eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            queue: CompletionQueue::new(),
            eventfd: EventFd::new()?,
        })
    }

    /// The eventfd to watch.
    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// Takes up to `max` completions, re-arming the eventfd if more remain.
    pub fn take(&self, max: usize) -> Vec<Completion> {
        let (batch, more) = self.queue.take(max);
        if more {
            self.eventfd.signal();
        }
        batch
    }

    /// Blocks until `min` completions are queued or `timeout` passes (`None`: forever),
    /// sleeping in `poll()` on the eventfd, so a signal ends it early with an
    /// `Interrupted` error (the caller runs its handlers and waits again for the time
    /// left). `Some(ZERO)` only looks.
    ///
    /// It resets the eventfd each time before it counts (a completion pushed after the
    /// count signals it again, as a waiter is registered), and signals it again on the way
    /// out if completions are left queued: a wake-up meant for an event loop watching the
    /// same eventfd is never eaten.
    pub fn wait(&self, min: usize, timeout: Option<Duration>) -> io::Result<WaitOutcome> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let waiter = self.queue.register_waiter();
        let outcome = loop {
            let _ = self.eventfd.read();
            if self.queue.len() >= min {
                break Ok(WaitOutcome::Ready);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break Ok(WaitOutcome::TimedOut);
            }
            if let Err(e) = wait_readable(self.eventfd.as_raw_fd(), left) {
                break Err(e);
            }
        };
        drop(waiter);
        if !self.queue.is_empty() {
            self.eventfd.signal();
        }
        outcome
    }

    /// How many completions are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl CompletionSink for EventQueue {
    fn complete(&self, completion: Completion) {
        if self.queue.push(completion) {
            self.eventfd.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caio_core::RequestId;
    use std::sync::{mpsc, Arc};

    fn c(id: u64) -> Completion {
        Completion {
            id: RequestId(id),
            res: 0,
        }
    }

    fn readable(events: &EventQueue) -> bool {
        wait_readable(events.eventfd().as_raw_fd(), Some(Duration::ZERO)).unwrap()
    }

    /// Waits (bounded) until the blocked waiter has reset the eventfd, i.e. it has
    /// counted the queue and is about to sleep (or sleeps) again.
    fn until_consumed(events: &EventQueue) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while readable(events) {
            assert!(Instant::now() < deadline, "the waiter never looked");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_waiter_for_three_wakes_when_they_arrive_one_by_one() {
        let events = Arc::new(EventQueue::new().unwrap());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let events = events.clone();
            std::thread::spawn(move || tx.send(events.wait(3, None).unwrap()).unwrap())
        };
        for id in 1..=3 {
            // Only the first lands in an empty queue; the others must wake it too.
            events.complete(c(id));
            if id < 3 {
                until_consumed(&events);
                assert!(rx.try_recv().is_err(), "woke with {id} of 3");
            }
        }
        let outcome = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(outcome, Ok(WaitOutcome::Ready), "lost wake-up");
        waiter.join().unwrap();
        assert!(
            readable(&events),
            "left completions queued, so left it signalled"
        );
        assert_eq!(events.take(10).len(), 3);
    }

    #[test]
    fn wait_times_out_and_zero_only_looks() {
        let events = EventQueue::new().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            events.wait(1, Some(Duration::from_millis(20))).unwrap(),
            WaitOutcome::TimedOut
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            events.wait(0, Some(Duration::ZERO)).unwrap(),
            WaitOutcome::Ready
        );
        events.complete(c(1));
        assert_eq!(
            events.wait(2, Some(Duration::ZERO)).unwrap(),
            WaitOutcome::TimedOut
        );
        assert_eq!(
            events.wait(1, Some(Duration::ZERO)).unwrap(),
            WaitOutcome::Ready
        );
        assert!(
            readable(&events),
            "an event loop still learns about the completion"
        );
    }
}
