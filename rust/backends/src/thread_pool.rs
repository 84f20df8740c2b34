//! A fixed pool of worker threads that run blocking file syscalls.

use std::collections::VecDeque;
use std::io;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
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

/// A request taken out of the queue by [`ThreadPool::cancel`] whose completion has not been
/// reported yet.
#[must_use = "the cancelled request's completion must be delivered"]
pub struct Cancelled {
    id: RequestId,
    sink: Arc<dyn CompletionSink>,
}

impl Cancelled {
    /// Hands the completion (`-ECANCELED`) to the pool's sink on this thread, like any
    /// other completion.
    pub fn complete(self) {
        self.sink.complete(Completion {
            id: self.id,
            res: -i64::from(libc::ECANCELED),
        });
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
    /// Starts `size` workers and returns once each is running (named and with its signal
    /// mask), so that whoever looks at the process's threads next sees all of them. Every
    /// completion is handed to `sink` on the worker that ran it.
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
        // Workers inherit this mask from their first instruction on.
        let _blocked = SignalsBlocked::new();
        let (started_tx, started) = mpsc::channel::<()>();
        let mut spawned = Ok(());
        for i in 0..size {
            let shared = pool.shared.clone();
            let started_tx = started_tx.clone();
            let spawn = thread::Builder::new()
                .name(format!("caio-worker-{i}"))
                .spawn(move || {
                    // The thread's name is set before this closure runs.
                    let _ = started_tx.send(());
                    worker(&shared)
                });
            match spawn {
                Ok(handle) => pool.lock_workers().push(handle),
                Err(e) => {
                    spawned = Err(e); // Drop of `pool` stops the started ones.
                    break;
                }
            }
        }
        drop(started_tx);
        // (`recv` fails only if every sender is gone; each worker sends first thing.)
        let running = pool.lock_workers().len();
        for _ in 0..running {
            if started.recv().is_err() {
                break;
            }
        }
        spawned.map(|()| pool)
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

    /// Takes the request `id` out of the queue if no worker has started it. Its completion
    /// (`-ECANCELED`) is then the caller's to report with [`Cancelled::complete`], once
    /// it holds no lock the sink may need. `None` for a request already running or done
    /// (those complete normally) and for an unknown id. No worker ever saw a cancelled
    /// request, so its buffer is free again as soon as its completion is delivered.
    pub fn cancel(&self, id: RequestId) -> Option<Cancelled> {
        let mut queue = self.shared.lock();
        let at = queue.tasks.iter().position(|task| task.id == id)?;
        queue.tasks.remove(at);
        Some(Cancelled {
            id,
            sink: self.shared.sink.clone(),
        })
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

/// Every signal blocked on the calling thread until dropped (the old mask comes back). A
/// thread spawned meanwhile inherits the full mask, so the kernel never delivers a
/// process-directed signal (Ctrl-C, a timer) to a worker: Python runs its handlers on the
/// main thread only, and a worker could not even interrupt itself.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        Self(set_signal_mask(None))
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // The guard lives and dies inside one function, on one thread.
        set_signal_mask(Some(&self.0));
    }
}

/// Spawns a thread of ours (not a pool worker: a stream request's thread, the drainer)
/// with every signal blocked from its first instruction, for the same reason as the
/// workers: signals must reach a thread Python can act on, and none of ours may see its
/// syscalls fail with `EINTR` because a handler ran there.
pub fn spawn_without_signals<F, T>(builder: thread::Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _blocked = SignalsBlocked::new();
    builder.spawn(f)
}

/// Sets the calling thread's signal mask to `mask` (`None`: every signal); returns the
/// previous one.
fn set_signal_mask(mask: Option<&libc::sigset_t>) -> libc::sigset_t {
    // SAFETY: every pointer is to a live local or to `mask`; sigfillset and pthread_sigmask
    // only write those locals and this thread's mask, and cannot fail with valid arguments.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, mask.unwrap_or(&all), &mut old);
        old
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
        rw_flags: 0,
    };

