//! An io_uring instance (through the `io-uring` crate) with caio's setup and drain rules.
//!
//! Requests carry a [`RequestId`] in `user_data`; [`SENTINEL`] marks our own bookkeeping
//! entries (cancels, wake-ups), which are consumed on reap and never reported.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use caio_core::{Completion, RequestId};
use io_uring::{opcode, squeue, types, IoUring};

use crate::{IoKind, IoRequest};

/// `user_data` of entries that complete no request.
pub const SENTINEL: u64 = RequestId::NONE.0;

/// Requests larger than this are marked `IOSQE_ASYNC`: the kernel runs them on its
/// workers instead of inside `io_uring_enter` on the caller's (event loop's) thread.
pub const PUNT_ABOVE: usize = 64 * 1024;

/// SQPOLL kernel thread idle time before it sleeps, in milliseconds (as caio).
const SQ_THREAD_IDLE_MS: u32 = 100;

/// The submission queue has no free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull;

/// One io_uring instance with its eventfd registered.
pub struct Ring {
    ring: IoUring,
    sqpoll: bool,
    /// Entries ever staged (published or about to be): with [`pending`](Self::pending) it
    /// tells how many the kernel has taken, which is how a [`Cancel`] knows that its
    /// target reached the kernel even while others stage more.
    staged: u64,
    /// Cancels that found no SQ slot within their time ([`Cancelled::Deferred`]): staged
    /// first by the next [`submit`](Self::submit) with room; dropped when the target's
    /// completion is reaped first.
    deferred: Vec<RequestId>,
}

/// What became of a [`Cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Done with `IORING_REGISTER_SYNC_CANCEL`, which posts no completion of its own: a
    /// caller that promises an eventfd signal per cancel signals it itself.
    Sync,
    /// Staged as an `ASYNC_CANCEL` entry (its completion is a sentinel).
    Queued,
    /// The SQ had no room within [`CANCEL_LIMIT`]: the cancel goes to the kernel with the
    /// next submission that finds room (unless the target completes first).
    Deferred,
}

fn is_fallback_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EACCES)
    )
}

