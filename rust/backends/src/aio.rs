//! Linux kernel AIO (`io_setup`, `io_submit`, `io_getevents`, `io_cancel`, `io_destroy`)
//! through raw syscalls, with completions signalled on an eventfd (`IOCB_FLAG_RESFD`).
//!
//! The kernel runs buffered (non-`O_DIRECT`) requests synchronously inside `io_submit`;
//! only `O_DIRECT` requests are truly asynchronous.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use caio_core::{Completion, RequestId};

use crate::{IoKind, IoRequest};

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FSYNC: u16 = 2;
const IOCB_CMD_FDSYNC: u16 = 3;
const IOCB_CMD_PREADV: u16 = 7;
const IOCB_CMD_PWRITEV: u16 = 8;
const IOCB_FLAG_RESFD: u32 = 1;

/// The most completions one [`AioContext::get_events`] call takes: a stack buffer, so
/// that the common case (a few completions per wake-up) allocates nothing.
pub const EVENTS_PER_CALL: usize = 64;

/// `struct iocb` from `linux/aio_abi.h` (little-endian field order).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const _: () = assert!(std::mem::size_of::<Iocb>() == 64);
const _: () = assert!(std::mem::size_of::<IoEvent>() == 32);

impl Iocb {
    /// The control block for `request`, completing under `id` and signalling `resfd`.
    /// `priority` goes to `aio_reqprio` (the kernel ignores it without `IOCB_FLAG_IOPRIO`,
    /// as in caio); the request's `RWF_*` flags to `aio_rw_flags`. A vectored request's
    /// `buf`/`len` (iovec array, count) are what `IOCB_CMD_PREADV`/`PWRITEV` take as
    /// `aio_buf`/`aio_nbytes`.
    pub fn new(id: RequestId, request: &IoRequest, priority: i16, resfd: RawFd) -> Self {
        let opcode = match request.kind {
            IoKind::Read => IOCB_CMD_PREAD,
            IoKind::Write => IOCB_CMD_PWRITE,
            IoKind::Fsync => IOCB_CMD_FSYNC,
            IoKind::Fdsync => IOCB_CMD_FDSYNC,
            IoKind::ReadV => IOCB_CMD_PREADV,
            IoKind::WriteV => IOCB_CMD_PWRITEV,
        };
        Iocb {
            aio_data: id.0,
            aio_rw_flags: request.rw_flags,
            aio_lio_opcode: opcode,
            aio_reqprio: priority,
            aio_fildes: request.fd as u32,
            aio_buf: request.buf as u64,
            aio_nbytes: request.len as u64,
            aio_offset: request.offset,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: resfd as u32,
            ..Iocb::default()
        }
    }
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A kernel AIO context (`aio_context_t`), destroyed on drop.
#[derive(Debug)]
pub struct AioContext {
    id: libc::c_ulong,
}

impl AioContext {
    /// `io_setup(nr_events)`.
    pub fn new(nr_events: u32) -> io::Result<Self> {
        let mut id: libc::c_ulong = 0;
        // SAFETY: io_setup writes one aio_context_t into `id`, which lives on our stack.
        check(unsafe { libc::syscall(libc::SYS_io_setup, nr_events as libc::c_long, &mut id) })?;
        Ok(Self { id })
    }

