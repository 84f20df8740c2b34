//! [`UringDriver`]: the [`Driver`] over one io_uring instance.
//!
//! [`dispatch`](Driver::dispatch) only stages entries; [`flush`](UringDriver::flush) hands
//! them to the kernel and takes what already completed (page-cache reads often finish
//! inside that syscall); [`wait`](Driver::wait) and [`take`](Driver::take) bring the rest.
//!
//! [`inline_write`](UringDriver::inline_write) runs a small buffered file write on the
//! calling thread instead (see [`super::inline_write`]): on ext4 io_uring would hand each
//! one to a kernel worker. Large buffered file requests run on helper threads (see
//! [`super::offload`]) rather than on as many io-wq workers as are in flight; they
//! report to a queue announced on the same eventfd as the ring's completions.
//!
//! Completions are reaped from the CQ and the helpers' queue into a ready queue, under
//! the ring's lock, and taken from there. A thread blocked in [`wait`](Driver::wait)
//! counts as *parked* for the whole wait: while any thread is parked only parked threads
//! reap, so another thread's `flush` or `take` never reaps the completion a parked thread
//! was woken for (it would leave that thread waiting for a completion already gone).
//! Parked threads sleep on the ring's fd and on an eventfd of their own, never on the
//! one the event loop watches (a loop resetting it could leave them asleep).

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caio_core::{Completion, RequestId};

use super::inline_write::InlineWrites;
use super::offload::{may_offload, route, HelperThreads, Route};
use super::{CancelOutcome, DispatchError, Dispatched, Driver, Entry, InFlight, Submission};
use crate::io::wait_readable_of;
use crate::uring::{Cancel, Cancelled};
use crate::CompletionSink;
use crate::{EventFd, EventQueue, IoRequest, Ring};

/// Which resource [`UringDriver::new`] could not set up (the messages differ).
#[derive(Debug)]
pub enum UringSetupError {
    /// The eventfd.
    EventFd(io::Error),
    /// The ring (or its size: `EINVAL` when `max_requests + 1` overflows).
    Ring(io::Error),
}

/// The ring and the completions reaped from it but not yet taken.
struct RingState {
    ring: Ring,
    ready: VecDeque<Completion>,
}

/// Where an in-flight request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunsOn {
    Ring,
    /// A helper thread: the kernel never saw it.
    Helpers,
}

/// Where the helper threads report.
struct HelperReports {
    /// Announced on the ring's eventfd, which the event loop watches.
    queue: EventQueue,
    /// Signalled after a helper completion while a thread is parked, for parked threads
    /// alone: the ring's fd tells them of the CQ, this of the queue.
    parked_wake: EventFd,
    /// Threads inside a blocking [`wait`](Driver::wait) (see the module's documentation).
    parked: AtomicUsize,
}

impl CompletionSink for HelperReports {
    fn complete(&self, completion: Completion) {
        self.queue.complete(completion);
        // A waiter counts itself before it reaps, and the queue's lock orders its reap
        // against this push: one whose reap missed this completion is counted by now.
        if self.parked.load(Ordering::SeqCst) > 0 {
            self.parked_wake.signal();
        }
    }
}

/// An io_uring instance with its eventfd, signalled on every completion.
pub struct UringDriver<E> {
    // Declared first: joined first on drop, before the entries they write into go.
    helpers: HelperThreads,
    sqpoll: bool,
    ring_fd: RawFd,
    state: Mutex<RingState>,
    in_flight: InFlight<E, RunsOn>,
    /// Small buffered file writes run on the caller's thread instead.
    inline_writes: InlineWrites,
    /// The helpers' completions; its queue's eventfd is the ring's too. Declared last:
    /// dropped after the ring and the helpers that signal it.
    reports: Arc<HelperReports>,
}

impl<E: Entry> UringDriver<E> {
    /// A ring of `max_requests + 1` entries (`max_requests` as the user gave it, 0 already
    /// replaced by the default; the headroom as caio), with SQPOLL if asked and allowed.
    pub fn new(max_requests: u32, sqpoll: bool) -> Result<Self, UringSetupError> {
        let reports = Arc::new(HelperReports {
            queue: EventQueue::new().map_err(UringSetupError::EventFd)?,
            parked_wake: EventFd::new().map_err(UringSetupError::EventFd)?,
            parked: AtomicUsize::new(0),
        });
        let entries = max_requests
            .checked_add(1)
            .ok_or_else(|| UringSetupError::Ring(io::Error::from_raw_os_error(libc::EINVAL)))?;
        let ring = Ring::new(entries, sqpoll, reports.queue.eventfd().as_raw_fd())
            .map_err(UringSetupError::Ring)?;
        Ok(Self {
            helpers: HelperThreads::new(reports.clone()),
            sqpoll: ring.sqpoll(),
            ring_fd: ring.fd(),
            state: Mutex::new(RingState {
                ring,
                ready: VecDeque::new(),
            }),
            in_flight: InFlight::default(),
            inline_writes: InlineWrites::default(),
            reports,
        })
    }

