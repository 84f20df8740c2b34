//! The contract between a Context and one kernel mechanism: a [`Driver`] takes requests,
//! owns them while the kernel (or a worker) may touch their buffers, and hands each one
//! back exactly once, completed or refused.
//!
//! A driver is generic over the [`Entry`] it carries: the bridge's entry is a claimed
//! Python Operation, `cargo test` uses [`testing::FakeEntry`], which owns a plain buffer.
//!
//! - [`thread::ThreadDriver`]: a pool of worker threads running blocking syscalls.
//! - [`uring::UringDriver`]: an io_uring instance (staging, parked waiters, cancels).
//! - [`aio::AioDriver`]: a kernel AIO context, with helper threads for what `io_submit`
//!   would run synchronously for too long.

use std::io;
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use caio_core::{Registry, RequestId};

use crate::{EventFd, IoRequest};

pub mod aio;
pub mod inline_write;
pub mod offload;
pub mod thread;
pub mod uring;

#[cfg(test)]
pub(crate) mod testing;

/// What a driver carries for each request: the owner of the request's buffer.
///
/// # Safety
/// The memory [`request`](Entry::request) describes must stay valid (writable, for a read),
/// at the same address, and untouched by anyone but the driver for as long as the entry
/// lives, including while it is moved. For a vectored kind ([`crate::IoKind::is_vectored`]) `buf`
/// is an array of `len` iovecs: the array and every segment it describes must stay valid
/// so. Drivers rely on this to hand the addresses to the kernel. In return a driver never drops an entry it accepted: it hands it back once
/// (completed, through [`Driver::take`], a [`Delivery::Call`] or [`CancelOutcome::Completed`])
/// or, if the driver itself is dropped with requests in flight, leaks it; and it calls the
/// entry's methods only inside [`Driver::dispatch`], on the dispatching thread.
pub unsafe trait Entry: Send + 'static {
    /// The request to run; the same every time it is asked.
    fn request(&self) -> IoRequest;

    /// Whether the descriptor is open with `O_DIRECT` (known when the entry was built).
    fn is_direct(&self) -> bool {
        false
    }

    /// `aio_reqprio` for kernel AIO.
    fn priority(&self) -> i16 {
        0
    }
}

/// One request handed to [`Driver::dispatch`], under an id the caller chose (and recorded
/// where a later [`Driver::cancel`] finds it).
pub struct Submission<E> {
    /// Never reused; what the completion is reported under.
    pub id: RequestId,
    /// The request and the owner of its buffer.
    pub entry: E,
}

/// What [`Driver::dispatch`] did with a batch.
pub struct Dispatched<E> {
    /// How many submissions, from the front of the batch, the driver took (each completes
    /// exactly once later).
    pub accepted: usize,
    /// The rest, in order and untouched: they never started.
    pub refused: Vec<E>,
    /// Why the driver stopped before the end, if it stopped with an error (kernel AIO's
    /// `io_submit` may also take a prefix with no error at all).
    pub error: Option<DispatchError>,
}

impl<E> Dispatched<E> {
    /// Every submission taken.
    pub fn all(accepted: usize) -> Self {
        Self {
            accepted,
            refused: Vec::new(),
            error: None,
        }
    }
}

/// Why a driver refused a submission.
#[derive(Debug)]
pub enum DispatchError {
    /// No room: the submission queue or the request queue is full.
    Full,
    /// The driver was shut down.
    Closed,
    /// Threads the request needs could not be started.
    NoThreads(io::Error),
    /// The kernel refused the request up front.
    Os(io::Error),
}

/// What [`Driver::cancel`] did.
pub enum CancelOutcome<E> {
    /// Nothing with that id is in flight here (or the driver cannot cancel it; see each
    /// driver).
    NotFound,
    /// Asked; the request's own completion follows (or came already) as for any request.
    Requested,
    /// The request was taken back: its completion is this result, handed back here and
    /// never reported otherwise.
    Completed(E, i64),
}

/// How completions of a driver without an eventfd consumer reach their owner.
pub enum Delivery<E> {
    /// Queued for [`Driver::take`], announced on the driver's eventfd.
    Queue,
    /// Handed to this function on the thread that finished the request (a worker), once
    /// per request.
    Call(Box<dyn Fn(E, i64) + Send + Sync>),
}

