//! Where a request runs when its driver's kernel interface would do the work on the
//! caller's thread, or on kernel workers that cost more than threads of ours: the
//! [`route`] decision and the [`HelperThreads`] that run the large buffered file requests.
//!
//! Kernel AIO's `io_submit` copies a buffered request's data on the calling thread, and
//! waits on a stream for as long as it takes; io_uring hands a large buffered request to
//! its io-wq workers, which spend more CPU per byte than a plain `preadv` on a thread of
//! ours (and as many workers as requests in flight compete with the event loop for the
//! CPUs). Both drivers send such requests here instead; each gives its helpers a sink
//! that queues their completions and announces them on the eventfd the loop watches.

use std::sync::{Arc, Mutex, MutexGuard};

use caio_core::{Completion, RequestId};

use super::DispatchError;
use crate::{CompletionSink, IoKind, IoRequest, SubmitError, ThreadPool};

/// Buffered file requests above this size run on the helper threads.
pub const OFFLOAD_ABOVE: usize = 64 * 1024;
/// How many helper threads run: one per CPU this process may use, so that large copies
/// scale with the machine, but at least two (one can block on the disk while the other
/// copies) and at most eight. More than one per CPU only competes with the event loop.
fn helper_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The driver's kernel interface: `O_DIRECT` requests (truly asynchronous), small
    /// buffered file requests (mostly page-cache copies), `RWF_NOWAIT` requests (they
    /// never wait), and whatever the kernel refuses up front (a bad descriptor, one not
    /// open for this direction, a negative offset, a sync or a read of a descriptor that
    /// supports neither), so that it is still refused the kernel's way.
    Kernel,
    /// The helper threads: large buffered requests on regular files and block devices.
    Helpers,
    /// A request on a stream (pipe, FIFO, socket, character device, eventfd...), which may
    /// wait for the other side for any length of time. Kernel AIO runs each on a thread of
    /// its own; io_uring waits for them asynchronously itself.
    Stream,
}

