//! The thread-pool driver: worker threads run each request with blocking syscalls.
//!
//! Completions reach their owner one of two ways ([`Delivery`]): queued in an
//! [`EventQueue`] for [`Driver::take`] (an event loop watches its eventfd), or handed to a
//! function on the worker that finished the request.

use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caio_core::{Completion, RequestId};

use super::{
    CancelOutcome, Delivery, DispatchError, Dispatched, Driver, Entry, InFlight, Submission,
};
use crate::{CompletionSink, EventFd, EventQueue, SubmitError, ThreadPool};

/// Which resource [`ThreadDriver::new`] could not get.
#[derive(Debug)]
pub enum ThreadSetupError {
    /// The eventfd of [`Delivery::Queue`].
    EventFd(io::Error),
    /// The worker threads.
    Threads(io::Error),
}

impl fmt::Display for ThreadSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EventFd(e) => write!(f, "cannot create the eventfd: {e}"),
            Self::Threads(e) => write!(f, "cannot start the worker threads: {e}"),
        }
    }
}

impl std::error::Error for ThreadSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::EventFd(e) | Self::Threads(e) => Some(e),
        }
    }
}

/// [`Delivery::Call`]'s sink: the worker takes the entry back and hands it on itself.
struct CallSink<E> {
    inflight: Arc<InFlight<E>>,
    deliver: Box<dyn Fn(E, i64) + Send + Sync>,
}

impl<E: Entry> CompletionSink for CallSink<E> {
    fn complete(&self, completion: Completion) {
        // The registry's lock is released before `deliver` runs: it may dispatch again.
        let entry = self.inflight.remove(completion.id);
        if let Some(entry) = entry {
            (self.deliver)(entry, completion.res);
        }
    }
}

/// A [`Driver`] over a [`ThreadPool`]. Only requests still waiting for a worker can be
/// cancelled; a running syscall is never interrupted.
pub struct ThreadDriver<E: Entry> {
    /// `None` once shut down.
    pool: Mutex<Option<ThreadPool>>,
    inflight: Arc<InFlight<E>>,
    /// `Some` with [`Delivery::Queue`].
    events: Option<Arc<EventQueue>>,
    pool_size: usize,
}

impl<E: Entry> ThreadDriver<E> {
    /// Starts `pool_size` workers (the caller picks a sensible number: with none, requests
    /// are accepted and never run), with room for `queue_limit` requests waiting for one.
    pub fn new(
        pool_size: usize,
        queue_limit: usize,
        delivery: Delivery<E>,
    ) -> Result<Self, ThreadSetupError> {
        let inflight = Arc::new(InFlight::default());
        let (events, sink): (_, Arc<dyn CompletionSink>) = match delivery {
            Delivery::Queue => {
                let events = Arc::new(EventQueue::new().map_err(ThreadSetupError::EventFd)?);
                (Some(events.clone()), events)
            }
            Delivery::Call(deliver) => {
                let sink = CallSink {
                    inflight: inflight.clone(),
                    deliver,
                };
                (None, Arc::new(sink))
            }
        };
        let pool =
            ThreadPool::new(pool_size, queue_limit, sink).map_err(ThreadSetupError::Threads)?;
        Ok(Self {
            pool: Mutex::new(Some(pool)),
            inflight,
            events,
            pool_size,
        })
    }

    /// Number of worker threads.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    fn lock_pool(&self) -> MutexGuard<'_, Option<ThreadPool>> {
        // A plain `Option`, whole at every moment, so a poisoned lock is still sound to use.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<E: Entry> Driver<E> for ThreadDriver<E> {
    fn dispatch(&self, batch: Vec<Submission<E>>) -> Dispatched<E> {
        let pool = self.lock_pool();
        let mut batch = batch.into_iter();
        let mut accepted = 0;
        let mut refusal = None;
        for Submission { id, entry } in batch.by_ref() {
            let Some(pool) = pool.as_ref() else {
                refusal = Some((entry, DispatchError::Closed));
                break;
            };
            let request = entry.request();
            // Registered first: a worker may finish it before `submit` returns.
            self.inflight.insert(id, entry, ());
            // SAFETY: the entry now lives in `inflight` until the sink has this request's
            // completion (the sink or `take` removes it only after that), and a driver
            // never drops an accepted entry (leftovers leak), so by `Entry`'s contract the
            // buffer stays valid, in place and untouched by others until then. On `Err` it
            // is taken back below, never having reached a worker.
            match unsafe { pool.submit(id, request) } {
                Ok(()) => accepted += 1,
                Err(err) => {
                    let entry = self
                        .inflight
                        .remove(id)
                        .expect("a refused request stays registered");
                    let error = match err {
                        SubmitError::QueueFull => DispatchError::Full,
                        SubmitError::Shutdown => DispatchError::Closed,
                    };
                    refusal = Some((entry, error));
                    break;
                }
            }
        }
        drop(pool);
        match refusal {
            None => Dispatched::all(accepted),
            Some((entry, error)) => Dispatched {
                accepted,
                refused: std::iter::once(entry)
                    .chain(batch.map(|submission| submission.entry))
                    .collect(),
                error: Some(error),
            },
        }
    }