    /// Whether SQPOLL was negotiated.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// The ring's own descriptor.
    pub fn ring_fd(&self) -> RawFd {
        self.ring_fd
    }

    /// Runs `request` on the calling thread if it is a small buffered file write (see
    /// [`InlineWrites::run`]); `None`: submit it instead.
    ///
    /// # Safety
    /// As for [`IoRequest::perform`].
    pub unsafe fn inline_write(&self, request: &IoRequest) -> Option<i64> {
        // SAFETY: the caller's promise.
        unsafe { self.inline_writes.run(request) }
    }

    /// Hands the staged entries to the kernel and appends what completed to `out`. With
    /// nothing staged it does nothing, without a syscall (as caio), unless the kernel holds
    /// completions that overflowed the CQ: no later event would bring those. While a
    /// thread is parked it submits but takes nothing (the parked thread reaps).
    pub fn flush(&self, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        let mut state = self.lock();
        if !self.sqpoll && state.ring.pending() == 0 && !state.ring.cq_overflow() {
            return Ok(());
        }
        state.ring.submit()?;
        if self.reports.parked.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        self.collect(&mut state, usize::MAX, true, out);
        Ok(())
    }

    /// The ring. Nothing panics while holding it with the ring half-updated (the queues
    /// publish on drop), so a poisoned lock is still sound to use. Every holder keeps it
    /// only for calls that do not block.
    fn lock(&self) -> MutexGuard<'_, RingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The eventfd the ring and the helpers signal.
    fn eventfd_ref(&self) -> &EventFd {
        self.reports.queue.eventfd()
    }

    /// Moves every completion there is (the CQ's and the helpers') to the ready queue.
    fn reap(&self, state: &mut RingState) {
        state.ring.reap(&mut state.ready);
        state.ready.extend(self.reports.queue.take(usize::MAX));
    }

    /// Moves up to `max` ready completions (reaping first if `reap`) to `out` with their
    /// entries, re-signalling the eventfd if some stay behind.
    fn collect(&self, state: &mut RingState, max: usize, reap: bool, out: &mut Vec<(E, i64)>) {
        if reap {
            self.reap(state);
        }
        let n = state.ready.len().min(max);
        let mut in_flight = self.in_flight.lock();
        out.extend(
            state
                .ready
                .drain(..n)
                .filter_map(|c| in_flight.remove(c.id).map(|(entry, _)| (entry, c.res))),
        );
        if !state.ready.is_empty() {
            // Whoever takes next must hear of them.
            self.eventfd_ref().signal();
        }
    }

    /// The blocking part of [`wait`](Driver::wait), parked: stretches of
    /// [`wait_step`](Self::wait_step) until one ends, `on_signal` deciding after each
    /// signal.
    fn wait_parked(
        &self,
        min: usize,
        deadline: Option<Instant>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        loop {
            match self.wait_step(min, deadline) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if !on_signal() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Submits what is staged (without SQPOLL; with it the kernel's thread takes it),
    /// reaps, and blocks without the ring's lock on the ring's fd (readable while the CQ
    /// holds completions) and on the parked threads' eventfd (which the helpers signal),
    /// until `min` completions are ready or `deadline` passes. A signal ends it with an
    /// `Interrupted` error.
    fn wait_step(&self, min: usize, deadline: Option<Instant>) -> io::Result<()> {
        let wake = &self.reports.parked_wake;
        loop {
            // Reset before reaping: a helper completion after the reap signals it again.
            let _ = wake.read();
            {
                let mut state = self.lock();
                if !self.sqpoll && state.ring.pending() > 0 {
                    state.ring.submit()?;
                }
                self.reap(&mut state);
                if state.ready.len() >= min {
                    return Ok(());
                }
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(()),
                },
            };
            wait_readable_of([self.ring_fd, wake.as_raw_fd()], left)?;
        }
    }

    /// The end of a parked wait, on every path (`failed`: it ended with an error or a
    /// panic).
    fn unpark(&self, failed: bool) {
        let others_parked = self.reports.parked.fetch_sub(1, Ordering::SeqCst) > 1;
        if !others_parked && !failed {
            return;
        }
        let mut state = self.lock();
        if failed && !state.ready.is_empty() {
            // Reaped but not taken: whoever takes next must hear of them.
            self.eventfd_ref().signal();
        }
        // Others are parked on the ring and what we reaped may include what they wait
        // for: a no-op completion makes them look again.
        if others_parked && state.ring.stager().push_wakeup().is_ok() {
            let _ = state.ring.submit();
        }
    }
}

/// A thread counted in [`HelperReports::parked`] until this drops.
struct Parked<'a, E: Entry> {
    driver: &'a UringDriver<E>,
    failed: bool,
}

impl<'a, E: Entry> Parked<'a, E> {
    fn new(driver: &'a UringDriver<E>) -> Self {
        driver.reports.parked.fetch_add(1, Ordering::SeqCst);
        Self {
            driver,
            failed: true,
        }
    }
}

impl<E: Entry> Drop for Parked<'_, E> {
    fn drop(&mut self) {
        self.driver.unpark(self.failed);
    }
}