    #[test]
    fn new_returns_once_every_worker_runs_under_its_name() {
        use std::os::unix::thread::JoinHandleExt;
        let (out, _done) = mpsc::channel();
        let sink = GatedSink {
            out: Mutex::new(out),
            gate: Mutex::new(None),
        };
        let pool = ThreadPool::new(4, 4, Arc::new(sink)).unwrap();
        for (i, handle) in pool.lock_workers().iter().enumerate() {
            let mut name = [0 as libc::c_char; 16];
            // SAFETY: the thread lives until shutdown joins it; 16 bytes is the most a
            // thread name takes, terminator included.
            let rc = unsafe {
                libc::pthread_getname_np(handle.as_pthread_t(), name.as_mut_ptr(), name.len())
            };
            assert_eq!(rc, 0);
            // SAFETY: pthread_getname_np wrote a terminated string into `name`.
            let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
            assert_eq!(name.to_str().unwrap(), format!("caio-worker-{i}"));
        }
        pool.shutdown();
    }

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

    /// Holds the first completion (so its worker stays busy) until `gate` opens, after
    /// telling `entered`; forwards every completion to `out`.
    struct HoldFirst {
        entered: Mutex<mpsc::Sender<()>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
        out: Mutex<mpsc::Sender<Completion>>,
    }

    impl CompletionSink for HoldFirst {
        fn complete(&self, completion: Completion) {
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                self.entered.lock().unwrap().send(()).unwrap();
                gate.recv().unwrap();
            }
            self.out.lock().unwrap().send(completion).unwrap();
        }
    }

    #[test]
    fn cancel_takes_a_queued_request_out_and_frees_its_queue_place() {
        let (entered_tx, entered) = mpsc::channel();
        let (open_gate, gate) = mpsc::channel();
        let (out, done) = mpsc::channel();
        let sink = HoldFirst {
            entered: Mutex::new(entered_tx),
            gate: Mutex::new(Some(gate)),
            out: Mutex::new(out),
        };
        let pool = ThreadPool::new(1, 2, Arc::new(sink)).unwrap();
        let submit = |id| {
            // SAFETY: syncs touch no buffer.
            unsafe { pool.submit(RequestId(id), SYNC) }
        };
        submit(1).unwrap();
        entered.recv().unwrap(); // the only worker now holds request 1
        submit(2).unwrap();
        submit(3).unwrap();
        assert_eq!(submit(9), Err(SubmitError::QueueFull));

        let cancelled = pool.cancel(RequestId(2)).expect("queued, so cancellable");
        assert!(done.try_recv().is_err(), "reported only by complete()");
        cancelled.complete();
        let first = done.try_recv().expect("delivered on the cancelling thread");
        assert_eq!(
            first,
            Completion {
                id: RequestId(2),
                res: -i64::from(libc::ECANCELED)
            }
        );
        assert!(pool.cancel(RequestId(2)).is_none(), "at most once");
        assert!(
            pool.cancel(RequestId(1)).is_none(),
            "a running request is not touched"
        );
        assert!(pool.cancel(RequestId(77)).is_none());

        submit(4).expect("its queue place is free again");
        open_gate.send(()).unwrap();
        pool.shutdown();
        let rest: Vec<Completion> = done.try_iter().collect();
        assert_eq!(rest.iter().map(|c| c.id.0).collect::<Vec<_>>(), [1, 3, 4]);
        assert!(rest.iter().all(|c| c.res != -i64::from(libc::ECANCELED)));
    }

    #[test]
    fn workers_block_every_signal() {
        struct MaskSink(Mutex<mpsc::Sender<[bool; 3]>>);
        impl CompletionSink for MaskSink {
            fn complete(&self, _: Completion) {
                // SAFETY: queries this thread's mask into a zeroed local set.
                let blocked = unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
                    [libc::SIGINT, libc::SIGUSR1, libc::SIGTERM]
                        .map(|sig| libc::sigismember(&set, sig) == 1)
                };
                self.0.lock().unwrap().send(blocked).unwrap();
            }
        }
        let (tx, rx) = mpsc::channel();
        let pool = ThreadPool::new(1, 1, Arc::new(MaskSink(Mutex::new(tx)))).unwrap();
        // SAFETY: syncs touch no buffer.
        unsafe { pool.submit(RequestId(1), SYNC) }.unwrap();
        let blocked = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(blocked, [true; 3]);
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