    fn wait(
        &self,
        min: usize,
        timeout: Option<Duration>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        if events.len() >= min || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        // A deadline past what `Instant` can hold is no limit at all.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match events.wait(min, left) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if !on_signal() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn take(&self, max: usize, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        let batch = events.take(max);
        let mut inflight = self.inflight.lock();
        out.extend(batch.into_iter().filter_map(|completion| {
            let (entry, ()) = inflight.remove(completion.id)?;
            Some((entry, completion.res))
        }));
        Ok(())
    }

    fn cancel(&self, id: RequestId) -> io::Result<CancelOutcome<E>> {
        let cancelled = self.lock_pool().as_ref().and_then(|pool| pool.cancel(id));
        Ok(match cancelled {
            Some(cancelled) => {
                // With the pool's lock released: a `Delivery::Call` may dispatch or shut
                // down from here.
                cancelled.complete();
                CancelOutcome::Requested
            }
            None => CancelOutcome::NotFound,
        })
    }

    /// Returns at once if another thread already shut the driver down (it may still be
    /// joining the workers then).
    fn shutdown(&self) {
        let pool = self.lock_pool().take();
        // Joined outside the lock: a worker's `Delivery::Call` may be in `dispatch`.
        drop(pool);
    }

    fn is_open(&self) -> bool {
        self.lock_pool().is_some()
    }

    fn eventfd(&self) -> Option<&EventFd> {
        self.events.as_deref().map(EventQueue::eventfd)
    }

    fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()> {
        self.inflight.visit(visit)
    }
}