impl<E: Entry> Driver<E> for UringDriver<E> {
    /// Stages the batch (no syscall; [`flush`](UringDriver::flush) or a wait hands it to
    /// the kernel) against one snapshot of the SQ: at the first submission that finds it
    /// full, that one and the rest are refused with [`DispatchError::Full`]. Large
    /// buffered file requests go to the helper threads instead (to the kernel's workers
    /// if those cannot start).
    fn dispatch(&self, batch: Vec<Submission<E>>) -> Dispatched<E> {
        // Routed before the locks are taken: that costs a syscall or two each.
        let offloads: Vec<bool> = if batch
            .iter()
            .any(|s| may_offload(&s.entry.request(), s.entry.is_direct()))
        {
            batch
                .iter()
                .map(|s| {
                    let (mut request, direct) = (s.entry.request(), s.entry.is_direct());
                    may_offload(&request, direct) && route(&mut request, direct) == Route::Helpers
                })
                .collect()
        } else {
            Vec::new()
        };
        let helpers = if offloads.contains(&true) {
            self.helpers.start().ok()
        } else {
            None
        };
        let mut state = self.lock();
        let mut stager = state.ring.stager();
        let mut in_flight = self.in_flight.lock();
        let mut batch = batch.into_iter();
        let mut accepted = 0;
        let mut refused = Vec::new();
        for (at, Submission { id, entry }) in batch.by_ref().enumerate() {
            let request = entry.request();
            if let (Some(true), Some(helpers)) = (offloads.get(at), &helpers) {
                in_flight.insert_at(id, (entry, RunsOn::Helpers));
                // SAFETY: `id` is registered with the entry that owns the buffer (before
                // a helper can complete it), which leaves the registry only once this
                // completion is taken from the helpers' queue (or never, see below).
                unsafe { helpers.run(id, request) };
                accepted += 1;
                continue;
            }
            // SAFETY: if staged, `entry` moves into `in_flight` just below, before the
            // stager publishes anything, and leaves it only in `collect`, once the
            // completion of `id` has been reaped (or never, if the driver is dropped
            // first: the registry then leaks it). By the `Entry` contract its buffer stays
            // valid, at the same address and untouched by others meanwhile.
            if unsafe { stager.push_request(id, &request) }.is_err() {
                refused.push(entry);
                break;
            }
            in_flight.insert_at(id, (entry, RunsOn::Ring));
            accepted += 1;
        }
        drop(in_flight);
        drop(stager); // publishes the staged entries
        drop(state);
        drop(helpers);
        if refused.is_empty() {
            return Dispatched::all(accepted);
        }
        refused.extend(batch.map(|s| s.entry));
        Dispatched {
            accepted,
            refused,
            error: Some(DispatchError::Full),
        }
    }

    /// `min` 0 returns at once, without a syscall. `Some(ZERO)` only asks the kernel to
    /// post what it has (no parking). Otherwise the
    /// thread is parked for the whole wait (see the module's documentation); on its way
    /// out it wakes the other parked threads, and announces on the eventfd completions it
    /// reaped if it ends with an error.
    fn wait(
        &self,
        min: usize,
        timeout: Option<Duration>,
        on_signal: &mut dyn FnMut() -> bool,
    ) -> io::Result<()> {
        if min == 0 {
            return Ok(());
        }
        if timeout == Some(Duration::ZERO) {
            return self.lock().ring.get_events();
        }
        // A timeout too large to add is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut parked = Parked::new(self);
        let result = self.wait_parked(min, deadline, on_signal);
        parked.failed = result.is_err();
        drop(parked);
        result
    }

    /// Reaps the CQ only if no thread is parked (the parked ones reap; reaping here could
    /// take the completion one was woken for), then takes from the ready queue.
    fn take(&self, max: usize, out: &mut Vec<(E, i64)>) -> io::Result<()> {
        let mut state = self.lock();
        let reap = self.reports.parked.load(Ordering::SeqCst) == 0;
        self.collect(&mut state, max, reap, out);
        Ok(())
    }

