//! [`AioDriver`]: a Linux kernel AIO context behind the [`Driver`] contract.
//!
//! `io_submit` does the whole transfer of an ordinary (buffered) file request right there
//! on the calling thread, and on pipes, sockets and terminals waits there for data (or
//! room) for as long as it takes. So that no request can freeze its caller (an event loop),
//! requests over 64 KiB on files without `O_DIRECT` go to two helper threads, and requests
//! on streams each run on a thread of their own (see [`route`]); their completions are
//! announced on the same eventfd as the kernel's and taken by the same
//! [`take`](Driver::take).

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caio_core::{Completion, RequestId};

use super::{CancelOutcome, DispatchError, Dispatched, Driver, Entry, InFlight, Submission};
use crate::aio::{AioContext, Iocb};
use crate::io::wait_readable;
use crate::{spawn_without_signals, CompletionSink, EventFd, EventQueue, IoKind, IoRequest};
use crate::{SubmitError, ThreadPool};

/// Buffered requests above this size run on helper threads (see the module docs).
const OFFLOAD_ABOVE: usize = 64 * 1024;
const OFFLOAD_THREADS: usize = 2;
/// Stack of a stream request's thread: it only runs `IoRequest::perform`.
const STREAM_THREAD_STACK: usize = 64 * 1024;
/// Most kernel completions asked for per `io_getevents` call (its buffer is allocated per
/// call; more are taken by asking again).
const REAP_CHUNK: usize = 256;

/// Why [`AioDriver::new`] failed.
#[derive(Debug)]
pub enum AioSetupError {
    /// The eventfd (created first) could not be created.
    EventFd(io::Error),
    /// `io_setup` failed.
    Context(io::Error),
}

/// The driver's bookkeeping for one in-flight request.
struct Slot {
    /// The control block given to `io_submit`. The kernel looks it up again by address in
    /// `io_cancel`, so it is boxed and lives until the completion is taken.
    iocb: Box<Iocb>,
    /// Runs on a helper or stream thread (the kernel never saw it: not cancellable).
    offloaded: bool,
}

/// The helper threads, started on first use.
enum Helpers {
    NotStarted,
    Running(ThreadPool),
    /// [`Driver::shutdown`] ran: none start again.
    Closed,
}

/// A kernel AIO context, with helper threads for the requests `io_submit` would run
/// synchronously for too long (see the module docs).
pub struct AioDriver<E: Entry> {
    // Dropped in declaration order: the helper threads are joined first, and the AIO
    // context is destroyed last (io_destroy waits for the kernel's outstanding requests,
    // whose entries `inflight` leaks).
    helpers: Mutex<Helpers>,
    closed: AtomicBool,
    inflight: InFlight<E, Slot>,
    /// Kernel completions [`Driver::wait`] took out of the ring to count them.
    ready: Mutex<VecDeque<Completion>>,
    /// Completions from the helper and stream threads; its eventfd is also the kernel's
    /// RESFD.
    events: Arc<EventQueue>,
    max_requests: u32,
    aio: AioContext,
}

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `io_submit` itself: `O_DIRECT` requests (truly asynchronous), small buffered file
    /// requests (mostly page-cache copies), and whatever `io_submit` refuses up front (a
    /// bad descriptor, one not open for this direction, a negative offset, a sync or a
    /// read of a descriptor that supports neither), so that it is still refused at submit.
    Kernel,
    /// The helper threads: large buffered requests on regular files and block devices.
    Helpers,
    /// A thread of its own: requests on streams (pipes, FIFOs, sockets, character devices,
    /// eventfds...), which may wait for the other side for any length of time, so that a
    /// waiting one holds up neither the helper threads nor other stream requests.
    Stream,
}