impl<E: Entry> Drop for ThreadDriver<E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::testing::FakeEntry;
    use crate::test_util::temp_file;
    use crate::IoKind;
    use std::collections::HashMap;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixStream;
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};

    const LONG: Duration = Duration::from_secs(10);
    const ECANCELED: i64 = -(libc::ECANCELED as i64);

    type Delivered = (FakeEntry, i64, ThreadId);

    /// A driver whose completions arrive on a channel, with the thread they ran on.
    fn calling(
        pool_size: usize,
        queue_limit: usize,
    ) -> (ThreadDriver<FakeEntry>, mpsc::Receiver<Delivered>) {
        let (tx, rx) = mpsc::channel();
        let deliver = move |entry, res| tx.send((entry, res, thread::current().id())).unwrap();
        let driver = ThreadDriver::new(pool_size, queue_limit, Delivery::Call(Box::new(deliver)))
            .unwrap_or_else(|e| panic!("{e}"));
        (driver, rx)
    }

    fn queueing(pool_size: usize, queue_limit: usize) -> ThreadDriver<FakeEntry> {
        ThreadDriver::new(pool_size, queue_limit, Delivery::Queue).unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(entry: FakeEntry) -> (RequestId, Vec<Submission<FakeEntry>>) {
        let id = RequestId::fresh();
        (id, vec![Submission { id, entry }])
    }

    fn dispatch_one(driver: &ThreadDriver<FakeEntry>, entry: FakeEntry) -> RequestId {
        let (id, batch) = one(entry);
        let dispatched = driver.dispatch(batch);
        assert_eq!(dispatched.accepted, 1, "{:?}", dispatched.error);
        id
    }

    fn no_signals() -> impl FnMut() -> bool {
        || -> bool { panic!("no signal was sent") }
    }

    /// Waits (bounded) for one queued completion and takes it.
    fn take_one(driver: &ThreadDriver<FakeEntry>) -> (FakeEntry, i64) {
        driver.wait(1, Some(LONG), &mut no_signals()).unwrap();
        let mut out = Vec::new();
        driver.take(1, &mut out).unwrap();
        assert_eq!(out.len(), 1, "nothing completed within {LONG:?}");
        out.pop().unwrap()
    }

    /// A request that keeps its worker busy until [`Blocker::release`]: a read of one
    /// byte from a socket with nothing in it yet.
    struct Blocker {
        ours: UnixStream,
        theirs: UnixStream,
    }

    impl Blocker {
        fn new() -> Self {
            let (ours, theirs) = UnixStream::pair().unwrap();
            Self { ours, theirs }
        }

        fn entry(&self) -> FakeEntry {
            FakeEntry::read(self.theirs.as_raw_fd(), 1, 0)
        }

        fn release(&mut self) {
            self.ours.write_all(b"!").unwrap();
        }
    }

    #[test]
    fn a_write_then_a_read_come_back_through_the_queue_with_their_bytes() {
        let file = temp_file(b"");
        let driver = queueing(2, 8);
        assert!(driver.eventfd().is_some());
        dispatch_one(
            &driver,
            FakeEntry::write(file.as_raw_fd(), b"hello, world", 3),
        );
        let (written, res) = take_one(&driver);
        assert_eq!((written.kind, res), (IoKind::Write, 12));

        dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 20, 0));
        let (read, res) = take_one(&driver);
        assert_eq!(res, 15);
        assert_eq!(&read.buf[..15], b"\0\0\0hello, world");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn a_vectored_write_then_read_come_back_with_their_bytes_in_order() {
        let file = temp_file(b"");
        let driver = queueing(2, 8);
        let entry = FakeEntry::writev(file.as_raw_fd(), b"one two", &[4, 0, 3], 1);
        dispatch_one(&driver, entry);
        let (written, res) = take_one(&driver);
        assert_eq!((written.kind, res), (IoKind::WriteV, 7));
        dispatch_one(&driver, FakeEntry::readv(file.as_raw_fd(), &[2, 2, 10], 0));
        let (read, res) = take_one(&driver);
        assert_eq!(res, 8);
        assert_eq!(&read.buf[..8], b"\0one two");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn a_write_then_a_read_come_back_through_the_call_on_a_worker() {
        let file = temp_file(b"");
        let (driver, delivered) = calling(2, 8);
        assert!(driver.eventfd().is_none());
        dispatch_one(&driver, FakeEntry::write(file.as_raw_fd(), b"abc", 0));
        let (written, res, on) = delivered.recv_timeout(LONG).unwrap();
        assert_eq!((written.kind, res), (IoKind::Write, 3));
        assert_ne!(on, thread::current().id(), "delivered on a worker");

        dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 3, 1));
        let (read, res, _) = delivered.recv_timeout(LONG).unwrap();
        assert_eq!((&read.buf[..], res), (&b"bc\0"[..], 2));
        assert_eq!(driver.in_flight(), 0);

        // Nothing to wait for or take in this mode.
        let mut out = Vec::new();
        driver.wait(1, None, &mut no_signals()).unwrap();
        driver.take(10, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_full_queue_takes_a_prefix_and_hands_the_rest_back_untouched_in_order() {
        let file = temp_file(b"");
        let (driver, delivered) = calling(1, 2);
        let mut blocker = Blocker::new();
        dispatch_one(&driver, blocker.entry());
        let batch: Vec<_> = (0..5u8)
            .map(|i| Submission {
                id: RequestId::fresh(),
                entry: FakeEntry::write(file.as_raw_fd(), &[b'a' + i], i64::from(i)),
            })
            .collect();
        // The blocker may still be queued (taking one of the two places) or running.
        let dispatched = driver.dispatch(batch);
        assert!(matches!(dispatched.error, Some(DispatchError::Full)));
        let accepted = dispatched.accepted;
        assert!((1..=2).contains(&accepted), "accepted {accepted}");
        assert_eq!(dispatched.refused.len(), 5 - accepted);
        for (entry, i) in dispatched.refused.iter().zip(accepted as u8..) {
            assert_eq!((entry.kind, entry.offset), (IoKind::Write, i64::from(i)));
            assert_eq!(&entry.buf[..], &[b'a' + i]);
        }
        assert_eq!(driver.in_flight(), 1 + accepted);

        blocker.release();
        let results: Vec<i64> = (0..=accepted)
            .map(|_| delivered.recv_timeout(LONG).unwrap().1)
            .collect();
        assert!(results.iter().all(|&res| res == 1), "{results:?}");
        driver.shutdown();
        let mut on_disk = [0u8; 8];
        let len = file.read_at(&mut on_disk, 0).unwrap();
        assert_eq!(
            &on_disk[..len],
            &b"abcde"[..accepted],
            "the refused never ran"
        );
    }

    #[test]
    fn the_accepted_prefix_is_exactly_the_queue_limit_when_the_only_worker_is_busy() {
        // The worker is held inside the first delivery, so it has left the queue empty.
        let (entered_tx, entered) = mpsc::channel();
        let (open_gate, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(Some(gate));
        let (tx, delivered) = mpsc::channel();
        let deliver = move |entry: FakeEntry, res| {
            if let Some(gate) = gate.lock().unwrap().take() {
                entered_tx.send(()).unwrap();
                gate.recv().unwrap();
            }
            tx.send((entry, res)).unwrap();
        };
        let driver = ThreadDriver::new(1, 2, Delivery::Call(Box::new(deliver))).unwrap();
        let file = temp_file(b"");
        let first = dispatch_one(&driver, FakeEntry::sync(file.as_raw_fd()));
        entered.recv_timeout(LONG).unwrap();
        assert!(
            matches!(driver.cancel(first).unwrap(), CancelOutcome::NotFound),
            "a worker took it: it completes normally"
        );

        let batch: Vec<_> = (0..4)
            .map(|i| Submission {
                id: RequestId::fresh(),
                entry: FakeEntry::read(file.as_raw_fd(), 1, i),
            })
            .collect();
        let dispatched = driver.dispatch(batch);
        assert_eq!(dispatched.accepted, 2);
        assert!(matches!(dispatched.error, Some(DispatchError::Full)));
        let offsets: Vec<i64> = dispatched.refused.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [2, 3]);

        open_gate.send(()).unwrap();
        let offsets: Vec<i64> = (0..3)
            .map(|_| delivered.recv_timeout(LONG).unwrap().0.offset)
            .collect();
        assert_eq!(offsets, [0, 0, 1], "the sync, then the two accepted reads");
    }

    #[test]
    fn after_shutdown_dispatch_refuses_everything_as_closed() {
        let file = temp_file(b"");
        for driver in [queueing(1, 4), calling(1, 4).0] {
            assert!(driver.is_open());
            driver.shutdown();
            driver.shutdown();
            assert!(!driver.is_open());
            let batch = (0..3)
                .map(|i| Submission {
                    id: RequestId::fresh(),
                    entry: FakeEntry::read(file.as_raw_fd(), 1, i),
                })
                .collect();
            let dispatched = driver.dispatch(batch);
            assert_eq!(dispatched.accepted, 0);
            assert!(matches!(dispatched.error, Some(DispatchError::Closed)));
            let offsets: Vec<i64> = dispatched.refused.iter().map(|e| e.offset).collect();
            assert_eq!(offsets, [0, 1, 2]);
            assert_eq!(driver.in_flight(), 0);
            assert!(matches!(
                driver.cancel(RequestId::fresh()).unwrap(),
                CancelOutcome::NotFound
            ));
        }
    }

    #[test]
    fn shutdown_lets_queued_requests_run_and_take_delivers_them_afterwards() {
        let file = temp_file(b"xyz");
        let driver = queueing(1, 8);
        let mut blocker = Blocker::new();
        dispatch_one(&driver, blocker.entry());
        for i in 0..3 {
            dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 1, i));
        }
        blocker.release();
        driver.shutdown();
        let mut out = Vec::new();
        driver.take(usize::MAX, &mut out).unwrap();
        let mut got: Vec<(u8, i64)> = out.iter().map(|(e, res)| (e.buf[0], *res)).collect();
        got.sort_unstable();
        assert_eq!(got, [(b'!', 1), (b'x', 1), (b'y', 1), (b'z', 1)]);
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn cancel_of_a_queued_request_brings_it_back_as_cancelled_through_the_queue() {
        let file = temp_file(b"data");
        let driver = queueing(1, 4);
        let mut blocker = Blocker::new();
        let blocker_id = dispatch_one(&driver, blocker.entry());
        // Behind the blocker on the only worker, so it cannot have started.
        let target = dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 4, 0));
        assert!(matches!(
            driver.cancel(target).unwrap(),
            CancelOutcome::Requested
        ));
        let (entry, res) = take_one(&driver);
        assert_eq!(res, ECANCELED);
        assert_eq!(&entry.buf[..], b"\0\0\0\0", "it never ran");
        assert!(matches!(
            driver.cancel(target).unwrap(),
            CancelOutcome::NotFound
        ));
        assert!(matches!(
            driver.cancel(RequestId::fresh()).unwrap(),
            CancelOutcome::NotFound
        ));

        blocker.release();
        let (entry, res) = take_one(&driver);
        assert_eq!((&entry.buf[..], res), (&b"!"[..], 1));
        assert!(matches!(
            driver.cancel(blocker_id).unwrap(),
            CancelOutcome::NotFound
        ));
    }

    #[test]
    fn cancel_in_call_mode_delivers_right_there_on_the_cancelling_thread() {
        let file = temp_file(b"data");
        let (driver, delivered) = calling(1, 4);
        let mut blocker = Blocker::new();
        let blocker_id = dispatch_one(&driver, blocker.entry());
        let target = dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 4, 0));
        assert!(matches!(
            driver.cancel(target).unwrap(),
            CancelOutcome::Requested
        ));
        let (entry, res, on) = delivered.try_recv().expect("delivered within cancel");
        assert_eq!(
            (entry.offset, res, on),
            (0, ECANCELED, thread::current().id())
        );
        assert_eq!(&entry.buf[..], b"\0\0\0\0");

        // Once the blocker runs, cancelling it finds nothing; until then it is queued.
        blocker.release();
        let (entry, res, _) = delivered.recv_timeout(LONG).unwrap();
        assert_eq!((&entry.buf[..], res), (&b"!"[..], 1));
        assert!(matches!(
            driver.cancel(blocker_id).unwrap(),
            CancelOutcome::NotFound
        ));
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn wait_for_more_than_will_come_returns_after_the_timeout() {
        let file = temp_file(b"");
        let driver = queueing(1, 4);
        dispatch_one(&driver, FakeEntry::sync(file.as_raw_fd()));
        let t0 = Instant::now();
        driver
            .wait(2, Some(Duration::from_millis(50)), &mut no_signals())
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        let mut out = Vec::new();
        driver.take(10, &mut out).unwrap();
        assert_eq!(out.len(), 1);

        let t0 = Instant::now();
        driver
            .wait(1, Some(Duration::ZERO), &mut no_signals())
            .unwrap();
        driver.wait(0, None, &mut no_signals()).unwrap();
        assert!(t0.elapsed() < LONG, "looked only");
    }

    extern "C" fn ignore(_: libc::c_int) {}

    /// Waits in another thread with `on_signal` answering `answers` in turn, and sends
    /// SIGUSR1 to it until it has asked them all; returns the wait's outcome and how many
    /// times `on_signal` ran.
    fn interrupted_wait(answers: &'static [bool]) -> (io::Result<()>, usize) {
        // SAFETY: `ignore` is async-signal-safe (it does nothing); the action struct is a
        // zeroed local with an empty mask; no SA_RESTART, so a blocked poll() sees EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        let driver = Arc::new(queueing(1, 4));
        let asked = Arc::new(AtomicUsize::new(0));
        let (asked_tx, asked_rx) = mpsc::channel();
        let waiter = {
            let (driver, asked) = (driver.clone(), asked.clone());
            thread::spawn(move || {
                let mut on_signal = || {
                    let n = asked.fetch_add(1, Ordering::SeqCst);
                    asked_tx.send(()).unwrap();
                    answers[n]
                };
                driver.wait(1, Some(Duration::from_secs(60)), &mut on_signal)
            })
        };
        let target = waiter.as_pthread_t();
        let deadline = Instant::now() + LONG;
        for _ in answers {
            // Signalled until it answers: one sent before it sleeps in poll() is lost.
            loop {
                assert!(Instant::now() < deadline, "on_signal never ran");
                // SAFETY: the waiter is not joined yet, so its pthread_t is valid; SIGUSR1
                // has the no-op handler installed above.
                assert_eq!(unsafe { libc::pthread_kill(target, libc::SIGUSR1) }, 0);
                if asked_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                    break;
                }
            }
        }
        let outcome = waiter.join().unwrap();
        (outcome, asked.load(Ordering::SeqCst))
    }

    #[test]
    fn a_signal_during_wait_asks_on_signal_and_false_ends_the_wait_as_interrupted() {
        let (outcome, asked) = interrupted_wait(&[false]);
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_signal_during_wait_resumes_it_when_on_signal_says_true() {
        let (outcome, asked) = interrupted_wait(&[true, true, false]);
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert_eq!(asked, 3, "it kept waiting after each true");
    }

    #[test]
    fn every_accepted_request_is_handed_back_exactly_once_in_both_modes() {
        const TOTAL: i64 = 300;
        let file = temp_file(&[7u8; TOTAL as usize]);
        let fd = file.as_raw_fd();
        for queue in [true, false] {
            let (driver, delivered) = if queue {
                let (_, rx) = mpsc::channel();
                (queueing(3, 8), rx)
            } else {
                calling(3, 8)
            };
            let mut seen: HashMap<i64, usize> = HashMap::new();
            let mut came_cancelled = 0;
            let mut cancelled = 0;
            let mut receive = |driver: &ThreadDriver<FakeEntry>, block: bool| {
                let mut got = Vec::new();
                if queue {
                    let timeout = if block { LONG } else { Duration::ZERO };
                    driver.wait(1, Some(timeout), &mut no_signals()).unwrap();
                    driver.take(usize::MAX, &mut got).unwrap();
                } else if block {
                    got.push(
                        delivered
                            .recv_timeout(LONG)
                            .map(|(e, r, _)| (e, r))
                            .unwrap(),
                    );
                }
                if !queue {
                    got.extend(delivered.try_iter().map(|(e, r, _)| (e, r)));
                }
                for (entry, res) in got {
                    assert!(res == 1 || res == ECANCELED, "{res}");
                    if res == 1 {
                        assert_eq!(entry.buf[0], 7);
                    } else {
                        came_cancelled += 1;
                    }
                    *seen.entry(entry.offset).or_default() += 1;
                }
            };
            let mut pending: Vec<i64> = (0..TOTAL).collect();
            pending.reverse();
            while !pending.is_empty() {
                let offsets: Vec<i64> = (0..10).map_while(|_| pending.pop()).collect();
                let ids: Vec<RequestId> = offsets.iter().map(|_| RequestId::fresh()).collect();
                let batch = offsets
                    .iter()
                    .zip(&ids)
                    .map(|(&offset, &id)| Submission {
                        id,
                        entry: FakeEntry::read(fd, 1, offset),
                    })
                    .collect();
                let dispatched = driver.dispatch(batch);
                // Some of the accepted ones may still be queued: cancel every third.
                for id in ids[..dispatched.accepted].iter().step_by(3) {
                    if let CancelOutcome::Requested = driver.cancel(*id).unwrap() {
                        cancelled += 1;
                    }
                }
                for entry in dispatched.refused.into_iter().rev() {
                    pending.push(entry.offset);
                }
                receive(&driver, dispatched.error.is_some());
            }
            driver.shutdown();
            receive(&driver, false);
            assert_eq!(driver.in_flight(), 0);
            assert_eq!(seen.len(), TOTAL as usize, "queue={queue}");
            assert!(seen.values().all(|&n| n == 1), "queue={queue}: a duplicate");
            assert_eq!(came_cancelled, cancelled, "queue={queue}");
        }
    }

    #[test]
    fn dropping_the_driver_runs_what_is_queued_and_joins_the_workers() {
        let file = temp_file(b"q");
        let (driver, delivered) = calling(1, 8);
        let mut blocker = Blocker::new();
        dispatch_one(&driver, blocker.entry());
        for _ in 0..4 {
            dispatch_one(&driver, FakeEntry::read(file.as_raw_fd(), 1, 0));
        }
        blocker.release();
        drop(driver);
        // Joined: every delivery has happened, and the sender went with the workers.
        let got: Vec<i64> = delivered.iter().map(|(_, res, _)| res).collect();
        assert_eq!(got, [1; 5]);
    }

    #[test]
    fn visit_shows_what_is_in_flight() {
        let file = temp_file(b"");
        let (driver, delivered) = calling(1, 4);
        let mut blocker = Blocker::new();
        dispatch_one(&driver, blocker.entry());
        dispatch_one(&driver, FakeEntry::sync(file.as_raw_fd()));
        let mut kinds = Vec::new();
        let flow = driver.visit(&mut |entry| {
            kinds.push(entry.kind);
            ControlFlow::Continue(())
        });
        assert_eq!(flow, ControlFlow::Continue(()));
        kinds.sort_by_key(|kind| *kind == IoKind::Fsync);
        assert_eq!(kinds, [IoKind::Read, IoKind::Fsync]);
        assert_eq!(driver.in_flight(), 2);
        blocker.release();
        for _ in 0..2 {
            delivered.recv_timeout(LONG).unwrap();
        }
        assert_eq!(driver.in_flight(), 0);
    }
}
