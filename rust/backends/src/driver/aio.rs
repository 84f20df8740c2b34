//! [`AioDriver`]: a Linux kernel AIO context behind the [`Driver`] contract.
//!
//! `io_submit` does the whole transfer of an ordinary (buffered) file request right there
//! on the calling thread, and on pipes, sockets and terminals waits there for data (or
//! room) for as long as it takes. So that no request can freeze its caller (an event loop),
//! requests over 64 KiB on files without `O_DIRECT` go to helper threads, and requests on
//! streams each run on a thread of their own (see [`super::offload`]); their completions are
//! announced on the same eventfd as the kernel's and taken by the same
//! [`take`](Driver::take). Small buffered file writes skip the AIO machinery:
//! [`inline_write`](AioDriver::inline_write) does the copy `io_submit` would have done,
//! on the same thread (see [`super::inline_write`]).

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caio_core::{Completion, RequestId};

use super::inline_write::InlineWrites;
use super::offload::{route, HelperThreads, Route};
use super::{CancelOutcome, DispatchError, Dispatched, Driver, Entry, InFlight, Submission};
use crate::aio::{AioContext, Iocb};
use crate::io::wait_readable;
use crate::{spawn_without_signals, CompletionSink, EventFd, EventQueue, IoRequest};

/// Stack of a stream request's thread: it only runs `IoRequest::perform`.
const STREAM_THREAD_STACK: usize = 64 * 1024;
/// Most kernel completions asked for per `io_getevents` call (more are taken by asking
/// again).
const REAP_CHUNK: usize = crate::aio::EVENTS_PER_CALL;

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