    /// Always [`CancelOutcome::Requested`], also for an id not in flight (the kernel
    /// answers `ENOENT` to it, [`RequestId::NONE`] included): the entry stays in flight
    /// until its own completion. A helper's request is taken back if no helper has
    /// started it (it completes with `ECANCELED`), else left to finish. A cancel must not fail because the SQ is full: a
    /// [`Cancel`] makes room for it or (SQPOLL) needs none, napping without the ring's lock
    /// between attempts (about a second at most, then it defers). Without SQPOLL the
    /// common case, a free slot, is tried first.
    fn cancel(&self, id: RequestId) -> io::Result<CancelOutcome<E>> {
        let runs_on = self.in_flight.lock().get_mut(id).map(|(_, on)| *on);
        if runs_on == Some(RunsOn::Helpers) {
            self.helpers.cancel(id);
            return Ok(CancelOutcome::Requested);
        }
        let queued = !self.sqpoll && self.lock().ring.try_cancel(id).is_ok();
        if !queued {
            let done = Cancel::new(id).run(|cancel| cancel.step(&mut self.lock().ring));
            if done == Cancelled::Sync {
                // A sync cancel posts no completion; caio's cancel always did, and users
                // wait for the eventfd after cancelling.
                self.eventfd_ref().signal();
            }
        }
        Ok(CancelOutcome::Requested)
    }

    /// Joins the helper threads once their requests are done; the ring stays open, and
    /// takes the large buffered requests from then on.
    fn shutdown(&self) {
        self.helpers.shutdown();
    }

