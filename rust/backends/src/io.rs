//! One I/O request and the syscalls that run it.

use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::Duration;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// `pread` into the buffer.
    Read,
    /// `pwrite` from the buffer.
    Write,
    /// `fsync`.
    Fsync,
    /// `fdatasync`.
    Fdsync,
    /// `preadv2` into several buffers, filled in order: the request's `buf` points at an
    /// array of `len` [`libc::iovec`]s (not at bytes), owned with the buffers it describes.
    ReadV,
    /// `pwritev2` from several buffers, in order; `buf` and `len` as for [`IoKind::ReadV`].
    WriteV,
}

impl IoKind {
    /// Whether `buf`/`len` describe an iovec array ([`IoKind::ReadV`], [`IoKind::WriteV`])
    /// rather than one byte range.
    pub fn is_vectored(self) -> bool {
        matches!(self, IoKind::ReadV | IoKind::WriteV)
    }

    /// Whether the request transfers data into memory (a read, vectored or not).
    pub fn is_read(self) -> bool {
        matches!(self, IoKind::Read | IoKind::ReadV)
    }
}

/// A request as plain data: the buffer is only an address and a length owned elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct IoRequest {
    /// What to do.
    pub kind: IoKind,
    /// The file descriptor.
    pub fd: RawFd,
    /// File offset for reads and writes.
    pub offset: i64,
    /// Start of the buffer (unused for syncs); for a vectored kind, of the iovec array.
    pub buf: *mut u8,
    /// Length of the buffer in bytes; for a vectored kind, the number of iovecs (at most
    /// [`iov_max`], their total at most [`max_rw_count`]: one syscall moves it all).
    pub len: usize,
    /// `RWF_*` flags of a read or write (`preadv2`/`pwritev2`'s), checked by
    /// [`check_rw_flags`]; 0 for plain requests and syncs.
    pub rw_flags: i32,
}

// SAFETY: an `IoRequest` is an address and a length; it is only dereferenced by `perform`
// and `read_nowait`, whose callers promise (their `# Safety` sections) that the buffer
// stays valid and unshared until the request completes, on whichever thread runs it.
unsafe impl Send for IoRequest {}

/// The most a single read or write syscall moves on Linux (the kernel's `MAX_RW_COUNT`,
/// `INT_MAX` rounded down to a page: 0x7fff_f000 with 4 KiB pages), computed once.
/// A transfer of exactly this size with more requested is continued, not reported short;
/// a vectored request may not ask for more (so it needs no continuation).
pub fn max_rw_count() -> usize {
    static VALUE: OnceLock<usize> = OnceLock::new();
    *VALUE.get_or_init(|| i32::MAX as usize & !(page_size() - 1))
}