/// One kernel mechanism behind a Context. Every method but [`wait`](Driver::wait) and
/// [`shutdown`](Driver::shutdown) returns without blocking, and none calls back into its
/// caller except through [`Delivery::Call`] and the `on_signal` of a wait.
pub trait Driver<E: Entry>: Send + Sync + 'static {
    /// Takes the batch in order, stopping at the first submission it cannot take.
    fn dispatch(&self, batch: Vec<Submission<E>>) -> Dispatched<E>;

    /// Blocks until at least `min` completions can be [taken](Driver::take), or `timeout`
    /// passes (`None`: no limit; `Some(ZERO)`: look once, without blocking). Call it with no
    /// lock held that a [`Delivery::Call`] needs (the GIL). When a signal interrupts a
    /// blocking syscall, `on_signal` runs: `false` ends the wait with an `Interrupted`
    /// error, `true` resumes it for the time that is left.
    fn wait(
        &self,
        min: usize,
        timeout: Option<Duration>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()>;

    /// Appends up to `max` completed requests to `out`, without blocking.
    fn take(&self, max: usize, out: &mut Vec<(E, i64)>) -> io::Result<()>;

    /// Asks for request `id` to be cancelled. May nap briefly (never long): call it with
    /// no lock held that a [`Delivery::Call`] needs.
    fn cancel(&self, id: RequestId) -> io::Result<CancelOutcome<E>>;

    /// Stops taking requests and lets the started ones finish (joining threads). Blocks:
    /// call it with no lock held that a [`Delivery::Call`] needs. Idempotent.
    fn shutdown(&self);

    /// Whether [`dispatch`](Driver::dispatch) still takes requests.
    fn is_open(&self) -> bool {
        true
    }

    /// The eventfd signalled when completions wait for [`take`](Driver::take); `None` for
    /// a driver that delivers through [`Delivery::Call`].
    fn eventfd(&self) -> Option<&EventFd>;

    /// How many requests are in flight.
    fn in_flight(&self) -> usize;

    /// Shows every in-flight entry to `visit` (stopping when it breaks), if the registry
    /// is free right now; else shows none (see [`InFlight::visit`]).
    fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()>;
}

/// The entries a driver holds while their requests are in flight, by id, each with the
/// driver's own bookkeeping `T` (kernel AIO's control block, say).
pub struct InFlight<E, T = ()>(Mutex<Registry<(E, T)>>);

impl<E, T> Default for InFlight<E, T> {
    fn default() -> Self {
        Self(Mutex::new(Registry::new()))
    }
}

impl<E, T> InFlight<E, T> {
    /// The registry. Its operations cannot panic half-way, so a poisoned lock is still
    /// sound to use.
    pub fn lock(&self) -> MutexGuard<'_, Registry<(E, T)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `entry` under `id`.
    pub fn insert(&self, id: RequestId, entry: E, extra: T) {
        self.lock().insert_at(id, (entry, extra));
    }

    /// Takes the entry of `id` out, if it is in flight.
    pub fn remove(&self, id: RequestId) -> Option<E> {
        self.lock().remove(id).map(|(entry, _)| entry)
    }

    /// How many entries are in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shows every entry to `visit` (a garbage collector's traversal). If the registry is
    /// locked right now (by this very thread, in a collection started inside a driver
    /// call), shows none, every time: the collector then sees references it cannot
    /// explain and keeps the entries, which is always safe.
    pub fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()> {
        let registry = match self.0.try_lock() {
            Ok(registry) => registry,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return ControlFlow::Continue(()),
        };
        for (entry, _) in registry.values() {
            visit(entry)?;
        }
        ControlFlow::Continue(())
    }
}

impl<E, T> Drop for InFlight<E, T> {
    fn drop(&mut self) {
        // Entries left here can never complete (the process is going away, or their
        // worker died). Their buffers may still be in use, and dropping an entry may need
        // a lock this thread cannot take: leak them.
        for entry in self.lock().drain() {
            std::mem::forget(entry);
        }
    }
}