/// Decides where `request` runs (see [`Route`]); `direct`: its descriptor is open with
/// `O_DIRECT`. On a non-seekable descriptor the kernel ignores the offset; so do the
/// threads: the request then runs at offset 0, which `IoRequest::perform` reads as "the
/// current position" on such a descriptor.
fn route(request: &mut IoRequest, direct: bool) -> Route {
    if request.offset < 0 || !matches!(request.kind, IoKind::Read | IoKind::Write) {
        return Route::Kernel;
    }
    let fd = request.fd;
    // SAFETY: fstat writes into a zeroed struct on our stack; fcntl(F_GETFL) and lseek
    // (called below, only when needed) take no pointer; a bad fd just makes them fail.
    let (file_type, access, seekable) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Route::Kernel;
        }
        let access = move || libc::fcntl(fd, libc::F_GETFL) & libc::O_ACCMODE;
        let seekable = move || libc::lseek(fd, 0, libc::SEEK_CUR) >= 0;
        (st.st_mode & libc::S_IFMT, access, seekable)
    };
    let files = matches!(file_type, libc::S_IFREG | libc::S_IFBLK);
    // The common case costs one fstat: small or O_DIRECT file requests, and directories
    // (no read or write: io_submit refuses them with EINVAL).
    if files && (direct || request.len <= OFFLOAD_ABOVE) || file_type == libc::S_IFDIR {
        return Route::Kernel;
    }
    let access = access();
    let allowed = match request.kind {
        IoKind::Read => access == libc::O_RDONLY || access == libc::O_RDWR,
        _ => access == libc::O_WRONLY || access == libc::O_RDWR,
    };
    if !allowed {
        Route::Kernel
    } else if files {
        Route::Helpers
    } else {
        if !seekable() {
            request.offset = 0;
        }
        Route::Stream
    }
}

/// A submission of one [`Driver::dispatch`] call, registered and routed.
enum Planned {
    Kernel(RequestId),
    /// Runs on a thread ([`Route::Helpers`] or [`Route::Stream`]) once `io_submit` has
    /// answered.
    Offload(RequestId, IoRequest, Route),
}

impl Planned {
    fn id(&self) -> RequestId {
        match self {
            Planned::Kernel(id) | Planned::Offload(id, ..) => *id,
        }
    }
}

impl<E: Entry> AioDriver<E> {
    /// Creates the eventfd, then the AIO context (`io_setup(max_requests)`).
    pub fn new(max_requests: u32) -> Result<Self, AioSetupError> {
        let events = Arc::new(EventQueue::new().map_err(AioSetupError::EventFd)?);
        let aio = AioContext::new(max_requests).map_err(AioSetupError::Context)?;
        Ok(Self {
            helpers: Mutex::new(Helpers::NotStarted),
            closed: AtomicBool::new(false),
            inflight: InFlight::default(),
            ready: Mutex::new(VecDeque::new()),
            events,
            max_requests,
            aio,
        })
    }

    /// The capacity given to `io_setup`.
    pub fn max_requests(&self) -> u32 {
        self.max_requests
    }

    fn lock_helpers(&self) -> MutexGuard<'_, Helpers> {
        self.helpers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ready(&self) -> MutexGuard<'_, VecDeque<Completion>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The helper threads, started on first use; the guard keeps [`Driver::shutdown`] from
    /// stopping them while it is held.
    fn helper_pool(&self) -> Result<MutexGuard<'_, Helpers>, DispatchError> {
        let mut helpers = self.lock_helpers();
        match *helpers {
            Helpers::Running(_) => {}
            Helpers::Closed => return Err(DispatchError::Closed),
            Helpers::NotStarted => {
                let events: Arc<dyn CompletionSink> = self.events.clone();
                let pool = ThreadPool::new(OFFLOAD_THREADS, usize::MAX, events)
                    .map_err(DispatchError::NoThreads)?;
                *helpers = Helpers::Running(pool);
            }
        }
        Ok(helpers)
    }

    /// Takes up to `room` kernel completions that are already there, without waiting,
    /// and appends them to `out`. A signal can interrupt even this zero-timeout call;
    /// nothing is lost then, so it is simply repeated. Returns how many it took.
    fn reap_ready(&self, room: usize, out: &mut VecDeque<Completion>) -> io::Result<usize> {
        let mut taken = 0;
        let mut batch = Vec::new();
        while taken < room {
            let chunk = (room - taken).min(REAP_CHUNK);
            batch.clear();
            let n = loop {
                match self.aio.get_events(0, chunk, Some(Duration::ZERO), &mut batch) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            out.extend(batch.drain(..));
            taken += n;
            if n < chunk {
                break;
            }
        }
        Ok(taken)
    }

    /// Moves every completion that is there (kernel and threads) into the ready queue;
    /// returns how many are ready.
    fn gather(&self) -> io::Result<usize> {
        let mut ready = self.lock_ready();
        self.reap_ready(usize::MAX, &mut ready)?;
        ready.extend(self.events.take(usize::MAX));
        Ok(ready.len())
    }

    /// Takes the entry of every completion in `batch` out of the registry (freeing its
    /// control block) and appends it to `out`; returns how many had one.
    fn hand_back(&self, batch: impl Iterator<Item = Completion>, out: &mut Vec<(E, i64)>) -> usize {
        let mut registry = self.inflight.lock();
        let before = out.len();
        out.extend(batch.filter_map(|c| {
            let (entry, slot) = registry.remove(c.id)?;
            drop(slot);
            Some((entry, c.res))
        }));
        out.len() - before
    }

    /// Removes the registered entries of `planned` again (they never started).
    fn roll_back(&self, planned: impl Iterator<Item = RequestId>) -> Vec<E> {
        let mut registry = self.inflight.lock();
        planned
            .filter_map(|id| registry.remove(id).map(|(entry, _)| entry))
            .collect()
    }

    /// Runs `request` on a thread of its own; a failure to start one is its completion.
    fn spawn_stream(&self, id: RequestId, request: IoRequest) {
        let events = self.events.clone();
        let builder = std::thread::Builder::new()
            .name("caio-aio-stream".into())
            .stack_size(STREAM_THREAD_STACK);
        let spawned = spawn_without_signals(builder, move || {
            // SAFETY: the entry that owns the buffer stays registered until this
            // completion is taken (the thread ends with the request).
            let res = unsafe { request.perform() };
            events.complete(Completion { id, res });
        });
        if let Err(err) = spawned {
            // Out of threads. Requests before this one have started, so it fails as a
            // completion, not a refusal.
            self.events.complete(Completion {
                id,
                res: -i64::from(err.raw_os_error().unwrap_or(libc::EAGAIN)),
            });
        }
    }
}