/// The page size (a power of two; 4096 if `sysconf` says otherwise), computed once.
pub fn page_size() -> usize {
    static VALUE: OnceLock<usize> = OnceLock::new();
    *VALUE.get_or_init(|| {
        sysconf(libc::_SC_PAGESIZE)
            .filter(|page| page.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// `IOV_MAX`: the most iovecs one `preadv2`/`pwritev2`, io_uring or kernel AIO request
/// takes, computed once.
pub fn iov_max() -> usize {
    static VALUE: OnceLock<usize> = OnceLock::new();
    // 1024 (UIO_MAXIOV) is what Linux has always had.
    *VALUE.get_or_init(|| sysconf(libc::_SC_IOV_MAX).unwrap_or(1024))
}

/// A positive `sysconf` value, else None (unknown or unlimited).
fn sysconf(name: libc::c_int) -> Option<usize> {
    // SAFETY: sysconf takes no pointer.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as usize)
}

/// The `RWF_*` flags a read may carry: [`libc::RWF_NOWAIT`] (fail with `EAGAIN` rather
/// than wait for the disk or a lock).
pub const READ_FLAGS: i32 = libc::RWF_NOWAIT;
/// The `RWF_*` flags a write may carry: [`libc::RWF_DSYNC`] and [`libc::RWF_SYNC`] (this
/// write durable on return, as `O_DSYNC`/`O_SYNC` would make it) and
/// [`libc::RWF_NOWAIT`].
pub const WRITE_FLAGS: i32 = libc::RWF_DSYNC | libc::RWF_SYNC | libc::RWF_NOWAIT;

/// The kernel's `RWF_*` flags by name (linux/fs.h), for naming a refused one.
const RWF_NAMES: [(u64, &str); 8] = [
    (0x01, "RWF_HIPRI"),
    (0x02, "RWF_DSYNC"),
    (0x04, "RWF_SYNC"),
    (0x08, "RWF_NOWAIT"),
    (0x10, "RWF_APPEND"),
    (0x20, "RWF_NOAPPEND"),
    (0x40, "RWF_ATOMIC"),
    (0x80, "RWF_DONTCACHE"),
];

/// Checks a read's or write's `flags` (as the caller gave them: any 64-bit value): the
/// flags as the kernel takes them, or why not, naming the first refused flag. The
/// sync flags on a read are refused (the kernel ignores them there: "meaningful only for
/// pwritev2"), and so is every flag we do not pass on (`RWF_APPEND` would change what
/// the offset means; `RWF_HIPRI` needs a polled queue; unknown bits have no meaning).
pub fn check_rw_flags(kind: IoKind, flags: i64) -> Result<i32, String> {
    if flags < 0 {
        return Err(format!(
            "flags must be 0 or a combination of RWF_* flags (got {flags})"
        ));
    }
    let flags = flags as u64;
    let (allowed, what) = match kind {
        IoKind::Read | IoKind::ReadV => (READ_FLAGS, "a read"),
        IoKind::Write | IoKind::WriteV => (WRITE_FLAGS, "a write"),
        IoKind::Fsync | IoKind::Fdsync => (0, "a sync"),
    };
    let refused = flags & !(allowed as u64);
    if refused == 0 {
        return Ok(flags as i32);
    }
    let bit = refused & refused.wrapping_neg();
    let name = RWF_NAMES.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n);
    Err(match name {
        Some(name @ ("RWF_DSYNC" | "RWF_SYNC")) => {
            format!("flags: {name} applies to writes only, not to {what}")
        }
        Some(name) => format!("flags: {name} is not supported for {what}"),
        None => format!("flags: unknown flag {bit:#x} (got {flags:#x})"),
    })
}

fn errno() -> i64 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO) as i64
}

impl IoRequest {
    /// The bytes the request transfers at most: `len`, or for a vectored request the sum
    /// of its iovecs' lengths.
    ///
    /// # Safety
    /// A vectored request's `buf` must point at `len` valid iovecs (as for [`Self::perform`]).
    pub unsafe fn byte_len(&self) -> usize {
        if !self.kind.is_vectored() {
            return self.len;
        }
        // SAFETY: the caller's promise: `len` initialised iovecs at `buf`.
        let iovecs =
            unsafe { std::slice::from_raw_parts(self.buf.cast::<libc::iovec>(), self.len) };
        iovecs.iter().map(|iov| iov.iov_len).sum()
    }

    /// Runs the request with blocking syscalls (`preadv2`/`pwritev2` when it has
    /// [`rw_flags`](Self::rw_flags), else plain `pread`/`pwrite`). Returns the bytes transferred (0 for syncs)
    /// or a negated errno. A short transfer is returned as it is (no retry), except that a
    /// transfer capped by the kernel's per-call limit continues.
    ///
    /// A descriptor without a file position (pipe, FIFO, socket, terminal) refuses
    /// `pread`/`pwrite` with `ESPIPE`; at offset 0 the request then means "the next
    /// bytes" and runs as a plain `read`/`write`, as io_uring and kernel AIO treat it.
    ///
    /// A vectored request is one `preadv2`/`pwritev2` call (its total fits one call), its
    /// result returned as it is.
    ///
    /// # Safety
    /// `buf` must be valid for `len` bytes (writable for reads) until this returns, and no
    /// one else may access it meanwhile; for a vectored request, `buf` must point at `len`
    /// iovecs each describing such memory.
    pub unsafe fn perform(&self) -> i64 {
        let read = self.kind.is_read();
        match self.kind {
            IoKind::ReadV | IoKind::WriteV => {
                let iov = self.buf.cast::<libc::iovec>().cast_const();
                let count = self.len as libc::c_int;
                self.retried(&mut true, |positional| {
                    // -1: `*v2`'s "at the current position", what a stream's offset 0 means.
                    let offset = if positional { self.offset } else { -1 };
                    // SAFETY: `count` iovecs at `iov` describing memory the caller vouched
                    // for (see above).
                    unsafe {
                        if read {
                            libc::preadv2(self.fd, iov, count, offset, self.rw_flags)
                        } else {
                            libc::pwritev2(self.fd, iov, count, offset, self.rw_flags)
                        }
                    }
                })
            }
            // SAFETY: fsync/fdatasync take no pointers.
            IoKind::Fsync | IoKind::Fdsync => Self::status(unsafe {
                if self.kind == IoKind::Fsync {
                    libc::fsync(self.fd)
                } else {
                    libc::fdatasync(self.fd)
                }
            }),
            IoKind::Read | IoKind::Write => {
                let mut done = 0usize;
                let mut positional = true;
                loop {
                    let rest = self.len - done;
                    let offset = self.offset.saturating_add(done as i64);
                    let ret = self.retried(&mut positional, |positional| {
                        // SAFETY: `buf + done .. buf + len` lies inside the buffer the
                        // caller vouched for; `done <= len` holds by the loop condition.
                        unsafe {
                            let at = self.buf.add(done);
                            if self.rw_flags != 0 {
                                // Only the `*v2` calls take flags; -1 is their "at the
                                // current position", what a stream's offset 0 means.
                                let iov = libc::iovec {
                                    iov_base: at.cast(),
                                    iov_len: rest,
                                };
                                let offset = if positional { offset } else { -1 };
                                if read {
                                    libc::preadv2(self.fd, &iov, 1, offset, self.rw_flags)
                                } else {
                                    libc::pwritev2(self.fd, &iov, 1, offset, self.rw_flags)
                                }
                            } else {
                                match (read, positional) {
                                    (true, true) => libc::pread(self.fd, at.cast(), rest, offset),
                                    (false, true) => libc::pwrite(self.fd, at.cast(), rest, offset),
                                    (true, false) => libc::read(self.fd, at.cast(), rest),
                                    (false, false) => libc::write(self.fd, at.cast(), rest),
                                }
                            }
                        }
                    });
                    if ret < 0 {
                        return if done > 0 { done as i64 } else { ret };
                    }
                    done += ret as usize;
                    if ret as usize != max_rw_count() || done == self.len {
                        return done as i64;
                    }
                }
            }
        }
    }

    /// Runs one syscall of the request, `call(positional)` (false: at the descriptor's
    /// current position), again while a signal interrupts it (a handler ran on this
    /// thread: ours block signals, but a caller's thread may not; nothing was
    /// transferred); a descriptor without a file position refusing the offset (`ESPIPE`)
    /// at offset 0 is asked again at its current position, which `positional` then
    /// remembers. Returns what the call returned (>= 0), or the negated errno.
    fn retried(&self, positional: &mut bool, mut call: impl FnMut(bool) -> isize) -> i64 {
        loop {
            let ret = call(*positional);
            if ret >= 0 {
                return ret as i64;
            }
            let err = errno();
            if err == libc::EINTR as i64 {
                continue;
            }
            if err == libc::ESPIPE as i64 && *positional && self.offset == 0 {
                *positional = false;
                continue;
            }
            return -err;
        }
    }

    fn status(ret: libc::c_int) -> i64 {
        if ret < 0 {
            -errno()
        } else {
            0
        }
    }

    /// Tries a read without blocking (`preadv2` with `RWF_NOWAIT`): succeeds when the data
    /// is in the page cache. Returns `None` whenever the answer may not be this request's
    /// own: it would block, the file has no non-blocking reads (`EOPNOTSUPP`, or `EINVAL`
    /// on older kernels), a pipe or socket refuses an offset (`ESPIPE`, where the normal
    /// path reads it), or any other error (the normal path reports it as usual). The
    /// buffer may then hold partial data and the request must be run again from the start.
    /// `Some(res)` is final, as from [`Self::perform`].
    ///
    /// An offset of -1 is `preadv2`'s "at the current position": only io_uring's
    /// "use the file position" request may have it, which is what it asks for.
    ///
    /// # Safety
    /// As for [`Self::perform`]; the request must be a read.
    pub unsafe fn read_nowait(&self) -> Option<i64> {
        debug_assert_eq!(self.kind, IoKind::Read);
        debug_assert!(self.offset >= -1);
        let mut done = 0usize;
        loop {
            let iov = libc::iovec {
                // SAFETY: `done <= len`, so the address stays inside the caller's buffer.
                iov_base: unsafe { self.buf.add(done) }.cast(),
                iov_len: self.len - done,
            };
            // SAFETY: one iovec describing the caller's writable buffer, valid for the call.
            let ret = unsafe {
                libc::preadv2(
                    self.fd,
                    &iov,
                    1,
                    self.offset.saturating_add(done as i64),
                    libc::RWF_NOWAIT,
                )
            };
            if ret < 0 {
                return None;
            }
            done += ret as usize;
            // Zero bytes means end of file; a full buffer means done. A short read in
            // between may only mean part of the range is cached: ask again for the rest.
            // At the current position (offset -1: pipes, sockets) the data is consumed by
            // reading it, so the first answer is final.
            if ret == 0 || done == self.len || self.offset < 0 {
                return Some(done as i64);
            }
        }
    }
}

/// Blocks until `fd` is readable or `timeout` passes (`None`: forever); `false` on
/// timeout. `poll` consumes nothing (a readable eventfd stays readable). A signal ends the
/// wait with an `Interrupted` error: the caller decides whether to retry or report it.
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> std::io::Result<bool> {
    let [readable] = wait_readable_of([fd], timeout)?;
    Ok(readable)
}

/// As [`wait_readable`], for any of `fds`: which of them are readable (none on timeout).
pub fn wait_readable_of<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> std::io::Result<[bool; N]> {
    let ms = match timeout {
        None => -1,
        // Round up so a sub-millisecond remainder sleeps instead of spinning.
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
    };
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `polled` is a valid array of `N` pollfds on the stack for the whole call.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, ms) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(polled.map(|p| p.revents != 0))
}

