//! Completions parked for a consumer thread and announced on an eventfd.

use std::io;
use std::time::Duration;

use caio_core::{Completion, CompletionQueue, WaitOutcome};

use crate::{CompletionSink, EventFd};

/// A [`CompletionQueue`] whose consumer sleeps on an [`EventFd`] (an event loop's reader).
///
/// The eventfd is signalled when a completion lands in an empty queue, and again by
/// [`EventQueue::take`] if it leaves completions behind, so a consumer that drains after
/// every wake-up never misses one.
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

    /// Blocks until `min` completions are queued or `timeout` passes (`None`: forever).
    pub fn wait(&self, min: usize, timeout: Option<Duration>) -> WaitOutcome {
        self.queue.wait(min, timeout)
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