/// Runs a probe's `io_uring_setup` on a short-lived thread. The first ring a thread
/// creates gives that thread's kernel worker pool (io-wq, shared by all its rings) its
/// size: at most that ring's SQ entries run at once on regular files. A 1-entry probe on
/// the caller's thread would leave every later ring of that thread one worker (syncs and
/// large reads one at a time).
fn on_a_thread_of_its_own<T: Send>(probe: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(probe).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl Ring {
    /// Sets up a ring of at least `entries` SQ slots, trying `SQPOLL` when asked, and falling
    /// back (on EINVAL, EPERM or EACCES) to setups with fewer features, as caio does:
    /// `[SQPOLL|NO_SQARRAY, SQPOLL, plain]` or `[NO_SQARRAY, plain]`. Registers `eventfd`
    /// with plain `IORING_REGISTER_EVENTFD`, which signals every completion.
    pub fn new(entries: u32, sqpoll: bool, eventfd: RawFd) -> io::Result<Self> {
        let table: &[(bool, bool)] = if sqpoll {
            &[(true, true), (true, false), (false, false)]
        } else {
            &[(false, true), (false, false)]
        };
        let mut last = None;
        for &(with_sqpoll, no_sqarray) in table {
            let mut builder = IoUring::builder();
            if with_sqpoll {
                builder.setup_sqpoll(SQ_THREAD_IDLE_MS);
            }
            if no_sqarray {
                builder.setup_no_sqarray();
            }
            match builder.build(entries) {
                Ok(ring) => {
                    ring.submitter().register_eventfd(eventfd)?;
                    let sqpoll = ring.params().is_setup_sqpoll();
                    return Ok(Self {
                        ring,
                        sqpoll,
                        staged: 0,
                        deferred: Vec::new(),
                    });
                }
                Err(e) if is_fallback_errno(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
    }

    /// Whether this process may create rings at all (`io_uring_setup(1)`).
    pub fn probe() -> io::Result<()> {
        on_a_thread_of_its_own(|| IoUring::<squeue::Entry>::new(1).map(drop))
    }

    /// Whether a SQPOLL ring can be created here.
    pub fn probe_sqpoll() -> bool {
        // The shortest idle time: the probe's polling thread should not spin on after it.
        on_a_thread_of_its_own(|| {
            IoUring::<squeue::Entry>::builder()
                .setup_sqpoll(1)
                .build(1)
                .is_ok()
        })
    }

    /// Whether SQPOLL was negotiated.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// The ring's own descriptor.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Slots in the submission queue.
    pub fn sq_entries(&self) -> u32 {
        self.ring.params().sq_entries()
    }

    /// Starts a batch of submissions. Free space is judged from one snapshot of the
    /// kernel's head for the whole batch; everything staged is published when the
    /// [`Stager`] is dropped.
    pub fn stager(&mut self) -> Stager<'_> {
        Stager {
            sq: self.ring.submission(),
            staged: &mut self.staged,
        }
    }

    /// Entries the kernel has taken from the SQ, ever.
    fn taken(&mut self) -> u64 {
        self.staged - self.pending() as u64
    }

    /// Entries staged but not yet consumed by the kernel.
    pub fn pending(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Hands staged entries to the kernel (waking the SQPOLL thread if it sleeps, with the
    /// fence the kernel documents), deferred cancels first staged where room allows.
    /// Non-SQPOLL: repeats until the kernel took them all. Waits for no completion (and
    /// for no SQ room): page-cache reads and small writes often complete inside this
    /// call; the kernel issues the rest without blocking or hands it to its workers.
    pub fn submit(&mut self) -> io::Result<usize> {
        if !self.deferred.is_empty() {
            let mut stager = Stager {
                sq: self.ring.submission(),
                staged: &mut self.staged,
            };
            while let Some(&target) = self.deferred.last() {
                if stager.push_cancel(target).is_err() {
                    break;
                }
                self.deferred.pop();
            }
        }
        if self.sqpoll {
            return self.ring.submit();
        }
        let mut total = 0;
        loop {
            let pending = self.pending();
            if pending == 0 {
                return Ok(total);
            }
            let took = self.ring.submit()?;
            if took == 0 {
                // The kernel made no progress; report what was done rather than spin.
                return Ok(total);
            }
            total += took;
        }
    }

    /// Asks the kernel to post whatever it has (task work, overflowed CQEs) without waiting.
    /// Like any `io_uring_enter`, it also hands over entries staged but not yet submitted.
    pub fn get_events(&self) -> io::Result<()> {
        match self.ring.submitter().submit_and_wait(0) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Whether the kernel holds completions that did not fit in the CQ (its overflow list,
    /// `IORING_SQ_CQ_OVERFLOW`). They reach the CQ only through an `io_uring_enter` with
    /// `GETEVENTS`; until then the ring's fd polls readable while the CQ looks empty.
    pub fn cq_overflow(&mut self) -> bool {
        self.ring.submission().cq_overflow()
    }

    /// Moves every completion to `out` (sentinels are consumed, not moved) and commits the
    /// CQ head, including those the kernel kept on its overflow list: while it reports one,
    /// the CQ is emptied, the kernel asked to refill it from the list, and the CQ read again.
    /// Returns how many real completions were moved.
    pub fn reap(&mut self, out: &mut VecDeque<Completion>) -> usize {
        let before = out.len();
        loop {
            self.reap_cq(out);
            if !self.cq_overflow() {
                break;
            }
            // Stop if the kernel refused the refill or moved nothing: the next reap tries
            // again, and no loop here spins on a ring that makes no progress.
            if self.get_events().is_err() || self.ring.completion().is_empty() {
                break;
            }
        }
        out.len() - before
    }

    /// One pass over the CQ as it is now.
    fn reap_cq(&mut self, out: &mut VecDeque<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if !self.deferred.is_empty() {
                // Its target is over: nothing left to cancel.
                self.deferred.retain(|&t| t.0 != cqe.user_data());
            }
            if cqe.user_data() != SENTINEL {
                out.push_back(Completion {
                    id: RequestId(cqe.user_data()),
                    res: cqe.result() as i64,
                });
            }
        }
        drop(cq); // publishes the new head
    }

    /// Stages an `ASYNC_CANCEL` of `target` (its own completion is a sentinel) and hands it
    /// to the kernel; `RingFull` if the SQ has no free slot right now.
    pub fn try_cancel(&mut self, target: RequestId) -> Result<(), RingFull> {
        self.stager().push_cancel(target)?;
        // Best effort, as caio: a staged cancel reaches the kernel at the latest with the
        // next submit or wait.
        let _ = self.submit();
        Ok(())
    }

    /// Cancels `target` (see [`Cancel`]) with this ring to itself; naps between attempts.
    pub fn cancel(&mut self, target: RequestId) -> Cancelled {
        Cancel::new(target).run(|cancel| cancel.step(self))
    }

    /// `IORING_REGISTER_SYNC_CANCEL` of `target`, not waiting for a running request (zero
    /// timeout: `ETIME`). `ENOENT` if the kernel holds no such request.
    fn sync_cancel(&self, target: RequestId) -> io::Result<()> {
        let reg = SyncCancelReg {
            addr: target.0,
            fd: -1,
            flags: 0, // match by user_data
            timeout: KernelTimespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            opcode: 0,
            pad: [0; 7],
            pad2: [0; 3],
        };
        // SAFETY: `reg` is a complete, zero-padded `io_uring_sync_cancel_reg` that lives on
        // our stack for the whole call; the kernel only reads it (nr_args = 1), and the fd
        // is this ring's own.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd(),
                IORING_REGISTER_SYNC_CANCEL,
                &reg as *const SyncCancelReg,
                1u32,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Blocks until the ring has something to reap (completions in its CQ, or on its
    /// overflow list: [`Ring::reap`] fetches both) or `timeout` passes (`None`: forever);
    /// `false` on timeout. Polling the ring's fd consumes nothing, so other waiters and
    /// the eventfd are unaffected; the driver polls [`Ring::fd`] the same way without
    /// holding the ring's lock. A signal ends the wait with an `Interrupted` error.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        crate::io::wait_readable(self.fd(), timeout)
    }
}

/// How long a [`Cancel`] waits for the SQPOLL thread to take its target before it queues
/// the cancel as an entry of its own instead.
const SQ_TAKE_LIMIT: Duration = Duration::from_millis(100);

/// How long a [`Cancel`] looks for an SQ slot before it defers the cancel
/// ([`Cancelled::Deferred`]). The SQPOLL thread frees slots within microseconds unless the
/// CPUs are saturated, so this is only reached on a ring whose kernel side is stuck.
pub const CANCEL_LIMIT: Duration = Duration::from_secs(1);

/// Longest nap between two attempts of a [`Cancel`].
const CANCEL_NAP_MAX: Duration = Duration::from_millis(1);

/// Cancels a request without failing because the SQ is momentarily full, and without
/// holding the ring while it waits: each [`step`](Self::step) is one attempt that never
/// blocks (the caller lends it the ring), and between attempts [`run`](Self::run) naps
/// with the ring released, so other threads submit and reap meanwhile. Every wait is
/// bounded: at most [`SQ_TAKE_LIMIT`] for the SQPOLL thread, at most [`CANCEL_LIMIT`] in
/// all, after which the cancel is deferred rather than failed.
///
/// With SQPOLL, whose thread frees SQ slots only when it gets to run, a cancel must leave
/// the SQ no fuller than it found it, or the next submission finds no room (an adapter
/// reuses a cancelled op's place at once): once the thread has taken every entry staged
/// before the cancel began (the target among them; entries staged meanwhile by others do
/// not matter), the target is cancelled with no entry at all
/// (`IORING_REGISTER_SYNC_CANCEL`). Otherwise (no SQPOLL, the thread did not get there in
/// time, or a kernel before 6.0) it is a queued `ASYNC_CANCEL`, staged as soon as a slot
/// is free: without SQPOLL, handing the staged entries to the kernel frees them all.
pub struct Cancel {
    target: RequestId,
    /// [`Ring::staged`] when the first attempt began: the target is in the kernel once it
    /// has taken that many entries.
    mark: Option<u64>,
    /// Whether the SQPOLL path (a sync cancel) is still to be tried.
    sync: bool,
    began: Instant,
    nap: Duration,
}

impl Cancel {
    /// A cancel of `target`; its time starts now.
    pub fn new(target: RequestId) -> Self {
        Self {
            target,
            mark: None,
            sync: false,
            began: Instant::now(),
            nap: Duration::from_micros(10),
        }
    }

    /// Attempts until one finishes: `step` lends the ring to [`step`](Self::step) (taking
    /// the ring's lock only for it); the naps in between run without it.
    pub fn run(mut self, mut step: impl FnMut(&mut Self) -> Option<Cancelled>) -> Cancelled {
        loop {
            if let Some(done) = step(&mut self) {
                return done;
            }
            std::thread::sleep(self.nap);
            self.nap = (self.nap * 2).min(CANCEL_NAP_MAX);
        }
    }

    /// One attempt; never blocks. `None`: nothing could be done yet, try again after a
    /// nap without the ring.
    pub fn step(&mut self, ring: &mut Ring) -> Option<Cancelled> {
        let mark = match self.mark {
            Some(mark) => mark,
            None => {
                self.sync = ring.sqpoll;
                *self.mark.insert(ring.staged)
            }
        };
        let elapsed = self.began.elapsed();
        if self.sync {
            if ring.taken() >= mark {
                self.sync = false;
                match ring.sync_cancel(self.target).map_err(|e| e.raw_os_error()) {
                    // Cancelled, still running (asked to stop), or completed already:
                    // either way its own completion follows (or came) through the CQ.
                    Ok(()) | Err(Some(libc::EALREADY | libc::ETIME | libc::ENOENT)) => {
                        return Some(Cancelled::Sync);
                    }
                    // EINVAL before Linux 6.0, or a refusal: queue the cancel instead.
                    _ => {}
                }
            } else if elapsed < SQ_TAKE_LIMIT {
                // Wakes the polling thread if it sleeps; it takes the entries while we nap.
                let _ = ring.submit();
                return None;
            } else {
                self.sync = false;
            }
        }
        if ring.try_cancel(self.target).is_ok() {
            return Some(Cancelled::Queued);
        }
        // The SQ is full: hand its entries over (without SQPOLL the kernel takes them all
        // at once; with it, this wakes the thread), then look once more.
        let _ = ring.submit();
        if ring.try_cancel(self.target).is_ok() {
            return Some(Cancelled::Queued);
        }
        if elapsed >= CANCEL_LIMIT {
            ring.deferred.push(self.target);
            return Some(Cancelled::Deferred);
        }
        None
    }
}

/// `IORING_REGISTER_SYNC_CANCEL` (Linux 6.0; older kernels answer `EINVAL`).
const IORING_REGISTER_SYNC_CANCEL: libc::c_uint = 24;

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_sync_cancel_reg` (include/uapi/linux/io_uring.h); the pads must be 0.
#[repr(C)]
struct SyncCancelReg {
    addr: u64,
    fd: i32,
    flags: u32,
    timeout: KernelTimespec,
    opcode: u8,
    pad: [u8; 7],
    pad2: [u64; 3],
}

const _: () = assert!(std::mem::size_of::<SyncCancelReg>() == 64);

/// A batch of submissions against one snapshot of the submission queue.
pub struct Stager<'a> {
    sq: io_uring::SubmissionQueue<'a>,
    staged: &'a mut u64,
}

impl Stager<'_> {
    fn push(&mut self, entry: &squeue::Entry) -> Result<(), RingFull> {
        // SAFETY: callers only pass entries whose buffers satisfy `push_request`'s contract
        // or that reference no memory at all (cancel, nop).
        unsafe { self.sq.push(entry) }.map_err(|_| RingFull)?;
        *self.staged += 1;
        Ok(())
    }

    /// Whether the batch has no free slot left.
    pub fn is_full(&self) -> bool {
        self.sq.is_full()
    }

    /// Stages `request` under `id`.
    ///
    /// # Safety
    /// The request's buffer must stay valid (and unread/unwritten by anyone else for
    /// reads) until the completion for `id` has been reaped; for a vectored kind, `buf`
    /// is an iovec array that must stay valid so, with every segment it describes.
    pub unsafe fn push_request(
        &mut self,
        id: RequestId,
        request: &IoRequest,
    ) -> Result<(), RingFull> {
        let fd = types::Fd(request.fd);
        let offset = request.offset as u64;
        let len = u32::try_from(request.len).unwrap_or(u32::MAX);
        let entry = match request.kind {
            IoKind::Read => opcode::Read::new(fd, request.buf, len)
                .offset(offset)
                .rw_flags(request.rw_flags)
                .build(),
            IoKind::Write => opcode::Write::new(fd, request.buf, len)
                .offset(offset)
                .rw_flags(request.rw_flags)
                .build(),
            // A vectored request's `buf`/`len` are the iovec array and its count.
            IoKind::ReadV => opcode::Readv::new(fd, request.buf.cast(), len)
                .offset(offset)
                .rw_flags(request.rw_flags)
                .build(),
            IoKind::WriteV => opcode::Writev::new(fd, request.buf.cast(), len)
                .offset(offset)
                .rw_flags(request.rw_flags)
                .build(),
            IoKind::Fsync => opcode::Fsync::new(fd).build(),
            IoKind::Fdsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        // A request that asked not to wait is never punted to a worker: it gets its
        // `EAGAIN` from the inline attempt.
        let nowait = request.rw_flags & libc::RWF_NOWAIT != 0;
        // SAFETY: this function's contract (a vectored request's iovecs are valid).
        let bytes = unsafe { request.byte_len() };
        let entry = if bytes > PUNT_ABOVE && !nowait {
            entry.flags(squeue::Flags::ASYNC)
        } else {
            entry
        };
        self.push(&entry.user_data(id.0))
    }

    /// Stages an `ASYNC_CANCEL` of `target`; its own completion is a sentinel.
    pub fn push_cancel(&mut self, target: RequestId) -> Result<(), RingFull> {
        self.push(
            &opcode::AsyncCancel::new(target.0)
                .build()
                .user_data(SENTINEL),
        )
    }

    /// Stages a no-op whose only effect is a CQE (wakes threads parked on the ring).
    pub fn push_wakeup(&mut self) -> Result<(), RingFull> {
        self.push(&opcode::Nop::new().build().user_data(SENTINEL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::require_uring;
    use crate::test_util::temp_file;
    use crate::EventFd;
    use std::os::fd::FromRawFd;

    fn reap_until(ring: &mut Ring, n: usize) -> VecDeque<Completion> {
        let mut out = VecDeque::new();
        while out.len() < n {
            ring.reap(&mut out);
            if out.len() < n {
                ring.wait_readable(Some(Duration::from_secs(10))).unwrap();
            }
        }
        out
    }

    #[test]
    fn a_read_completes_with_its_id_and_signals_the_eventfd() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        let f = temp_file(b"hello uring");
        let mut buf = vec![0u8; 64];
        let req = IoRequest {
            kind: IoKind::Read,
            fd: f.as_raw_fd(),
            offset: 6,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            rw_flags: 0,
        };
        let id = RequestId::fresh();
        // SAFETY: `buf` outlives the reap below.
        unsafe { ring.stager().push_request(id, &req) }.unwrap();
        assert_eq!(ring.pending(), 1);
        ring.submit().unwrap();
        let got = reap_until(&mut ring, 1);
        assert_eq!(got[0], Completion { id, res: 5 });
        assert_eq!(&buf[..5], b"uring");
        assert!(efd.read().unwrap() >= 1);
    }

    #[test]
    fn a_nowait_read_of_an_empty_pipe_completes_with_eagain() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are fresh and owned by nothing else (closed on drop).
        let [r, _w] = fds.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        let mut buf = vec![0u8; 8];
        let req = IoRequest {
            kind: IoKind::Read,
            fd: r.as_raw_fd(),
            offset: -1,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            rw_flags: libc::RWF_NOWAIT,
        };
        let id = RequestId::fresh();
        // SAFETY: `buf` outlives the reap below.
        unsafe { ring.stager().push_request(id, &req) }.unwrap();
        ring.submit().unwrap();
        // Without the flag the read would wait for a writer that never comes.
        let got = reap_until(&mut ring, 1);
        assert_eq!(
            got[0],
            Completion {
                id,
                res: -(libc::EAGAIN as i64)
            }
        );
    }

    #[test]
    fn one_snapshot_per_batch_makes_a_full_ring_deterministic() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(2, false, efd.as_raw_fd()).unwrap();
        let cap = ring.sq_entries() as usize;
        let mut stager = ring.stager();
        for _ in 0..cap {
            stager.push_wakeup().unwrap();
        }
        assert!(stager.is_full());
        assert_eq!(stager.push_wakeup(), Err(RingFull));
        drop(stager);
        assert_eq!(ring.pending(), cap);
        ring.submit().unwrap();
        assert_eq!(ring.pending(), 0);
        // Wake-ups are sentinels: consumed, never reported.
        ring.wait_readable(Some(Duration::from_secs(10))).unwrap();
        let mut out = VecDeque::new();
        assert_eq!(ring.reap(&mut out), 0);
    }

    #[test]
    fn a_cancel_of_an_unknown_id_completes_as_a_sentinel_only() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        ring.stager().push_cancel(RequestId::fresh()).unwrap();
        ring.submit().unwrap();
        ring.wait_readable(Some(Duration::from_secs(10))).unwrap();
        let mut out = VecDeque::new();
        assert_eq!(ring.reap(&mut out), 0);
        assert!(
            efd.read().unwrap() >= 1,
            "the cancel's CQE signals the eventfd"
        );
    }

    fn push_nop(stager: &mut Stager<'_>, user_data: u64) -> Result<(), RingFull> {
        stager.push(&opcode::Nop::new().build().user_data(user_data))
    }

    #[test]
    fn completions_past_the_cq_are_reaped_from_the_overflow_list() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        let sq = ring.sq_entries() as u64;
        let cq = ring.ring.completion().capacity() as u64;
        let total = 4 * cq;
        // Each batch completes inside its submit; nobody reaps in between.
        for first in (0..total).step_by(sq as usize) {
            let mut stager = ring.stager();
            for user_data in first..(first + sq).min(total) {
                push_nop(&mut stager, user_data).unwrap();
            }
            drop(stager);
            ring.submit().unwrap();
        }
        assert!(ring.cq_overflow(), "the CQ should have overflowed");
        let mut out = VecDeque::new();
        assert_eq!(ring.reap(&mut out), total as usize);
        let ids: Vec<u64> = out.iter().map(|c| c.id.0).collect();
        assert_eq!(ids, (0..total).collect::<Vec<_>>());
        assert!(!ring.cq_overflow());
        // Nothing left: the ring's fd no longer polls readable.
        assert!(!ring.wait_readable(Some(Duration::from_millis(20))).unwrap());
    }

    fn cancel_on_a_full_sq(sqpoll: bool) {
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, sqpoll, efd.as_raw_fd()).unwrap();
        assert_eq!(ring.sqpoll(), sqpoll);
        let sq = ring.sq_entries() as u64;
        let mut stager = ring.stager();
        for user_data in 0..sq {
            push_nop(&mut stager, user_data).unwrap();
        }
        drop(stager); // staged, and (without SQPOLL) not handed to the kernel
        if !sqpoll {
            assert_eq!(ring.try_cancel(RequestId::fresh()), Err(RingFull));
        }
        let done = ring.cancel(RequestId::fresh());
        if sqpoll {
            // Sync on Linux 6.0+, else queued once the thread took some entries.
            assert_ne!(done, Cancelled::Deferred);
        } else {
            assert_eq!(done, Cancelled::Queued);
        }
        ring.submit().unwrap();
        let got = reap_until(&mut ring, sq as usize);
        assert_eq!(got.len(), sq as usize);
    }

    #[test]
    fn a_cancel_makes_room_on_a_full_sq() {
        require_uring!();
        cancel_on_a_full_sq(false);
    }

    #[test]
    fn a_cancel_waits_for_room_on_a_full_sqpoll_ring() {
        require_uring!();
        if !Ring::probe_sqpoll() {
            eprintln!("SQPOLL not allowed here; skipped");
            return;
        }
        cancel_on_a_full_sq(true);
    }

    #[test]
    fn a_cancel_waits_for_the_polling_thread_in_bounded_naps_without_the_ring() {
        require_uring!();
        if !Ring::probe_sqpoll() {
            eprintln!("SQPOLL not allowed here; skipped");
            return;
        }
        let efd = EventFd::new().unwrap();
        let ring = std::sync::Mutex::new(Ring::new(4, true, efd.as_raw_fd()).unwrap());
        // A target the thread never seems to take: the sync path must give up in time.
        let mut cancel = Cancel::new(RequestId::fresh());
        cancel.mark = Some(u64::MAX);
        cancel.sync = true;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let began = Instant::now();
        let (done, longest_wait) = std::thread::scope(|s| {
            let other = s.spawn(|| {
                // Another thread using the ring meanwhile gets it at once.
                let mut longest = Duration::ZERO;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let asked = Instant::now();
                    let guard = ring.lock().unwrap();
                    longest = longest.max(asked.elapsed());
                    drop(guard);
                    std::thread::sleep(Duration::from_micros(200));
                }
                longest
            });
            let done = cancel.run(|c| c.step(&mut ring.lock().unwrap()));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            (done, other.join().unwrap())
        });
        let took = began.elapsed();
        assert_eq!(done, Cancelled::Queued);
        assert!(took >= SQ_TAKE_LIMIT, "gave up after {took:?}");
        assert!(took < CANCEL_LIMIT, "took {took:?}");
        assert!(
            longest_wait < SQ_TAKE_LIMIT / 2,
            "the ring was held for {longest_wait:?}"
        );
    }

    #[test]
    fn a_deferred_cancel_goes_out_with_the_next_submit_that_has_room() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        ring.deferred.push(RequestId::fresh());
        ring.submit().unwrap();
        assert!(ring.deferred.is_empty());
        ring.wait_readable(Some(Duration::from_secs(10))).unwrap();
        let mut out = VecDeque::new();
        assert_eq!(
            ring.reap(&mut out),
            0,
            "the cancel's completion is a sentinel"
        );
        assert!(efd.read().unwrap() >= 1);
    }

    #[test]
    fn a_deferred_cancel_is_dropped_once_its_target_completes() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let mut ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        let sq = ring.sq_entries() as u64;
        let mut stager = ring.stager();
        for user_data in 0..sq {
            push_nop(&mut stager, user_data).unwrap();
        }
        drop(stager);
        ring.deferred.push(RequestId(0)); // no room for it in this submit
        ring.submit().unwrap();
        assert_eq!(ring.deferred, vec![RequestId(0)]);
        let got = reap_until(&mut ring, sq as usize);
        assert_eq!(got.len(), sq as usize);
        assert!(ring.deferred.is_empty(), "its target is over");
    }

    #[test]
    fn waiting_on_an_idle_ring_times_out() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        assert!(!ring.wait_readable(Some(Duration::from_millis(20))).unwrap());
    }
}