/// A kernel AIO context, with helper threads for the requests `io_submit` would run
/// synchronously for too long (see the module docs).
pub struct AioDriver<E: Entry> {
    // Dropped in declaration order: the helper threads are joined first, and the AIO
    // context is destroyed last (io_destroy waits for the kernel's outstanding requests,
    // whose entries `inflight` leaks).
    helpers: HelperThreads,
    closed: AtomicBool,
    inflight: InFlight<E, Slot>,
    /// Kernel completions [`Driver::wait`] took out of the ring to count them.
    ready: Mutex<VecDeque<Completion>>,
    /// Completions from the helper and stream threads; its eventfd is also the kernel's
    /// RESFD.
    events: Arc<EventQueue>,
    max_requests: u32,
    /// Small buffered file writes run on the caller's thread instead.
    inline_writes: InlineWrites,
    aio: AioContext,
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
            helpers: HelperThreads::new(events.clone()),
            closed: AtomicBool::new(false),
            inflight: InFlight::default(),
            ready: Mutex::new(VecDeque::new()),
            events,
            max_requests,
            inline_writes: InlineWrites::default(),
            aio,
        })
    }

    /// Runs `request` on the calling thread if it is a small buffered file write (see
    /// [`InlineWrites::run`]): the copy `io_submit` would do on this thread, without the
    /// iocb, the event and the eventfd wake-up. `None`: submit it instead.
    ///
    /// # Safety
    /// As for [`IoRequest::perform`].
    pub unsafe fn inline_write(&self, request: &IoRequest) -> Option<i64> {
        // SAFETY: the caller's promise.
        unsafe { self.inline_writes.run(request) }
    }

    /// The capacity given to `io_setup`.
    pub fn max_requests(&self) -> u32 {
        self.max_requests
    }

    fn lock_ready(&self) -> MutexGuard<'_, VecDeque<Completion>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `room` kernel completions that are already there, without waiting,
    /// and appends them to `out`. A signal can interrupt even this zero-timeout call;
    /// nothing is lost then, so it is simply repeated. Returns how many it took.
    fn reap_ready(&self, room: usize, out: &mut VecDeque<Completion>) -> io::Result<usize> {
        let mut taken = 0;
        while taken < room {
            let chunk = (room - taken).min(REAP_CHUNK);
            let n = loop {
                match self.aio.get_events(0, chunk, Some(Duration::ZERO), out) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
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
        // Routed before the registry is locked: that takes a syscall or three each.
        let routed: Vec<_> = batch
            .into_iter()
            .map(|Submission { id, entry }| {
                let mut request = entry.request();
                let route = route(&mut request, entry.is_direct());
                (id, entry, request, route)
            })
            .collect();
        {
            let mut registry = self.inflight.lock();
            for (id, entry, request, route) in routed {
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
            match self.helpers.start() {
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
                    let helpers = helpers.as_ref().expect("started before io_submit");
                    // SAFETY: `id` is registered with the entry that owns the buffer, and
                    // stays until this completion is taken.
                    unsafe { helpers.run(id, request) };
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
            // Kernel completions left in the ring after this are not announced again (the
            // eventfd counted them when they arrived): as with caio, a caller drains until
            // a call returns less than `max` (the adapters and the drainer do), instead
            // of paying a wake-up per full batch.
            if batch.len() < room {
                self.reap_ready(room - batch.len(), &mut batch)?;
            }
            let got = batch.len();
            handed += self.hand_back(batch.into_iter(), out);
            if got < room {
                break;
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
        self.closed.store(true, Ordering::Release);
        self.helpers.shutdown();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::testing::{route_of, FakeEntry};
    use crate::test_util::{pipe, temp_file};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    const LARGE: usize = 256 * 1024;
    const PATIENCE: Duration = Duration::from_secs(10);

    fn driver() -> Option<AioDriver<FakeEntry>> {
        if let Err(e) = crate::aio::probe() {
            eprintln!("kernel AIO unavailable here ({e}); skipped");
            return None;
        }
        Some(AioDriver::new(64).unwrap())
    }

    fn submission(entry: FakeEntry) -> Submission<FakeEntry> {
        Submission {
            id: RequestId::fresh(),
            entry,
        }
    }

    fn batch(entries: Vec<FakeEntry>) -> Vec<Submission<FakeEntry>> {
        entries.into_iter().map(submission).collect()
    }

    /// Waits for and takes `n` completions (failing after [`PATIENCE`]).
    fn collect(d: &AioDriver<FakeEntry>, n: usize) -> Vec<(FakeEntry, i64)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} of {n} completed", out.len());
            d.wait(n - out.len(), Some(left), &mut || true).unwrap();
            d.take(n - out.len(), &mut out).unwrap();
        }
        out
    }

    fn run(d: &AioDriver<FakeEntry>, entries: Vec<FakeEntry>) -> Vec<(FakeEntry, i64)> {
        let n = entries.len();
        let dispatched = d.dispatch(batch(entries));
        assert_eq!(dispatched.accepted, n);
        assert!(dispatched.error.is_none());
        collect(d, n)
    }

    fn eventfd_readable(d: &AioDriver<FakeEntry>) -> bool {
        let fd = d.eventfd().unwrap().as_raw_fd();
        wait_readable(fd, Some(Duration::ZERO)).unwrap()
    }

    #[test]
    fn a_small_write_and_read_back_go_through_the_kernel() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"");
        let fd = f.as_raw_fd();
        let written = run(&d, vec![FakeEntry::write(fd, b"hello world", 0)]);
        assert_eq!(written[0].1, 11);
        let read = run(&d, vec![FakeEntry::read(fd, 5, 6)]);
        assert_eq!(read[0].1, 5);
        assert_eq!(&*read[0].0.buf, b"world");
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn a_vectored_write_and_read_back_go_through_the_kernel_and_the_helpers() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"");
        let fd = f.as_raw_fd();
        // Small: IOCB_CMD_PWRITEV/PREADV in io_submit (offset 3, a 0-length piece).
        let sizes = [2, 0, 5, 4];
        assert_eq!(
            route_of(&FakeEntry::writev(fd, b"ab", &[1, 1], 0)).0,
            Route::Kernel
        );
        let written = run(&d, vec![FakeEntry::writev(fd, b"hello world", &sizes, 3)]);
        assert_eq!(written[0].1, 11);
        let read = run(&d, vec![FakeEntry::readv(fd, &[4, 0, 3, 20], 1)]);
        assert_eq!(read[0].1, 13);
        assert_eq!(&read[0].0.buf[..13], b"\0\0hello world");
        // Large (the pieces add up past the offload limit): a helper's preadv2.
        let data: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
        let halves = [LARGE / 2, LARGE - LARGE / 2];
        let big = FakeEntry::writev(fd, &data, &halves, 0);
        assert_eq!(route_of(&big).0, Route::Helpers);
        assert_eq!(run(&d, vec![big])[0].1, LARGE as i64);
        let read = run(&d, vec![FakeEntry::readv(fd, &halves, 0)]);
        assert_eq!(read[0].1, LARGE as i64);
        assert!(read[0].0.buf[..] == data[..], "misplaced data");
    }

    #[test]
    fn a_large_write_and_read_back_go_through_the_helpers() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"");
        let fd = f.as_raw_fd();
        let data: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
        let written = run(&d, vec![FakeEntry::write(fd, &data, 0)]);
        assert_eq!(written[0].1, LARGE as i64);
        let read = run(&d, vec![FakeEntry::read(fd, LARGE - 10, 10)]);
        assert_eq!(read[0].1, (LARGE - 10) as i64);
        assert!(read[0].0.buf[..] == data[10..], "misplaced data");
    }

    #[test]
    fn a_pipe_write_and_read_each_run_on_a_stream_thread() {
        let Some(d) = driver() else { return };
        let (r, w) = pipe();
        // The read is first: it waits on its own thread for the write after it.
        let done = run(
            &d,
            vec![
                FakeEntry::read(r.as_raw_fd(), 5, 3),
                FakeEntry::write(w.as_raw_fd(), b"abcde", 9),
            ],
        );
        for (entry, res) in done {
            assert_eq!(res, 5);
            assert_eq!(&*entry.buf, b"abcde");
        }
    }

    #[test]
    fn a_stream_completion_wakes_a_waiter_who_then_signals_the_eventfd_again() {
        let Some(d) = driver() else { return };
        let (r, w) = pipe();
        let dispatched = d.dispatch(batch(vec![FakeEntry::read(r.as_raw_fd(), 3, 0)]));
        assert_eq!(dispatched.accepted, 1);
        d.wait(1, Some(Duration::ZERO), &mut || true).unwrap();
        let mut out = Vec::new();
        d.take(1, &mut out).unwrap();
        assert!(out.is_empty(), "completed with nothing written");
        // SAFETY: writes 3 bytes from a static string into a pipe we own.
        let written = unsafe { libc::write(w.as_raw_fd(), b"xyz".as_ptr().cast(), 3) };
        assert_eq!(written, 3);
        d.wait(1, Some(PATIENCE), &mut || true).unwrap();
        assert!(eventfd_readable(&d), "the wake-up it ate is given back");
        d.take(1, &mut out).unwrap();
        assert_eq!((&*out[0].0.buf, out[0].1), (&b"xyz"[..], 3));
    }

    #[test]
    fn wait_counts_kernel_completions_without_losing_them() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"0123456789");
        let fd = f.as_raw_fd();
        let entries = (0..3).map(|i| FakeEntry::read(fd, 2, i * 2)).collect();
        assert_eq!(d.dispatch(batch(entries)).accepted, 3);
        d.wait(3, Some(PATIENCE), &mut || true).unwrap();
        d.wait(3, Some(Duration::ZERO), &mut || true).unwrap();
        assert!(
            eventfd_readable(&d),
            "an event loop still learns about them"
        );
        let mut out = Vec::new();
        d.take(2, &mut out).unwrap();
        d.take(5, &mut out).unwrap();
        let mut bufs: Vec<_> = out.iter().map(|(e, res)| (e.buf.to_vec(), *res)).collect();
        bufs.sort();
        assert_eq!(
            bufs,
            vec![
                (b"01".to_vec(), 2),
                (b"23".to_vec(), 2),
                (b"45".to_vec(), 2)
            ]
        );
    }

    #[test]
    fn io_submit_stopping_at_a_bad_descriptor_refuses_it_and_the_rest_in_order() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"0123456789");
        let fd = f.as_raw_fd();
        let dispatched = d.dispatch(batch(vec![
            FakeEntry::read(fd, 2, 0),
            FakeEntry::read(-1, 2, 1),
            FakeEntry::read(fd, 2, 2),
        ]));
        assert_eq!(dispatched.accepted, 1);
        assert!(dispatched.error.is_none(), "a short count is not an error");
        let refused: Vec<_> = dispatched
            .refused
            .iter()
            .map(|e| (e.fd, e.offset))
            .collect();
        assert_eq!(refused, vec![(-1, 1), (fd, 2)]);
        assert!(dispatched.refused.iter().all(|e| *e.buf == [0, 0]));
        assert_eq!(d.in_flight(), 1);
        let done = collect(&d, 1);
        assert_eq!((&*done[0].0.buf, done[0].1), (&b"01"[..], 2));
    }

    #[test]
    fn offloaded_requests_follow_the_accepted_prefix() {
        let Some(d) = driver() else { return };
        let f = temp_file(&[7; LARGE]);
        let fd = f.as_raw_fd();
        let (_r, w) = pipe();
        let dispatched = d.dispatch(batch(vec![
            FakeEntry::read(fd, LARGE, 0),
            FakeEntry::read(fd, 2, 1),
            FakeEntry::read(-1, 2, 2),
            FakeEntry::read(fd, LARGE, 3),
            FakeEntry::write(w.as_raw_fd(), b"abc", 4),
        ]));
        assert_eq!(dispatched.accepted, 2);
        assert!(dispatched.error.is_none());
        let refused: Vec<_> = dispatched.refused.iter().map(|e| e.offset).collect();
        assert_eq!(refused, vec![2, 3, 4]);
        assert!(dispatched.refused[1].buf.iter().all(|&b| b == 0), "touched");
        let mut done: Vec<_> = collect(&d, 2)
            .into_iter()
            .map(|(e, res)| (e.offset, res))
            .collect();
        done.sort();
        assert_eq!(done, vec![(0, LARGE as i64), (1, 2)]);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn io_submit_refusing_the_first_refuses_every_one_with_its_error() {
        let Some(d) = driver() else { return };
        let f = temp_file(&[7; LARGE]);
        let fd = f.as_raw_fd();
        let dispatched = d.dispatch(batch(vec![
            FakeEntry::read(fd, LARGE, 0),
            FakeEntry::read(-1, 2, 1),
            FakeEntry::read(fd, 2, 2),
        ]));
        assert_eq!(dispatched.accepted, 0);
        let Some(DispatchError::Os(e)) = dispatched.error else {
            panic!("expected an OS error, got {:?}", dispatched.error)
        };
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let refused: Vec<_> = dispatched.refused.iter().map(|e| e.offset).collect();
        assert_eq!(refused, vec![0, 1, 2]);
        assert!(dispatched.refused[0].buf.iter().all(|&b| b == 0), "touched");
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn wait_with_a_short_timeout_returns_after_it() {
        let Some(d) = driver() else { return };
        let t0 = Instant::now();
        d.wait(1, Some(Duration::from_millis(30)), &mut || true)
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(30));
        d.wait(1, Some(Duration::ZERO), &mut || true).unwrap();
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    #[test]
    fn a_signal_runs_on_signal_and_false_ends_the_wait_as_interrupted() {
        let Some(d) = driver() else { return };
        // SAFETY: installs a handler that does nothing, without SA_RESTART so that poll
        // fails with EINTR; the sigaction struct is a zeroed local.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        let d = Arc::new(d);
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (d, calls) = (d.clone(), calls.clone());
            std::thread::spawn(move || {
                // The first signal resumes the wait, the second ends it.
                let mut on_signal = || calls.fetch_add(1, Ordering::SeqCst) == 0;
                tx.send(d.wait(1, None, &mut on_signal)).unwrap();
            })
        };
        let thread = std::os::unix::thread::JoinHandleExt::as_pthread_t(&waiter);
        let deadline = Instant::now() + PATIENCE;
        // A signal that lands before the waiter sleeps interrupts nothing: keep sending.
        let result = loop {
            // SAFETY: the waiter thread is alive until it sends its result.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(result) => break result,
                Err(_) => assert!(Instant::now() < deadline, "the wait never ended"),
            }
        };
        waiter.join().unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_helper_request_or_an_unknown_id_cannot_be_cancelled() {
        let Some(d) = driver() else { return };
        let f = temp_file(&[7; LARGE]);
        let helper = submission(FakeEntry::read(f.as_raw_fd(), LARGE, 0));
        let id = helper.id;
        assert_eq!(d.dispatch(vec![helper]).accepted, 1);
        assert!(matches!(d.cancel(id).unwrap(), CancelOutcome::NotFound));
        assert!(matches!(
            d.cancel(RequestId::fresh()).unwrap(),
            CancelOutcome::NotFound
        ));
        let done = collect(&d, 1);
        assert_eq!(done[0].1, LARGE as i64);
    }

    #[test]
    fn a_failed_kernel_cancel_leaves_the_request_to_complete() {
        let Some(d) = driver() else { return };
        let f = temp_file(b"0123456789");
        let kernel = submission(FakeEntry::read(f.as_raw_fd(), 4, 0));
        let id = kernel.id;
        assert_eq!(d.dispatch(vec![kernel]).accepted, 1);
        // A regular-file request is never cancellable (and this one is done already).
        assert!(d.cancel(id).is_err());
        assert_eq!(d.in_flight(), 1);
        let done = collect(&d, 1);
        assert_eq!((&*done[0].0.buf, done[0].1), (&b"0123"[..], 4));
    }

    #[test]
    fn every_accepted_entry_is_handed_back_exactly_once() {
        let Some(d) = driver() else { return };
        let f = temp_file(&[1; LARGE]);
        let fd = f.as_raw_fd();
        let (r, w) = pipe();
        let mut entries = Vec::new();
        for i in 0..4 {
            entries.push(FakeEntry::read(fd, 16, i));
            entries.push(FakeEntry::read(fd, LARGE, 100 + i));
            entries.push(FakeEntry::write(w.as_raw_fd(), b"ab", 200 + i));
            entries.push(FakeEntry::read(r.as_raw_fd(), 2, 300 + i));
        }
        let mut tags: Vec<i64> = entries.iter().map(|e| e.offset).collect();
        let done = run(&d, entries);
        let mut seen: Vec<i64> = done.iter().map(|(e, _)| e.offset).collect();
        seen.sort();
        tags.sort();
        assert_eq!(seen, tags);
        assert_eq!(d.in_flight(), 0);
        let mut more = Vec::new();
        d.wait(1, Some(Duration::ZERO), &mut || true).unwrap();
        d.take(100, &mut more).unwrap();
        assert!(more.is_empty(), "handed back twice");
    }

    #[test]
    fn shutdown_lets_started_requests_finish_and_refuses_later_ones() {
        let Some(d) = driver() else { return };
        let f = temp_file(&[7; LARGE]);
        let fd = f.as_raw_fd();
        assert_eq!(
            d.dispatch(batch(vec![FakeEntry::read(fd, LARGE, 0)]))
                .accepted,
            1
        );
        d.shutdown();
        d.shutdown();
        assert!(!d.is_open());
        assert_eq!(collect(&d, 1)[0].1, LARGE as i64);
        let dispatched = d.dispatch(batch(vec![FakeEntry::read(fd, 2, 0)]));
        assert_eq!(dispatched.accepted, 0);
        assert!(matches!(dispatched.error, Some(DispatchError::Closed)));
        assert_eq!(dispatched.refused.len(), 1);
    }
}
