//! A fixed pool of worker threads that run blocking file syscalls.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use caio_core::{Completion, RequestId};
use crossbeam_utils::CachePadded;

use crate::IoRequest;

/// Where finished requests go. Called on a worker thread, once per request.
pub trait CompletionSink: Send + Sync + 'static {
    /// Receives the outcome of one request.
    fn complete(&self, completion: Completion);
}

/// Why the pool refused a request. The request was not queued and may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// `queue_limit` requests are already waiting for a worker.
    QueueFull,
    /// The pool is shutting down.
    Shutdown,
}

struct Task {
    id: RequestId,
    request: IoRequest,
}

struct Queue {
    tasks: VecDeque<Task>,
    shutdown: bool,
}

struct Shared {
    queue: CachePadded<Mutex<Queue>>,
    work: Condvar,
    queue_limit: usize,
    sink: Arc<dyn CompletionSink>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding this lock, and the queue is consistent at every
        // await point, so a poisoned lock is still sound to use.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Worker threads fed from a bounded FIFO. Only queued (not running) requests count
/// against `queue_limit`, as in caio.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
}

impl ThreadPool {
    /// Starts `size` workers. Every completion is handed to `sink` on the worker that ran it.
    pub fn new(size: usize, queue_limit: usize, sink: Arc<dyn CompletionSink>) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: CachePadded::new(Mutex::new(Queue {
                tasks: VecDeque::with_capacity(queue_limit.min(1024)),
                shutdown: false,
            })),
            work: Condvar::new(),
            queue_limit,
            sink,
        });
        let pool = Self {
            shared,
            workers: Mutex::new(Vec::with_capacity(size)),
            size,
        };
        for i in 0..size {
            let shared = pool.shared.clone();
            let handle = thread::Builder::new()
                .name(format!("caio-worker-{i}"))
                .spawn(move || worker(&shared))?; // Drop of `pool` stops the started ones.
            pool.lock_workers().push(handle);
        }
        Ok(pool)
    }

    fn lock_workers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of worker threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Queues a request for a worker; its completion reaches the sink under `id`.
    ///
    /// # Safety
    /// The request's buffer must stay valid (and, for reads, unread and unwritten by anyone
    /// else) until the sink has received the completion for `id`. On `Err` the request was
    /// not queued and the buffer is free again.
    pub unsafe fn submit(&self, id: RequestId, request: IoRequest) -> Result<(), SubmitError> {
        let mut queue = self.shared.lock();
        if queue.shutdown {
            return Err(SubmitError::Shutdown);
        }
        if queue.tasks.len() >= self.shared.queue_limit {
            return Err(SubmitError::QueueFull);
        }
        queue.tasks.push_back(Task { id, request });
        drop(queue);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Stops accepting requests, lets every queued one run, and joins the workers.
    /// Idempotent. Safe to call from a worker thread (that worker is left to exit on its
    /// own instead of joining itself). It blocks: callers holding locks a sink needs
    /// (the GIL) must release them first.
    pub fn shutdown(&self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        let me = thread::current().id();
        let handles = std::mem::take(&mut *self.lock_workers());
        for handle in handles {
            if handle.thread().id() != me {
                // A worker only ends by returning; a panic in a sink is already reported
                // on stderr by the panic hook, so there is nothing more to do with it.
                let _ = handle.join();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: &Shared) {
    loop {
        let task = {
            let mut queue = shared.lock();
            loop {
                if let Some(task) = queue.tasks.pop_front() {
                    break task;
                }
                if queue.shutdown {
                    return;
                }
                queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        // SAFETY: `submit`'s contract keeps the buffer valid and unshared until the sink
        // has this completion, which happens only after `perform` returns.
        let res = unsafe { task.request.perform() };
        shared.sink.complete(Completion { id: task.id, res });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoKind;
    use std::sync::mpsc;

    /// Forwards completions to a channel; the first one waits for `gate`, which keeps the
    /// only worker busy for as long as the test wants.
    struct GatedSink {
        out: Mutex<mpsc::Sender<Completion>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl CompletionSink for GatedSink {
        fn complete(&self, completion: Completion) {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                gate.recv().unwrap();
            }
            self.out.lock().unwrap().send(completion).unwrap();
        }
    }

    const SYNC: IoRequest = IoRequest {
        kind: IoKind::Fsync,
        fd: 0,
        offset: 0,
        buf: std::ptr::null_mut(),
        len: 0,
    };

    #[test]
    fn the_queue_limit_counts_waiting_requests_and_shutdown_runs_them_all() {
        let (out, done) = mpsc::channel();
        let (open_gate, gate) = mpsc::channel();
        let sink = GatedSink {
            out: Mutex::new(out),
            gate: Mutex::new(Some(gate)),
        };
        let pool = ThreadPool::new(1, 2, Arc::new(sink)).unwrap();
        let mut accepted = 0;
        // SAFETY: syncs touch no buffer.
        while unsafe { pool.submit(RequestId(accepted + 1), SYNC) }.is_ok() {
            accepted += 1;
            assert!(accepted <= 3, "more than limit + running accepted");
        }
        // One running (held in the sink) plus two queued, once the worker has dequeued;
        // at least the queue limit either way.
        assert!(accepted >= 2);
        assert_eq!(
            // SAFETY: as above.
            unsafe { pool.submit(RequestId(99), SYNC) },
            Err(SubmitError::QueueFull)
        );
        open_gate.send(()).unwrap();
        pool.shutdown();
        let ids: Vec<u64> = done.try_iter().map(|c| c.id.0).collect();
        assert_eq!(ids, (1..=accepted).collect::<Vec<_>>(), "FIFO, all run");
        assert_eq!(
            // SAFETY: as above.
            unsafe { pool.submit(RequestId(100), SYNC) },
            Err(SubmitError::Shutdown)
        );
    }

    #[test]
    fn shutdown_from_a_worker_thread_does_not_join_itself() {
        struct ShutdownSink(Mutex<Option<Arc<ThreadPool>>>, Mutex<mpsc::Sender<()>>);
        impl CompletionSink for ShutdownSink {
            fn complete(&self, _: Completion) {
                if let Some(pool) = self.0.lock().unwrap().take() {
                    pool.shutdown();
                    drop(pool);
                }
                self.1.lock().unwrap().send(()).unwrap();
            }
        }
        let (tx, rx) = mpsc::channel();
        let sink = Arc::new(ShutdownSink(Mutex::new(None), Mutex::new(tx)));
        let pool = Arc::new(ThreadPool::new(2, 4, sink.clone()).unwrap());
        *sink.0.lock().unwrap() = Some(pool.clone());
        drop(pool);
        // SAFETY: syncs touch no buffer.
        unsafe {
            sink.0
                .lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .submit(RequestId(1), SYNC)
        }
        .unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    }
}
