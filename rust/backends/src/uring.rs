//! An io_uring instance (through the `io-uring` crate) with caio's setup and drain rules.
//!
//! Requests carry a [`RequestId`] in `user_data`; [`SENTINEL`] marks our own bookkeeping
//! entries (cancels, wake-ups), which are consumed on reap and never reported.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

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
}

fn is_fallback_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EACCES)
    )
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
                    return Ok(Self { ring, sqpoll });
                }
                Err(e) if is_fallback_errno(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
    }

    /// Whether this process may create rings at all (`io_uring_setup(1)`).
    pub fn probe() -> io::Result<()> {
        IoUring::<squeue::Entry>::new(1).map(drop)
    }

    /// Whether a SQPOLL ring can be created here.
    pub fn probe_sqpoll() -> bool {
        // The shortest idle time: the probe's polling thread should not spin on after it.
        IoUring::<squeue::Entry>::builder()
            .setup_sqpoll(1)
            .build(1)
            .is_ok()
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
        }
    }

    /// Entries staged but not yet consumed by the kernel.
    pub fn pending(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Hands staged entries to the kernel (waking the SQPOLL thread if it sleeps, with the
    /// fence the kernel documents). Non-SQPOLL: repeats until the kernel took them all.
    /// Page-cache reads and small writes often complete inside this call.
    pub fn submit(&mut self) -> io::Result<usize> {
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
    pub fn get_events(&self) -> io::Result<()> {
        match self.ring.submitter().submit_and_wait(0) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Moves every completion in the CQ to `out` (sentinels are consumed, not moved) and
    /// commits the CQ head. Returns how many real completions were moved.
    pub fn reap(&mut self, out: &mut VecDeque<Completion>) -> usize {
        let before = out.len();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if cqe.user_data() != SENTINEL {
                out.push_back(Completion {
                    id: RequestId(cqe.user_data()),
                    res: cqe.result() as i64,
                });
            }
        }
        drop(cq); // publishes the new head
        out.len() - before
    }

    /// Blocks until the CQ is non-empty or `timeout` passes; see [`wait_readable`].
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        wait_readable(self.fd(), timeout)
    }
}

/// Blocks until the CQ of the ring `ring_fd` is non-empty or `timeout` passes (`None`:
/// forever); `false` on timeout. Polling the ring's fd consumes nothing, so other waiters
/// and the eventfd are unaffected, and it needs no access to the ring's queues (callers
/// may wait without holding the ring's lock). A signal (EINTR) also returns `true`: callers
/// re-check and loop, as caio's wait paths ignore EINTR.
pub fn wait_readable(ring_fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    match crate::io::wait_readable(ring_fd, timeout) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        other => other,
    }
}

/// A batch of submissions against one snapshot of the submission queue.
pub struct Stager<'a> {
    sq: io_uring::SubmissionQueue<'a>,
}

impl Stager<'_> {
    fn push(&mut self, entry: &squeue::Entry) -> Result<(), RingFull> {
        // SAFETY: callers only pass entries whose buffers satisfy `push_request`'s contract
        // or that reference no memory at all (cancel, nop).
        unsafe { self.sq.push(entry) }.map_err(|_| RingFull)
    }

    /// Whether the batch has no free slot left.
    pub fn is_full(&self) -> bool {
        self.sq.is_full()
    }

    /// Stages `request` under `id`.
    ///
    /// # Safety
    /// The request's buffer must stay valid (and unread/unwritten by anyone else for
    /// reads) until the completion for `id` has been reaped.
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
                .build(),
            IoKind::Write => opcode::Write::new(fd, request.buf, len)
                .offset(offset)
                .build(),
            IoKind::Fsync => opcode::Fsync::new(fd).build(),
            IoKind::Fdsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        let entry = if request.len > PUNT_ABOVE {
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
    use crate::test_util::temp_file;
    use crate::EventFd;

    macro_rules! require_uring {
        () => {
            if Ring::probe().is_err() {
                eprintln!("io_uring unavailable here; skipped");
                return;
            }
        };
    }

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

    #[test]
    fn waiting_on_an_idle_ring_times_out() {
        require_uring!();
        let efd = EventFd::new().unwrap();
        let ring = Ring::new(4, false, efd.as_raw_fd()).unwrap();
        assert!(!ring.wait_readable(Some(Duration::from_millis(20))).unwrap());
    }
}
