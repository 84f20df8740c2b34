//! [`InlineWrites`]: small buffered file writes run on the caller's thread, for the
//! drivers whose own path for them costs more than the write.
//!
//! A buffered write to a regular file is a page-cache copy. io_uring cannot start one
//! inside `io_uring_enter` on filesystems without non-blocking buffered writes (ext4): it
//! hands each to a kernel worker, and the hand-offs cost more than the copy
//! (benchmarks/results/2026-12-01-writes-ab.txt). Kernel AIO's `io_submit` does the copy
//! synchronously anyway, behind an iocb, an event in the ring and an eventfd wake-up.
//! Both drivers run such writes here instead, on the caller's thread.

use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{IoKind, IoRequest};

/// The largest write [`InlineWrites::run`] takes: a page-cache copy of this size takes
/// microseconds (io_uring sends larger ones to its workers, kernel AIO to helper threads).
pub const INLINE_WRITE_MAX: usize = 64 * 1024;

/// An inline write that took longer than this (a page-cache copy takes microseconds)
/// waited for something: writeback throttling, the journal, the inode lock, or only the
/// CPU on a busy machine (short preemptions are why it is not lower). The next writes go
/// to the driver's own path for a pause.
pub const SLOW_INLINE_WRITE: Duration = Duration::from_millis(5);

/// The first pause after a slow inline write; each slow one right after a pause doubles
/// it, up to [`INLINE_PAUSE_MAX`], and a fast one resets it. A loop writing into files
/// that keep blocking (throttled writeback) waits for them at most once per pause.
pub const INLINE_PAUSE_MIN: Duration = Duration::from_millis(50);

/// The longest pause: a blocked inline write then holds the loop at most once per this.
pub const INLINE_PAUSE_MAX: Duration = Duration::from_secs(10);

/// When [`InlineWrites::run`] may run writes again.
struct InlinePause {
    /// Writes take the driver's own path until then.
    until: Option<Instant>,
    /// The next pause's length.
    next: Duration,
}

/// The inline-write policy of one driver: which writes qualify ([`cached_write`]) and the
/// pause after a slow one.
pub struct InlineWrites {
    pause: Mutex<InlinePause>,
}

impl Default for InlineWrites {
    fn default() -> Self {
        Self {
            pause: Mutex::new(InlinePause {
                until: None,
                next: INLINE_PAUSE_MIN,
            }),
        }
    }
}

impl InlineWrites {
    /// Runs `request` on the calling thread if it is a write that should complete with a
    /// page-cache copy (see [`cached_write`]), unless a pause after a slow one (longer
    /// than [`SLOW_INLINE_WRITE`]) is on. Returns its result, or `None` (nothing written):
    /// submit it instead. A write that fails is also `None`: it wrote nothing, and the
    /// driver reports the error its own way (`io_submit` refuses a descriptor not open
    /// for writing up front, where the inline attempt would fail at completion).
    ///
    /// # Safety
    /// As for [`IoRequest::perform`].
    pub unsafe fn run(&self, request: &IoRequest) -> Option<i64> {
        let probing = match self.pause().until {
            Some(until) if Instant::now() < until => return None,
            Some(_) => true,
            None => false,
        };
        let began = Instant::now();
        // SAFETY: the caller's promise.
        let res = unsafe { cached_write(request) }?;
        let slow = began.elapsed() > SLOW_INLINE_WRITE;
        if slow || probing {
            let mut pause = self.pause();
            if slow {
                pause.until = Some(Instant::now() + pause.next);
                pause.next = (pause.next * 2).min(INLINE_PAUSE_MAX);
            } else {
                *pause = InlinePause {
                    until: None,
                    next: INLINE_PAUSE_MIN,
                };
            }
        }
        (res >= 0).then_some(res)
    }