impl<E: Entry> Driver<E> for AioDriver<E> {
    fn dispatch(&self, batch: Vec<Submission<E>>) -> Dispatched<E> {
        let refuse_all = |batch: Vec<Submission<E>>, error| Dispatched {
            accepted: 0,
            refused: batch.into_iter().map(|s| s.entry).collect(),
            error: Some(error),
        };
        if self.closed.load(Ordering::Acquire) {
            return refuse_all(batch, DispatchError::Closed);
        }
        let resfd = self.events.eventfd().as_raw_fd();
        // Registered in batch order; offloaded ones start only after io_submit, so that
        // what the call accepts is always a prefix of the batch.
        let mut planned = Vec::with_capacity(batch.len());
        let mut iocbs: Vec<*mut Iocb> = Vec::new();
        {
            let mut registry = self.inflight.lock();
            for Submission { id, entry } in batch {
                let mut request = entry.request();
                let route = route(&mut request, entry.is_direct());
                let priority = entry.priority();
                let slot = Slot {
                    iocb: Box::default(),
                    offloaded: route != Route::Kernel,
                };
                registry.insert_at(id, (entry, slot));
                if route == Route::Kernel {
                    let (_, slot) = registry.get_mut(id).expect("just inserted");
                    *slot.iocb = Iocb::new(id, &request, priority, resfd);
                    iocbs.push(&mut *slot.iocb as *mut Iocb);
                    planned.push(Planned::Kernel(id));
                } else {
                    planned.push(Planned::Offload(id, request, route));
                }
            }
        }
        let refuse_planned = |planned: Vec<Planned>, error| Dispatched {
            accepted: 0,
            refused: self.roll_back(planned.iter().map(Planned::id)),
            error: Some(error),
        };
        // The helper threads must be running before io_submit: once the kernel has taken
        // a request, nothing submitted with it may be undone.
        let needs_helpers = planned
            .iter()
            .any(|p| matches!(p, Planned::Offload(_, _, Route::Helpers)));
        let helpers = if needs_helpers {
            match self.helper_pool() {
                Ok(helpers) => Some(helpers),
                Err(error) => return refuse_planned(planned, error),
            }
        } else {
            None
        };
        let taken = if iocbs.is_empty() {
            0
        } else {
            // SAFETY: each iocb is boxed in its registry entry, which stays until the
            // completion is taken (the refusals below only remove iocbs the kernel did not
            // take; nothing else removes an entry before its completion); each entry owns
            // its buffer, and leaks it rather than free it while the kernel may use it.
            match unsafe { self.aio.submit(&mut iocbs) } {
                Ok(taken) => taken,
                Err(e) => return refuse_planned(planned, DispatchError::Os(e)),
            }
        };
        // io_submit stops at the first iocb it cannot queue: that submission and every
        // one after it never started.
        let mut kernel_seen = 0;
        let mut accepted = 0;
        let mut stopped_at = None;
        for (at, p) in planned.iter().enumerate() {
            match *p {
                Planned::Kernel(_) => {
                    kernel_seen += 1;
                    if kernel_seen > taken {
                        stopped_at = Some(at);
                        break;
                    }
                }
                Planned::Offload(id, request, Route::Helpers) => {
                    let Some(Helpers::Running(pool)) = helpers.as_deref() else {
                        unreachable!("helper threads started before io_submit")
                    };
                    // SAFETY: `id` is registered with the entry that owns the buffer, and
                    // stays until this completion is taken.
                    if let Err(err) = unsafe { pool.submit(id, request) } {
                        // Not reachable: the queue is unbounded, and the guard held keeps
                        // it from shutting down. Requests before this one may be running
                        // already, so it fails as a completion, not a refusal.
                        debug_assert!(false, "helper threads refused: {err:?}");
                        let errno = match err {
                            SubmitError::QueueFull => libc::EAGAIN,
                            SubmitError::Shutdown => libc::ECANCELED,
                        };
                        self.events.complete(Completion {
                            id,
                            res: -i64::from(errno),
                        });
                    }
                }
                Planned::Offload(id, request, _) => self.spawn_stream(id, request),
            }
            accepted += 1;
        }
        drop(helpers);
        let refused = match stopped_at {
            Some(at) => self.roll_back(planned[at..].iter().map(Planned::id)),
            None => Vec::new(),
        };
        Dispatched {
            accepted,
            refused,
            // A short count from io_submit is not an error.
            error: None,
        }
    }