    fn eventfd(&self) -> Option<&EventFd> {
        Some(self.eventfd_ref())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn visit(&self, visit: &mut dyn FnMut(&E) -> ControlFlow<()>) -> ControlFlow<()> {
        self.in_flight.visit(visit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::driver::testing::FakeEntry;
    use crate::test_util::require_uring;
    use crate::test_util::{pipe, temp_file};
    use crate::IoKind;

    const LONG: Duration = Duration::from_secs(10);

    fn new_driver(max_requests: u32, sqpoll: bool) -> UringDriver<FakeEntry> {
        let driver = UringDriver::new(max_requests, sqpoll).unwrap();
        assert_eq!(driver.sqpoll(), sqpoll);
        driver
    }

    fn dispatch_all(driver: &UringDriver<FakeEntry>, entries: Vec<FakeEntry>) -> Vec<RequestId> {
        let batch: Vec<_> = entries
            .into_iter()
            .map(|entry| Submission {
                id: RequestId::fresh(),
                entry,
            })
            .collect();
        let ids = batch.iter().map(|s| s.id).collect();
        let n = batch.len();
        let done = driver.dispatch(batch);
        assert_eq!(done.accepted, n);
        assert!(done.refused.is_empty() && done.error.is_none());
        ids
    }

    /// Flushes, then waits and takes until `n` completions came back.
    fn take_n(driver: &UringDriver<FakeEntry>, n: usize) -> Vec<(FakeEntry, i64)> {
        let mut out = Vec::new();
        driver.flush(&mut out).unwrap();
        let deadline = Instant::now() + LONG;
        while out.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} came", out.len());
            driver
                .wait(n - out.len(), Some(LONG), &mut || true)
                .unwrap();
            driver.take(usize::MAX, &mut out).unwrap();
        }
        assert_eq!(out.len(), n);
        out
    }

    /// Spins (yielding) until `cond` holds; fails after a long while.
    fn spin_until(mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + LONG;
        while !cond() {
            assert!(Instant::now() < deadline, "never happened");
            std::thread::yield_now();
        }
    }

    fn is_cancelled(res: i64) -> bool {
        res == -i64::from(libc::ECANCELED) || res == -i64::from(libc::EINTR)
    }

    #[test]
    fn a_vectored_write_then_read_come_back_with_their_bytes_in_order() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"");
        let entry = FakeEntry::writev(f.as_raw_fd(), b"vectored io", &[3, 0, 5, 3], 2);
        dispatch_all(&driver, vec![entry]);
        let wrote = take_n(&driver, 1);
        assert_eq!((wrote[0].0.kind, wrote[0].1), (IoKind::WriteV, 11));
        dispatch_all(
            &driver,
            vec![FakeEntry::readv(f.as_raw_fd(), &[1, 6, 0, 9], 1)],
        );
        let read = take_n(&driver, 1);
        assert_eq!(read[0].1, 12);
        assert_eq!(&read[0].0.buf[..12], b"\0vectored io");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn a_write_a_sync_then_a_read_come_back_with_their_bytes() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"");
        dispatch_all(
            &driver,
            vec![FakeEntry::write(f.as_raw_fd(), b"hello uring", 0)],
        );
        let wrote = take_n(&driver, 1);
        assert_eq!(wrote[0].1, 11);
        assert_eq!(wrote[0].0.kind, IoKind::Write);
        dispatch_all(&driver, vec![FakeEntry::sync(f.as_raw_fd())]);
        assert_eq!(take_n(&driver, 1)[0].1, 0);

        dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 64, 6)]);
        let read = take_n(&driver, 1);
        assert_eq!(read[0].1, 5);
        assert_eq!(&read[0].0.buf[..5], b"uring");
        assert_eq!(driver.in_flight(), 0);
        assert!(driver.eventfd().unwrap().read().unwrap() >= 1);
    }

    #[test]
    fn a_full_sq_takes_the_prefix_and_hands_the_rest_back_in_order_untouched() {
        require_uring!();
        let driver = new_driver(3, false);
        let sq = driver.lock().ring.sq_entries() as usize;
        let data: Vec<u8> = (0..=255).collect();
        let f = temp_file(&data);
        let batch: Vec<_> = (0..sq + 2)
            .map(|offset| {
                let mut entry = FakeEntry::read(f.as_raw_fd(), 1, offset as i64);
                entry.buf[0] = 0xEE;
                Submission {
                    id: RequestId::fresh(),
                    entry,
                }
            })
            .collect();
        let done = driver.dispatch(batch);
        assert_eq!(done.accepted, sq);
        assert!(matches!(done.error, Some(DispatchError::Full)));
        let offsets: Vec<i64> = done.refused.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [sq as i64, sq as i64 + 1]);
        assert!(done.refused.iter().all(|e| *e.buf == [0xEE]));
        assert_eq!(driver.in_flight(), sq);

        let mut got = take_n(&driver, sq);
        got.sort_by_key(|(e, _)| e.offset);
        for (i, (entry, res)) in got.iter().enumerate() {
            assert_eq!((entry.offset, *res, entry.buf[0]), (i as i64, 1, i as u8));
        }
        // The refused ones fit once the staged ones went to the kernel.
        let again = done
            .refused
            .into_iter()
            .map(|entry| Submission {
                id: RequestId::fresh(),
                entry,
            })
            .collect();
        assert_eq!(driver.dispatch(again).accepted, 2);
        assert_eq!(take_n(&driver, 2).len(), 2);
    }

    #[test]
    fn while_a_thread_is_parked_flush_and_take_leave_the_cq_to_it() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"parked");
        // Counted as a parked waiter would be, so that nothing races with the checks.
        driver.reports.parked.fetch_add(1, Ordering::SeqCst);
        dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 16, 0)]);
        let mut out = Vec::new();
        driver.flush(&mut out).unwrap();
        assert!(out.is_empty(), "flush took the parked thread's completion");
        assert!(crate::io::wait_readable(driver.ring_fd(), Some(LONG)).unwrap());
        driver.take(usize::MAX, &mut out).unwrap();
        assert!(out.is_empty(), "take reaped the parked thread's completion");
        assert_eq!(driver.in_flight(), 1);

        driver.reports.parked.fetch_sub(1, Ordering::SeqCst);
        driver.take(usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].0.buf[..6], b"parked");
    }

    #[test]
    fn a_parked_waiter_wakes_with_the_completion_another_threads_flush_submitted() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"for the waiter");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                driver.wait(1, Some(LONG), &mut || true).unwrap();
                let mut out = Vec::new();
                driver.take(usize::MAX, &mut out).unwrap();
                out
            });
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 1);
            dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 32, 0)]);
            let mut out = Vec::new();
            driver.flush(&mut out).unwrap();
            assert!(out.is_empty(), "flush took the parked thread's completion");
            let got = waiter.join().unwrap();
            assert_eq!(got.len(), 1, "the waiter was starved");
            assert_eq!(got[0].1, 14);
            assert_eq!(&got[0].0.buf[..14], b"for the waiter");
        });
        assert_eq!(driver.reports.parked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiter_leaving_wakes_the_other_parked_waiters() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"one for two");
        std::thread::scope(|s| {
            // Neither takes: the first to reap leaves the completion ready for the other,
            // which sees it only if it is woken.
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let began = Instant::now();
                        driver.wait(1, Some(LONG), &mut || true).unwrap();
                        began.elapsed()
                    })
                })
                .collect();
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 2);
            dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 16, 0)]);
            driver.flush(&mut Vec::new()).unwrap();
            for waiter in waiters {
                let took = waiter.join().unwrap();
                assert!(took < LONG / 2, "a parked waiter slept on for {took:?}");
            }
        });
        let mut out = Vec::new();
        driver.take(usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_wait_with_a_short_timeout_returns_after_it() {
        require_uring!();
        let driver = new_driver(8, false);
        let timeout = Duration::from_millis(50);
        let began = Instant::now();
        driver.wait(1, Some(timeout), &mut || true).unwrap();
        let took = began.elapsed();
        assert!(took >= timeout, "returned after {took:?}");
        assert!(took < LONG, "returned after {took:?}");
        assert_eq!(driver.reports.parked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_zero_timeout_wait_hands_staged_entries_over_without_parking() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"zero");
        dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 8, 0)]);
        assert_eq!(driver.lock().ring.pending(), 1);
        driver
            .wait(1, Some(Duration::ZERO), &mut || unreachable!())
            .unwrap();
        assert_eq!(driver.lock().ring.pending(), 0);
        assert_eq!(driver.reports.parked.load(Ordering::SeqCst), 0);
        assert_eq!(take_n(&driver, 1)[0].1, 4);
    }

    #[test]
    fn take_leaves_the_rest_announced_on_the_eventfd() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"abc");
        let reads = (0..3)
            .map(|i| FakeEntry::read(f.as_raw_fd(), 1, i))
            .collect();
        dispatch_all(&driver, reads);
        driver.wait(3, Some(LONG), &mut || true).unwrap();
        let efd = driver.eventfd().unwrap();
        assert!(efd.read().unwrap() >= 1);
        let mut out = Vec::new();
        driver.take(1, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(efd.read().unwrap() >= 1, "two left without a signal");
        driver.take(usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 3);
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// A no-op SIGUSR1 handler without `SA_RESTART`: the signal interrupts syscalls.
    fn install_sigusr1_handler() {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct (empty
        // mask, no flags); the handler is set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `action` is a live, initialised struct; the handler does nothing, so it
        // is async-signal-safe; the old action is not asked for.
        let ret = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
        assert_eq!(ret, 0);
    }

    /// Sends SIGUSR1 to the thread `tid` (joinable, not joined yet) until it reports on
    /// `done`: a signal that lands before the thread blocks interrupts nothing.
    fn signal_until(tid: libc::pthread_t, done: &mpsc::Receiver<()>) {
        loop {
            // SAFETY: `tid` is a thread not joined yet, so its id is still valid, and
            // SIGUSR1 has a handler.
            assert_eq!(unsafe { libc::pthread_kill(tid, libc::SIGUSR1) }, 0);
            if done.recv_timeout(Duration::from_millis(5)).is_ok() {
                return;
            }
        }
    }

    #[test]
    fn a_signal_during_a_wait_asks_on_signal_which_may_resume_it_or_end_it_interrupted() {
        require_uring!();
        install_sigusr1_handler();
        let driver = new_driver(8, false);
        let calls = AtomicUsize::new(0);
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                // SAFETY: pthread_self has no preconditions.
                tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
                // The first signal resumes the wait, the second ends it.
                let result = driver.wait(1, Some(LONG), &mut || {
                    calls.fetch_add(1, Ordering::SeqCst) == 0
                });
                done_tx.send(()).unwrap();
                result
            });
            let tid = tid_rx.recv().unwrap();
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 1);
            signal_until(tid, &done_rx);
            let err = waiter.join().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(driver.reports.parked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wait_ended_by_a_signal_announces_what_it_reaped_on_the_eventfd() {
        require_uring!();
        install_sigusr1_handler();
        let driver = new_driver(8, false);
        let f = temp_file(b"reaped");
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                // SAFETY: pthread_self has no preconditions.
                tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
                let result = driver.wait(2, Some(LONG), &mut || false);
                done_tx.send(()).unwrap();
                result
            });
            let tid = tid_rx.recv().unwrap();
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 1);
            dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), 16, 0)]);
            driver.flush(&mut Vec::new()).unwrap();
            // The waiter reaps it and waits on for a second one.
            spin_until(|| driver.lock().ready.len() == 1);
            let efd = driver.eventfd().unwrap();
            while efd.read().is_ok() {}
            signal_until(tid, &done_rx);
            let err = waiter.join().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted);
            assert!(efd.read().is_ok(), "a reaped completion went unannounced");
        });
        let mut out = Vec::new();
        driver.take(usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    fn a_cancelled_read_on_an_empty_pipe_comes_back_once(sqpoll: bool) {
        let driver = new_driver(8, sqpoll);
        let (r, _w) = pipe();
        let ids = dispatch_all(&driver, vec![FakeEntry::read(r.as_raw_fd(), 16, 0)]);
        let mut out = Vec::new();
        driver.flush(&mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(driver.in_flight(), 1);
        assert!(matches!(
            driver.cancel(ids[0]).unwrap(),
            CancelOutcome::Requested
        ));
        let got = take_n(&driver, 1);
        assert!(is_cancelled(got[0].1), "res {}", got[0].1);
        assert_eq!(got[0].0.fd, r.as_raw_fd());
        assert_eq!(driver.in_flight(), 0);
        // Exactly once: nothing more comes.
        let mut more = Vec::new();
        driver
            .wait(1, Some(Duration::from_millis(20)), &mut || true)
            .unwrap();
        driver.take(usize::MAX, &mut more).unwrap();
        assert!(more.is_empty());
    }

    #[test]
    fn a_cancelled_read_on_an_empty_pipe_comes_back_once_as_cancelled() {
        require_uring!();
        a_cancelled_read_on_an_empty_pipe_comes_back_once(false);
    }

    #[test]
    fn a_cancelled_read_on_an_empty_pipe_comes_back_once_as_cancelled_under_sqpoll() {
        require_uring!();
        if !Ring::probe_sqpoll() {
            eprintln!("SQPOLL not allowed here; skipped");
            return;
        }
        a_cancelled_read_on_an_empty_pipe_comes_back_once(true);
    }

    fn a_cancel_of_no_request_is_requested_and_touches_no_other(sqpoll: bool) {
        let driver = new_driver(8, sqpoll);
        let (r, w) = pipe();
        dispatch_all(&driver, vec![FakeEntry::read(r.as_raw_fd(), 16, 0)]);
        let mut out = Vec::new();
        driver.flush(&mut out).unwrap();
        let efd = driver.eventfd().unwrap();
        while efd.read().is_ok() {}
        assert!(matches!(
            driver.cancel(RequestId::NONE).unwrap(),
            CancelOutcome::Requested
        ));
        // The cancel's own completion (a sentinel) signals the eventfd, or the driver
        // does, for a sync cancel (SQPOLL), which posts none.
        assert!(crate::io::wait_readable(efd.as_raw_fd(), Some(LONG)).unwrap());
        driver.take(usize::MAX, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(driver.in_flight(), 1, "the read is untouched");

        std::io::Write::write_all(&mut std::fs::File::from(w), b"done").unwrap();
        let got = take_n(&driver, 1);
        assert_eq!((got[0].1, &got[0].0.buf[..4]), (4, &b"done"[..]));
    }

    #[test]
    fn a_cancel_of_no_request_is_requested_announced_and_touches_no_other() {
        require_uring!();
        a_cancel_of_no_request_is_requested_and_touches_no_other(false);
    }

    #[test]
    fn a_cancel_of_no_request_is_requested_announced_and_touches_no_other_under_sqpoll() {
        require_uring!();
        if !Ring::probe_sqpoll() {
            eprintln!("SQPOLL not allowed here; skipped");
            return;
        }
        a_cancel_of_no_request_is_requested_and_touches_no_other(true);
    }

    /// Bytes no fresh (zeroed) read buffer holds.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    fn runs_on(driver: &UringDriver<FakeEntry>, id: RequestId) -> Option<RunsOn> {
        driver.in_flight.lock().get_mut(id).map(|(_, on)| *on)
    }

    fn eventfd_readable(driver: &UringDriver<FakeEntry>) -> bool {
        let fd = driver.eventfd().unwrap().as_raw_fd();
        crate::io::wait_readable(fd, Some(Duration::ZERO)).unwrap()
    }

    const LARGE: usize = 256 * 1024;

    #[test]
    fn a_large_buffered_read_runs_on_a_helper_and_a_small_one_on_the_ring() {
        require_uring!();
        let driver = new_driver(8, false);
        let data = pattern(LARGE);
        let f = temp_file(&data);
        let ids = dispatch_all(
            &driver,
            vec![
                FakeEntry::read(f.as_raw_fd(), LARGE, 0),
                FakeEntry::read(f.as_raw_fd(), 16, 0),
            ],
        );
        assert_eq!(runs_on(&driver, ids[0]), Some(RunsOn::Helpers));
        assert_eq!(runs_on(&driver, ids[1]), Some(RunsOn::Ring));
        assert_eq!(
            driver.lock().ring.pending(),
            1,
            "only the small one is staged"
        );
        let mut got = take_n(&driver, 2);
        got.sort_by_key(|(e, _)| e.buf.len());
        assert_eq!(got[0].1, 16);
        assert_eq!(&got[0].0.buf[..], &data[..16]);
        assert_eq!(got[1].1, LARGE as i64);
        assert!(got[1].0.buf[..] == data[..], "the helper read other bytes");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn a_large_write_on_a_helper_lands_where_asked() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(b"");
        let data = pattern(LARGE);
        let ids = dispatch_all(&driver, vec![FakeEntry::write(f.as_raw_fd(), &data, 7)]);
        assert_eq!(runs_on(&driver, ids[0]), Some(RunsOn::Helpers));
        assert_eq!(take_n(&driver, 1)[0].1, LARGE as i64);
        let mut back = vec![0u8; LARGE + 7];
        // SAFETY: `back` is a local buffer of the length given.
        let n = unsafe { libc::pread(f.as_raw_fd(), back.as_mut_ptr().cast(), back.len(), 0) };
        assert_eq!(n, (LARGE + 7) as isize);
        assert_eq!(&back[..7], &[0; 7]);
        assert!(back[7..] == data[..]);
    }

    #[test]
    fn a_parked_waiter_wakes_for_a_helper_completion_and_leaves_the_loops_eventfd_alone() {
        require_uring!();
        let driver = new_driver(8, false);
        let data = pattern(LARGE);
        let f = temp_file(&data);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let began = Instant::now();
                driver.wait(1, Some(LONG), &mut || true).unwrap();
                let took = began.elapsed();
                let mut out = Vec::new();
                driver.take(usize::MAX, &mut out).unwrap();
                (took, out)
            });
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 1);
            // Nothing reaches the ring: only the helper can wake the waiter.
            dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), LARGE, 0)]);
            let (took, got) = waiter.join().unwrap();
            assert!(took < LONG / 2, "the waiter slept on for {took:?}");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1, LARGE as i64);
        });
        assert!(eventfd_readable(&driver), "the wait ate the loop's wake-up");
    }

    #[test]
    fn a_loop_resetting_the_eventfd_does_not_leave_a_parked_waiter_asleep() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(&pattern(LARGE));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                driver.wait(1, Some(LONG), &mut || true).unwrap();
                done.store(true, Ordering::SeqCst);
            });
            spin_until(|| driver.reports.parked.load(Ordering::SeqCst) == 1);
            let began = Instant::now();
            dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), LARGE, 0)]);
            // An event loop's reader, resetting the eventfd as soon as it is signalled.
            while !done.load(Ordering::SeqCst) && began.elapsed() < LONG {
                let _ = driver.eventfd().unwrap().read();
                std::thread::yield_now();
            }
            waiter.join().unwrap();
            assert!(began.elapsed() < LONG / 2, "the parked waiter slept on");
        });
        assert_eq!(take_n(&driver, 1)[0].1, LARGE as i64);
    }

    #[test]
    fn while_a_thread_is_parked_take_leaves_the_helpers_completions_to_it() {
        require_uring!();
        let driver = new_driver(8, false);
        let f = temp_file(&pattern(LARGE));
        driver.reports.parked.fetch_add(1, Ordering::SeqCst);
        dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), LARGE, 0)]);
        spin_until(|| !driver.reports.queue.is_empty());
        let mut out = Vec::new();
        driver.take(usize::MAX, &mut out).unwrap();
        assert!(out.is_empty(), "take took the parked thread's completion");
        driver.reports.parked.fetch_sub(1, Ordering::SeqCst);
        driver.take(usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_cancelled_helper_request_comes_back_cancelled_untouched_or_complete() {
        require_uring!();
        const MIB: usize = 1024 * 1024;
        let driver = new_driver(64, false);
        let data = pattern(MIB);
        let f = temp_file(&data);
        let entries = (0..32)
            .map(|_| FakeEntry::read(f.as_raw_fd(), MIB, 0))
            .collect();
        let ids = dispatch_all(&driver, entries);
        // Two helpers take them in order: the last ones are still queued.
        for &id in &ids[16..] {
            assert!(matches!(driver.cancel(id), Ok(CancelOutcome::Requested)));
        }
        let got = take_n(&driver, 32);
        let mut cancelled = 0;
        for (entry, res) in &got {
            if *res == -i64::from(libc::ECANCELED) {
                cancelled += 1;
                assert!(entry.buf.iter().all(|&b| b == 0), "a cancelled read wrote");
            } else {
                assert_eq!(*res, MIB as i64);
                assert!(entry.buf[..] == data[..]);
            }
        }
        assert!(cancelled >= 1, "no queued request was taken back");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn after_shutdown_large_requests_go_to_the_ring() {
        require_uring!();
        let driver = new_driver(8, false);
        let data = pattern(LARGE);
        let f = temp_file(&data);
        dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), LARGE, 0)]);
        assert_eq!(take_n(&driver, 1)[0].1, LARGE as i64);
        driver.shutdown();
        let ids = dispatch_all(&driver, vec![FakeEntry::read(f.as_raw_fd(), LARGE, 0)]);
        assert_eq!(runs_on(&driver, ids[0]), Some(RunsOn::Ring));
        let got = take_n(&driver, 1);
        assert_eq!(got[0].1, LARGE as i64);
        assert!(got[0].0.buf[..] == data[..]);
    }

    #[test]
    fn a_ring_size_that_overflows_is_einval() {
        match UringDriver::<FakeEntry>::new(u32::MAX, false) {
            Err(UringSetupError::Ring(e)) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL)),
            Err(e) => panic!("wrong error {e:?}"),
            Ok(_) => panic!("a ring of 2^32 entries"),
        }
    }
}