/// Blocks until one of `fds` is readable or `timeout` passes; returns how many are.
/// A signal or an error just ends the wait early (the caller looks at everything anyway).
pub fn wait_any_readable(fds: &[RawFd], timeout: Duration) -> usize {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `polled` is a valid array of `polled.len()` pollfds for the whole call.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use std::os::fd::{AsRawFd, FromRawFd};

    fn read_req(fd: RawFd, buf: &mut [u8], offset: i64) -> IoRequest {
        IoRequest {
            kind: IoKind::Read,
            fd,
            offset,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            rw_flags: 0,
        }
    }

    #[test]
    fn a_read_at_eof_is_short_and_a_bad_fd_is_a_negated_errno() {
        let f = temp_file(b"hello");
        let mut buf = [0u8; 16];
        // SAFETY: `buf` outlives the call and is not shared.
        let res = unsafe { read_req(f.as_raw_fd(), &mut buf, 0).perform() };
        assert_eq!(res, 5);
        assert_eq!(&buf[..5], b"hello");
        // SAFETY: as above.
        let res = unsafe { read_req(-1, &mut buf, 0).perform() };
        assert_eq!(res, -(libc::EBADF as i64));
    }

    #[test]
    fn a_cached_read_completes_without_blocking() {
        let f = temp_file(&[7u8; 8192]);
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` outlives the call and is not shared.
        let res = unsafe { read_req(f.as_raw_fd(), &mut buf, 4096).read_nowait() };
        assert_eq!(res, Some(4096));
        assert!(buf.iter().all(|&b| b == 7));
    }

    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let [r, w] = fds.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        (r, w)
    }

    #[test]
    fn a_pipe_at_offset_zero_is_read_and_written_like_a_stream() {
        let (r, w) = pipe();
        let mut data = *b"through a pipe";
        let write = IoRequest {
            kind: IoKind::Write,
            fd: w.as_raw_fd(),
            offset: 0,
            buf: data.as_mut_ptr(),
            len: data.len(),
            rw_flags: 0,
        };
        // SAFETY: `data` outlives the call and is not shared.
        assert_eq!(unsafe { write.perform() }, 14);
        let mut buf = [0u8; 32];
        // SAFETY: `buf` outlives the call and is not shared.
        let res = unsafe { read_req(r.as_raw_fd(), &mut buf, 0).perform() };
        assert_eq!(res, 14);
        assert_eq!(&buf[..14], b"through a pipe");
    }

    #[test]
    fn a_pipe_at_another_offset_is_espipe() {
        let (r, mut w) = pipe();
        std::io::Write::write_all(&mut w, b"kept").unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: `buf` outlives the call and is not shared.
        let res = unsafe { read_req(r.as_raw_fd(), &mut buf, 3).perform() };
        assert_eq!(res, -(libc::ESPIPE as i64));
        // SAFETY: as above.
        let res = unsafe { read_req(r.as_raw_fd(), &mut buf, 0).perform() };
        assert_eq!(res, 4);
        assert_eq!(&buf[..4], b"kept");
    }

    #[test]
    fn a_nowait_read_leaves_anything_but_an_answer_to_the_normal_path() {
        let (r, mut w) = pipe();
        std::io::Write::write_all(&mut w, b"data").unwrap();
        let mut buf = [0u8; 8];
        // ESPIPE at offset 0: not this request's answer (perform reads the pipe).
        // SAFETY: `buf` outlives the call and is not shared.
        let res = unsafe { read_req(r.as_raw_fd(), &mut buf, 0).read_nowait() };
        assert_eq!(res, None);
        // A bad descriptor too: the normal path reports it.
        // SAFETY: as above.
        let res = unsafe { read_req(-1, &mut buf, 0).read_nowait() };
        assert_eq!(res, None);
        // io_uring's "file position" request (-1) reads the pipe.
        // SAFETY: as above.
        let res = unsafe { read_req(r.as_raw_fd(), &mut buf, -1).read_nowait() };
        assert_eq!(res, Some(4));
        assert_eq!(&buf[..4], b"data");
    }

    #[test]
    fn rw_flags_are_checked_per_kind_and_a_refused_one_is_named() {
        assert_eq!(check_rw_flags(IoKind::Read, 0), Ok(0));
        assert_eq!(
            check_rw_flags(IoKind::Read, libc::RWF_NOWAIT.into()),
            Ok(libc::RWF_NOWAIT)
        );
        assert_eq!(
            check_rw_flags(IoKind::Write, WRITE_FLAGS.into()),
            Ok(WRITE_FLAGS)
        );
        let err = check_rw_flags(IoKind::Read, libc::RWF_DSYNC.into()).unwrap_err();
        assert!(
            err.contains("RWF_DSYNC") && err.contains("writes only"),
            "{err}"
        );
        let err = check_rw_flags(IoKind::Write, libc::RWF_APPEND.into()).unwrap_err();
        assert!(err.contains("RWF_APPEND"), "{err}");
        let err = check_rw_flags(IoKind::Write, 0x1_0000_0000).unwrap_err();
        assert!(err.contains("0x100000000"), "{err}");
        assert!(check_rw_flags(IoKind::Write, -1).is_err());
        assert!(check_rw_flags(IoKind::Fsync, libc::RWF_DSYNC.into()).is_err());
    }

    #[test]
    fn flags_reach_the_kernel_with_preadv2_and_pwritev2() {
        let f = temp_file(b"");
        let mut data = *b"durable";
        let write = IoRequest {
            kind: IoKind::Write,
            fd: f.as_raw_fd(),
            offset: 4,
            buf: data.as_mut_ptr(),
            len: data.len(),
            rw_flags: libc::RWF_DSYNC,
        };
        // SAFETY: `data` outlives the call and is not shared.
        assert_eq!(unsafe { write.perform() }, 7);
        let mut buf = [0u8; 16];
        let mut read = read_req(f.as_raw_fd(), &mut buf, 4);
        read.rw_flags = libc::RWF_NOWAIT;
        // Just written, so cached: a non-blocking read has it.
        // SAFETY: `buf` outlives the call and is not shared.
        assert_eq!(unsafe { read.perform() }, 7);
        assert_eq!(&buf[..7], b"durable");
        // A bit no kernel knows is refused by the kernel itself: the flags got there
        // (plain pread/pwrite would have ignored them).
        let unknown = IoRequest {
            rw_flags: 1 << 30,
            ..write
        };
        // SAFETY: as above.
        assert_eq!(unsafe { unknown.perform() }, -(libc::EOPNOTSUPP as i64));
    }

    #[test]
    fn a_nowait_request_on_a_stream_does_not_wait() {
        let (r, mut w) = pipe();
        let mut buf = [0u8; 8];
        let mut read = read_req(r.as_raw_fd(), &mut buf, 0);
        read.rw_flags = libc::RWF_NOWAIT;
        // Empty: EAGAIN at once, where a plain read would wait for a writer.
        // SAFETY: `buf` outlives the calls and is not shared.
        assert_eq!(unsafe { read.perform() }, -(libc::EAGAIN as i64));
        std::io::Write::write_all(&mut w, b"now").unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { read.perform() }, 3);
        assert_eq!(&buf[..3], b"now");
        let mut data = *b"synced";
        let write = IoRequest {
            kind: IoKind::Write,
            fd: w.as_raw_fd(),
            offset: 0,
            buf: data.as_mut_ptr(),
            len: data.len(),
            rw_flags: libc::RWF_DSYNC,
        };
        // Offset 0 on a stream: its current position (-1 for pwritev2).
        // SAFETY: `data` outlives the call and is not shared.
        assert_eq!(unsafe { write.perform() }, 6);
        // SAFETY: as above.
        assert_eq!(unsafe { read.perform() }, 6);
        assert_eq!(&buf[..6], b"synced");
    }

    #[test]
    fn write_then_sync() {
        let f = temp_file(b"");
        let mut data = *b"abc";
        let req = IoRequest {
            kind: IoKind::Write,
            fd: f.as_raw_fd(),
            offset: 10,
            buf: data.as_mut_ptr(),
            len: 3,
            rw_flags: 0,
        };
        // SAFETY: `data` outlives the call.
        assert_eq!(unsafe { req.perform() }, 3);
        for kind in [IoKind::Fsync, IoKind::Fdsync] {
            let sync = IoRequest { kind, ..req };
            // SAFETY: syncs touch no buffer.
            assert_eq!(unsafe { sync.perform() }, 0);
        }
        assert_eq!(f.metadata().unwrap().len(), 13);
    }
}