    fn wait(
        &self,
        min: usize,
        timeout: Option<Duration>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        // Completions come from the kernel and from the threads, and either may be the
        // one awaited. Both signal the eventfd, so sleep on that and look at both after
        // every wake-up; what is counted moves to the ready queue, so that the kernel's
        // (which io_getevents only hands out once) are not lost.
        if min == 0 {
            return Ok(());
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let eventfd = self.events.eventfd();
        let mut drained = false;
        let outcome = loop {
            match self.gather() {
                Ok(ready) if ready >= min => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break Ok(()),
                },
            };
            match wait_readable(eventfd.as_raw_fd(), left) {
                Ok(_) => {
                    drained |= eventfd.read().is_ok();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if !on_signal() {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if drained {
            // We may have eaten a wake-up meant for an event loop watching the eventfd.
            eventfd.signal();
        }
        outcome
    }

    fn take(&self, max: usize, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        let mut handed = 0;
        // A completion without an entry (none is expected) does not count against `max`.
        while handed < max {
            let room = max - handed;
            let mut batch = {
                let mut ready = self.lock_ready();
                let n = room.min(ready.len());
                let batch: VecDeque<Completion> = ready.drain(..n).collect();
                if !ready.is_empty() {
                    // Left behind: nobody else announces these.
                    self.events.eventfd().signal();
                }
                batch
            };
            if batch.len() < room {
                batch.extend(self.events.take(room - batch.len()));
            }
            let mut kernel_full = false;
            if batch.len() < room {
                let want = room - batch.len();
                kernel_full = self.reap_ready(want, &mut batch)? == want;
            }
            let got = batch.len();
            handed += self.hand_back(batch.into_iter(), out);
            if got < room {
                break;
            }
            if kernel_full && handed == max {
                // The ring may hold more; let the consumer look again.
                self.events.eventfd().signal();
            }
        }
        Ok(())
    }

    fn cancel(&self, id: RequestId) -> io::Result<CancelOutcome<E>> {
        // Held across io_cancel: the iocb must not be freed (and its address reused by
        // another request) while the kernel looks it up.
        let mut registry = self.inflight.lock();
        let iocb = match registry.get_mut(id) {
            Some((_, slot)) if !slot.offloaded => &mut *slot.iocb as *mut Iocb,
            // Only a kernel request can be cancelled; for anything else the kernel would
            // answer EINVAL (the caller says so, without asking it).
            _ => return Ok(CancelOutcome::NotFound),
        };
        // SAFETY: the iocb is boxed in the registry entry, which the lock held keeps alive.
        let completion = unsafe { self.aio.cancel(iocb) }?;
        let (entry, _) = registry.remove(id).expect("checked above");
        Ok(CancelOutcome::Completed(entry, completion.res))
    }

    fn shutdown(&self) {
        let helpers = {
            let mut helpers = self.lock_helpers();
            self.closed.store(true, Ordering::Release);
            std::mem::replace(&mut *helpers, Helpers::Closed)
        };
        if let Helpers::Running(pool) = helpers {
            pool.shutdown();
        }
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn eventfd(&self) -> Option<&EventFd> {
        Some(self.events.eventfd())
    }

    fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()> {
        self.inflight.visit(visit)
    }
}