/// Decides where `request` runs (see [`Route`]); `direct`: its descriptor is open with
/// `O_DIRECT`. On a non-seekable descriptor the kernel ignores the offset; so do the
/// threads: a [`Route::Stream`] request then runs at offset 0, which
/// `IoRequest::perform` reads as "the current position" on such a descriptor.
pub fn route(request: &mut IoRequest, direct: bool) -> Route {
    // RWF_NOWAIT: the kernel answers at once (or with EAGAIN) instead of waiting, so it
    // cannot hold its caller up; a thread would defeat the flag's purpose.
    let nowait = request.rw_flags & libc::RWF_NOWAIT != 0;
    if nowait || request.offset < 0 || matches!(request.kind, IoKind::Fsync | IoKind::Fdsync) {
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
    // SAFETY: `request` is a live entry's (dispatch routes the entry in hand, before it
    // is registered; the tests route their fake entries'), whose iovecs (for a vectored
    // one) stay valid while the entry lives (`Entry`'s contract).
    let bytes = unsafe { request.byte_len() };
    // The common case costs one fstat: small or O_DIRECT file requests, and directories
    // (no read or write: the kernel refuses them with EINVAL).
    if files && (direct || bytes <= OFFLOAD_ABOVE) || file_type == libc::S_IFDIR {
        return Route::Kernel;
    }
    let access = access();
    let allowed = if request.kind.is_read() {
        access == libc::O_RDONLY || access == libc::O_RDWR
    } else {
        access == libc::O_WRONLY || access == libc::O_RDWR
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

/// Whether `request` could be a [`Route::Helpers`] one, without a syscall: a driver whose
/// kernel interface takes streams itself asks [`route`] only about these.
pub fn may_offload(request: &IoRequest, direct: bool) -> bool {
    let nowait = request.rw_flags & libc::RWF_NOWAIT != 0;
    // SAFETY: as in `route`: the request is a live entry's, whose iovecs (for a vectored
    // one) stay valid while it lives.
    !direct && !nowait && unsafe { request.byte_len() } > OFFLOAD_ABOVE
}

enum State {
    NotStarted,
    Running(ThreadPool),
    /// [`HelperThreads::shutdown`] ran: none start again.
    Closed,
}

/// The helper threads of one driver, started on first use, reporting to its sink.
pub struct HelperThreads {
    state: Mutex<State>,
    sink: Arc<dyn CompletionSink>,
}

/// The running helper threads, kept from shutting down while this is held.
pub struct Started<'a> {
    state: MutexGuard<'a, State>,
    sink: &'a dyn CompletionSink,
}

impl HelperThreads {
    /// Helpers (none started yet) whose completions go to `sink`.
    pub fn new(sink: Arc<dyn CompletionSink>) -> Self {
        Self {
            state: Mutex::new(State::NotStarted),
            sink,
        }
    }

    /// Nothing panics while the state is locked, so a poisoned lock is still sound to use.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running helpers, started now if need be.
    pub fn start(&self) -> Result<Started<'_>, DispatchError> {
        let mut state = self.lock();
        match *state {
            State::Running(_) => {}
            State::Closed => return Err(DispatchError::Closed),
            State::NotStarted => {
                let pool = ThreadPool::new(helper_threads(), usize::MAX, self.sink.clone())
                    .map_err(DispatchError::NoThreads)?;
                *state = State::Running(pool);
            }
        }
        Ok(Started {
            state,
            sink: &*self.sink,
        })
    }

    /// Takes `id` back if no helper has started it yet; its completion (`-ECANCELED`)
    /// then reaches the sink as any other. Returns whether it did.
    pub fn cancel(&self, id: RequestId) -> bool {
        let cancelled = match &*self.lock() {
            State::Running(pool) => pool.cancel(id),
            _ => None,
        };
        cancelled.map(|c| c.complete()).is_some()
    }

    /// Lets every queued request run, joins the threads, and starts none again.
    pub fn shutdown(&self) {
        let state = std::mem::replace(&mut *self.lock(), State::Closed);
        if let State::Running(pool) = state {
            pool.shutdown();
        }
    }
}

impl Started<'_> {
    /// Queues `request` for a helper; its completion reaches the sink under `id`.
    ///
    /// # Safety
    /// As for [`ThreadPool::submit`]: the buffer stays valid and untouched by others until
    /// the sink has received the completion of `id`, and after that for as long as the
    /// driver may still hand the buffer to anyone (until its entry is taken).
    pub unsafe fn run(&self, id: RequestId, request: IoRequest) {
        let State::Running(pool) = &*self.state else {
            unreachable!("started helpers run until shutdown, which this guard holds off")
        };
        // SAFETY: the caller's promise.
        if let Err(err) = unsafe { pool.submit(id, request) } {
            // Not reachable: the queue is unbounded, and this guard keeps it from shutting
            // down. Requests before this one may be running already, so it fails as a
            // completion, not a refusal.
            debug_assert!(false, "helper threads refused: {err:?}");
            let errno = match err {
                SubmitError::QueueFull => libc::EAGAIN,
                SubmitError::Shutdown => libc::ECANCELED,
            };
            self.sink.complete(Completion {
                id,
                res: -i64::from(errno),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::driver::testing::{route_of, FakeEntry};
    use crate::driver::Entry;
    use crate::test_util::{pipe, temp_file};

    const LARGE: usize = 256 * 1024;

    #[test]
    fn a_small_file_request_goes_to_the_kernel() {
        let f = temp_file(b"0123456789");
        let read = FakeEntry::read(f.as_raw_fd(), 4, 0);
        assert_eq!(route_of(&read), (Route::Kernel, 0));
        let write = FakeEntry::write(f.as_raw_fd(), &[1; OFFLOAD_ABOVE], 3);
        assert_eq!(route_of(&write), (Route::Kernel, 3));
    }

    #[test]
    fn a_large_buffered_file_request_goes_to_the_helpers() {
        let f = temp_file(b"");
        let read = FakeEntry::read(f.as_raw_fd(), OFFLOAD_ABOVE + 1, 5);
        assert_eq!(route_of(&read), (Route::Helpers, 5));
        let write = FakeEntry::write(f.as_raw_fd(), &[1; LARGE], 0);
        assert_eq!(route_of(&write), (Route::Helpers, 0));
    }

    #[test]
    fn a_large_direct_request_stays_in_the_kernel() {
        let f = temp_file(b"");
        let mut read = FakeEntry::read(f.as_raw_fd(), LARGE, 0);
        read.direct = true;
        assert_eq!(route_of(&read), (Route::Kernel, 0));
    }

    #[test]
    fn a_nowait_request_stays_in_the_kernel_whatever_its_size_or_file() {
        let f = temp_file(b"");
        let (r, w) = pipe();
        let mut large_read = FakeEntry::read(f.as_raw_fd(), LARGE, 0);
        let mut pipe_read = FakeEntry::read(r.as_raw_fd(), 4, 0);
        let mut pipe_write = FakeEntry::write(w.as_raw_fd(), b"abc", 0);
        for entry in [&mut large_read, &mut pipe_read, &mut pipe_write] {
            entry.rw_flags = libc::RWF_NOWAIT;
            assert_eq!(route_of(entry).0, Route::Kernel);
        }
        // Other flags keep the usual routes.
        let mut large_write = FakeEntry::write(f.as_raw_fd(), &[1; LARGE], 0);
        large_write.rw_flags = libc::RWF_DSYNC;
        assert_eq!(route_of(&large_write).0, Route::Helpers);
    }

    #[test]
    fn a_pipe_request_gets_its_own_thread_at_offset_zero() {
        let (r, w) = pipe();
        let read = FakeEntry::read(r.as_raw_fd(), 4, 7);
        assert_eq!(route_of(&read), (Route::Stream, 0));
        let write = FakeEntry::write(w.as_raw_fd(), b"abc", 9);
        assert_eq!(route_of(&write), (Route::Stream, 0));
    }

    #[test]
    fn a_descriptor_not_open_for_that_direction_stays_in_the_kernel() {
        let (r, w) = pipe();
        let write_to_reader = FakeEntry::write(r.as_raw_fd(), b"abc", 0);
        assert_eq!(route_of(&write_to_reader).0, Route::Kernel);
        let read_from_writer = FakeEntry::read(w.as_raw_fd(), 4, 0);
        assert_eq!(route_of(&read_from_writer).0, Route::Kernel);
        let f = temp_file(b"");
        let read_only = std::fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        let large_write = FakeEntry::write(read_only.as_raw_fd(), &[1; LARGE], 0);
        assert_eq!(route_of(&large_write).0, Route::Kernel);
    }

    #[test]
    fn what_io_submit_refuses_up_front_stays_in_the_kernel() {
        let f = temp_file(b"");
        let negative = FakeEntry::read(f.as_raw_fd(), LARGE, -1);
        assert_eq!(route_of(&negative).0, Route::Kernel);
        let (_r, w) = pipe();
        assert_eq!(route_of(&FakeEntry::sync(w.as_raw_fd())).0, Route::Kernel);
        assert_eq!(route_of(&FakeEntry::read(-1, LARGE, 0)).0, Route::Kernel);
        let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
        assert_eq!(
            route_of(&FakeEntry::read(dir.as_raw_fd(), LARGE, 0)).0,
            Route::Kernel
        );
    }

    #[test]
    fn only_large_buffered_waiting_requests_may_offload() {
        let f = temp_file(b"");
        let fd = f.as_raw_fd();
        let may = |entry: &FakeEntry| may_offload(&entry.request(), entry.is_direct());
        assert!(!may(&FakeEntry::read(fd, OFFLOAD_ABOVE, 0)));
        assert!(may(&FakeEntry::read(fd, OFFLOAD_ABOVE + 1, 0)));
        let mut direct = FakeEntry::read(fd, LARGE, 0);
        direct.direct = true;
        assert!(!may(&direct));
        let mut nowait = FakeEntry::write(fd, &[1; LARGE], 0);
        nowait.rw_flags = libc::RWF_NOWAIT;
        assert!(!may(&nowait));
        // Every request `route` sends to the helpers passes.
        assert_eq!(
            route_of(&FakeEntry::read(fd, OFFLOAD_ABOVE + 1, 0)).0,
            Route::Helpers
        );
    }
}