    /// Submits control blocks; returns how many the kernel accepted (it stops at the first
    /// one it cannot queue; an error is returned only if it accepted none).
    ///
    /// # Safety
    /// Every pointer must point to a live `Iocb` until this returns (and until its
    /// completion is reaped, if [`Self::cancel`] may be called for it); every accepted
    /// request's buffer must stay valid until its completion is reaped.
    pub unsafe fn submit(&self, iocbs: &mut [*mut Iocb]) -> io::Result<usize> {
        if iocbs.is_empty() {
            return Ok(0);
        }
        // SAFETY: the caller vouches for the pointers and buffers; the array is ours.
        let n = check(unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.id,
                iocbs.len() as libc::c_long,
                iocbs.as_mut_ptr(),
            )
        })?;
        Ok(n as usize)
    }

    /// Waits for at least `min` (up to `max`, at most [`EVENTS_PER_CALL`]) completions,
    /// `timeout` `None` meaning forever, and appends them to `out`. EINTR is returned as
    /// an error.
    pub fn get_events(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
        out: &mut impl Extend<Completion>,
    ) -> io::Result<usize> {
        let max = max.min(EVENTS_PER_CALL);
        let mut events = [IoEvent::default(); EVENTS_PER_CALL];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` has room for `max` entries; `ts_ptr` is NULL or points to a
        // timespec on our stack; both outlive the call.
        let n = check(unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.id,
                min.min(max) as libc::c_long,
                max as libc::c_long,
                events.as_mut_ptr(),
                ts_ptr,
            )
        })? as usize;
        out.extend(events[..n].iter().map(|e| Completion {
            id: RequestId(e.data),
            res: e.res,
        }));
        Ok(n)
    }

    /// `io_cancel`. On current kernels regular-file requests are never cancellable, so this
    /// normally fails (EINVAL); on success the request's completion is returned (and will
    /// not be reported by `get_events`).
    ///
    /// # Safety
    /// `iocb` must point to a live `Iocb` (the kernel compares the address with the one
    /// given to `io_submit`).
    pub unsafe fn cancel(&self, iocb: *mut Iocb) -> io::Result<Completion> {
        let mut event = IoEvent::default();
        // SAFETY: the caller vouches for `iocb`; `event` is on our stack.
        check(unsafe { libc::syscall(libc::SYS_io_cancel, self.id, iocb, &mut event) })?;
        Ok(Completion {
            id: RequestId(event.data),
            res: event.res,
        })
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: destroys the context we own; the kernel waits for outstanding requests
        // (whose buffers the owners keep alive: see `submit`).
        unsafe { libc::syscall(libc::SYS_io_destroy, self.id) };
    }
}

/// Whether `fd` is open with `O_DIRECT` (false for a bad fd).
pub fn is_direct(fd: RawFd) -> bool {
    // SAFETY: F_GETFL takes no pointer; a bad fd just fails.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// The alignment `O_DIRECT` needs on `fd`: `(memory, offset and size)`, from
/// `statx(STATX_DIOALIGN)` (Linux 6.1+), else 4096 for both (safe for every common
/// device).
pub fn direct_io_alignment(fd: RawFd) -> (usize, usize) {
    const STATX_DIOALIGN: u32 = 0x2000;
    // struct statx is 256 bytes; stx_mask is at 0, stx_dio_mem_align at 152 and
    // stx_dio_offset_align at 156 (linux/stat.h).
    let mut buf = [0u8; 256];
    // SAFETY: statx writes at most 256 bytes (sizeof(struct statx)) into `buf`; the
    // empty path with AT_EMPTY_PATH names `fd` itself.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_statx,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    if ret == 0 && word(0) & STATX_DIOALIGN != 0 {
        let (mem, off) = (word(152) as usize, word(156) as usize);
        if mem.is_power_of_two() && off.is_power_of_two() {
            return (mem, off);
        }
    }
    (4096, 4096)
}

/// Whether kernel AIO can be used here (`io_setup(1)` then `io_destroy`).
pub fn probe() -> io::Result<()> {
    AioContext::new(1).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use crate::EventFd;
    use std::os::fd::{AsRawFd, FromRawFd};

    #[test]
    fn a_write_and_a_read_complete_through_getevents() {
        if probe().is_err() {
            eprintln!("kernel AIO unavailable here; skipped");
            return;
        }
        let efd = EventFd::new().unwrap();
        let ctx = AioContext::new(8).unwrap();
        let f = temp_file(b"0123456789");
        let mut buf = [0u8; 4];
        let req = IoRequest {
            kind: IoKind::Read,
            fd: f.as_raw_fd(),
            offset: 3,
            buf: buf.as_mut_ptr(),
            len: 4,
            rw_flags: 0,
        };
        let mut iocb = Iocb::new(RequestId(7), &req, 0, efd.as_raw_fd());
        // SAFETY: `iocb` and `buf` outlive the reap below.
        assert_eq!(unsafe { ctx.submit(&mut [&mut iocb]) }.unwrap(), 1);
        let mut out = Vec::new();
        ctx.get_events(1, 4, Some(Duration::from_secs(10)), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![Completion {
                id: RequestId(7),
                res: 4
            }]
        );
        assert_eq!(&buf, b"3456");
        assert_eq!(efd.read().unwrap(), 1);
        assert!(!is_direct(f.as_raw_fd()));
    }

    #[test]
    fn a_nowait_read_of_an_empty_pipe_completes_with_eagain() {
        if probe().is_err() {
            return;
        }
        let efd = EventFd::new().unwrap();
        let ctx = AioContext::new(1).unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are fresh and owned by nothing else (closed on drop).
        let [r, _w] = fds.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        let mut buf = [0u8; 8];
        let req = IoRequest {
            kind: IoKind::Read,
            fd: r.as_raw_fd(),
            offset: 0,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            rw_flags: libc::RWF_NOWAIT,
        };
        let mut iocb = Iocb::new(RequestId(3), &req, 0, efd.as_raw_fd());
        // SAFETY: `iocb` and `buf` outlive the reap below. Without the flag io_submit
        // itself would wait for a writer that never comes.
        assert_eq!(unsafe { ctx.submit(&mut [&mut iocb]) }.unwrap(), 1);
        let mut out = Vec::new();
        ctx.get_events(1, 1, Some(Duration::from_secs(10)), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![Completion {
                id: RequestId(3),
                res: -(libc::EAGAIN as i64)
            }]
        );
    }

    #[test]
    fn a_bad_fd_is_refused_at_submit() {
        if probe().is_err() {
            return;
        }
        let ctx = AioContext::new(1).unwrap();
        let req = IoRequest {
            kind: IoKind::Fsync,
            fd: -1,
            offset: 0,
            buf: std::ptr::null_mut(),
            len: 0,
            rw_flags: 0,
        };
        let mut iocb = Iocb::new(RequestId(1), &req, 0, -1);
        // SAFETY: `iocb` outlives the call; a sync has no buffer.
        let err = unsafe { ctx.submit(&mut [&mut iocb]) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