    /// The pause state; it is always consistent, so a poisoned lock is too.
    fn pause(&self) -> MutexGuard<'_, InlinePause> {
        self.pause.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `request` on the calling thread if it is a write that should complete with a
/// page-cache copy: at most [`INLINE_WRITE_MAX`] bytes to a regular file on a block
/// device's filesystem at an explicit offset, with no `RWF_*` flag (`RWF_NOWAIT` is
/// answered by the kernel, the sync flags wait for the disk), on a descriptor without
/// `O_DIRECT`, `O_DSYNC` or `O_SYNC`, and whose partly written pages are in the page cache
/// (else the kernel reads them from the disk first). Returns its result, or `None`
/// (nothing done) for the driver to run it.
///
/// It may still block: on writeback throttling once the system has too many dirty pages,
/// on the journal, or on the inode lock another writer holds (see [`InlineWrites::run`],
/// which bounds how often).
///
/// # Safety
/// As for [`IoRequest::perform`].
unsafe fn cached_write(request: &IoRequest) -> Option<i64> {
    if !matches!(request.kind, IoKind::Write | IoKind::WriteV)
        || request.rw_flags != 0
        || request.offset < 0
    {
        return None;
    }
    // SAFETY: the caller's promise covers a vectored request's iovecs.
    let bytes = unsafe { request.byte_len() };
    if bytes > INLINE_WRITE_MAX {
        return None;
    }
    let fd = request.fd;
    // SAFETY: fstat writes into a zeroed struct on our stack and fcntl takes no pointer;
    // a bad descriptor makes them fail (the driver then reports it).
    let (file_type, device, status) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        (
            st.st_mode & libc::S_IFMT,
            st.st_dev,
            libc::fcntl(fd, libc::F_GETFL),
        )
    };
    // Only on filesystems over a block device: network and FUSE filesystems (and
    // overlay, tmpfs, btrfs subvolumes) have anonymous device numbers (major 0), and a
    // "buffered" write there may wait for a server or a daemon on every call.
    if file_type != libc::S_IFREG || libc::major(device) == 0 {
        return None;
    }
    // O_SYNC includes the O_DSYNC bit.
    if status < 0 || status & (libc::O_DIRECT | libc::O_DSYNC) != 0 {
        return None;
    }
    if !partial_pages_cached(fd, request.offset as u64, bytes as u64) {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { request.perform() })
}

/// Whether the pages that `offset..offset + len` covers only in part are in the page cache
/// or past the end of the file: those are the pages a buffered write must read first.
fn partial_pages_cached(fd: RawFd, offset: u64, len: u64) -> bool {
    let page = crate::io::page_size() as u64;
    let end = offset.saturating_add(len);
    let head = offset % page != 0;
    // The last page, if partly covered and not the first page already looked at.
    let tail = end % page != 0 && !(head && end / page == offset / page);
    (!head || byte_cached(fd, offset)) && (!tail || byte_cached(fd, end - 1))
}

/// Whether the byte at `offset` reads without waiting for the disk (or is past the end).
fn byte_cached(fd: RawFd, offset: u64) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let Ok(offset) = i64::try_from(offset) else {
        return false;
    };
    // SAFETY: one iovec describing a byte on our stack, valid for the call.
    unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) >= 0 }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::test_util::{pipe, temp_file};

    const LONG: Duration = Duration::from_secs(10);

    fn write_req(fd: RawFd, offset: i64, data: &[u8]) -> IoRequest {
        IoRequest {
            kind: IoKind::Write,
            fd,
            offset,
            buf: data.as_ptr().cast_mut(),
            len: data.len(),
            rw_flags: 0,
        }
    }

    #[test]
    fn inline_writes_pause_after_a_slow_one_until_a_fast_one_after_the_pause() {
        let writes = InlineWrites::default();
        let f = temp_file(&[0u8; 8192]);
        let data = *b"inline";
        let request = write_req(f.as_raw_fd(), 4096, &data);
        // SAFETY: `data` outlives every call and the write only reads it.
        let write = || unsafe { writes.run(&request) };
        assert_eq!(write(), Some(6));
        // As after a slow write: a pause in force declines.
        writes.pause().until = Some(Instant::now() + LONG);
        assert_eq!(write(), None);
        // The pause over, a fast write runs and resets the next pause's length.
        *writes.pause() = InlinePause {
            until: Some(Instant::now()),
            next: INLINE_PAUSE_MAX,
        };
        assert_eq!(write(), Some(6));
        let pause = writes.pause();
        assert!(pause.until.is_none());
        assert_eq!(pause.next, INLINE_PAUSE_MIN);
    }

    #[test]
    fn a_write_that_fails_is_left_to_the_driver() {
        let writes = InlineWrites::default();
        let f = temp_file(&[0u8; 4096]);
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let read_only = std::fs::File::open(path).unwrap();
        let data = [7u8; 16];
        let request = write_req(read_only.as_raw_fd(), 0, &data);
        // SAFETY: `data` outlives the call; the write fails (EBADF) without reading it.
        assert_eq!(unsafe { writes.run(&request) }, None);
    }

    #[test]
    fn only_small_plain_writes_to_regular_files_qualify() {
        let writes = InlineWrites::default();
        let f = temp_file(&[0u8; 4096]);
        let data = [7u8; 16];
        let big = vec![1u8; INLINE_WRITE_MAX + 1];
        let mut flagged = write_req(f.as_raw_fd(), 0, &data);
        flagged.rw_flags = libc::RWF_DSYNC;
        let mut read = write_req(f.as_raw_fd(), 0, &data);
        read.kind = IoKind::Read;
        let (_r, w) = pipe();
        for declined in [
            &flagged,
            &read,
            &write_req(f.as_raw_fd(), 0, &big),
            &write_req(f.as_raw_fd(), -1, &data),
            &write_req(w.as_raw_fd(), 0, &data),
            &write_req(-1, 0, &data),
        ] {
            // SAFETY: every buffer outlives the call; a declined request is not run.
            assert_eq!(unsafe { writes.run(declined) }, None, "{declined:?}");
        }
    }
}
