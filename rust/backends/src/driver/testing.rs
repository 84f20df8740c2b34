//! A fake operation for driver tests: it owns a plain buffer, as the bridge's entry owns
//! a Python Operation and its buffer.

use std::os::fd::RawFd;

use super::Entry;
use crate::{IoKind, IoRequest};

/// A request with the buffer it owns. Dropping one the driver accepted would be a driver
/// bug (a driver hands every accepted entry back): `handed_back` lets tests check that.
pub(crate) struct FakeEntry {
    pub(crate) kind: IoKind,
    pub(crate) fd: RawFd,
    pub(crate) offset: i64,
    /// Boxed: its address does not change when the entry moves.
    pub(crate) buf: Box<[u8]>,
    pub(crate) direct: bool,
    pub(crate) rw_flags: i32,
    /// A vectored request's iovecs, over consecutive pieces of `buf` (boxed: stable too).
    pub(crate) iovecs: Box<[libc::iovec]>,
}

impl FakeEntry {
    pub(crate) fn read(fd: RawFd, len: usize, offset: i64) -> Self {
        Self {
            kind: IoKind::Read,
            fd,
            offset,
            buf: vec![0u8; len].into_boxed_slice(),
            direct: false,
            rw_flags: 0,
            iovecs: Box::new([]),
        }
    }

    pub(crate) fn write(fd: RawFd, data: &[u8], offset: i64) -> Self {
        Self {
            kind: IoKind::Write,
            fd,
            offset,
            buf: data.to_vec().into_boxed_slice(),
            direct: false,
            rw_flags: 0,
            iovecs: Box::new([]),
        }
    }

    /// A vectored request over `buf` cut into pieces of `sizes` bytes, in order.
    fn vectored(kind: IoKind, fd: RawFd, mut buf: Box<[u8]>, sizes: &[usize], offset: i64) -> Self {
        let mut at = 0;
        let iovecs = sizes
            .iter()
            .map(|&size| {
                let iov = libc::iovec {
                    iov_base: buf[at..].as_mut_ptr().cast(),
                    iov_len: size,
                };
                at += size;
                iov
            })
            .collect();
        assert!(sizes.iter().sum::<usize>() <= buf.len());
        Self {
            kind,
            fd,
            offset,
            buf,
            direct: false,
            rw_flags: 0,
            iovecs,
        }
    }

    /// A `ReadV` into pieces of `sizes` bytes of one zeroed buffer.
    pub(crate) fn readv(fd: RawFd, sizes: &[usize], offset: i64) -> Self {
        let buf = vec![0u8; sizes.iter().sum()].into_boxed_slice();
        Self::vectored(IoKind::ReadV, fd, buf, sizes, offset)
    }

    /// A `WriteV` of `data` cut into pieces of `sizes` bytes.
    pub(crate) fn writev(fd: RawFd, data: &[u8], sizes: &[usize], offset: i64) -> Self {
        let buf = data.to_vec().into_boxed_slice();
        Self::vectored(IoKind::WriteV, fd, buf, sizes, offset)
    }

    pub(crate) fn sync(fd: RawFd) -> Self {
        Self {
            kind: IoKind::Fsync,
            fd,
            offset: 0,
            buf: Box::new([]),
            direct: false,
            rw_flags: 0,
            iovecs: Box::new([]),
        }
    }
}

// SAFETY: the iovecs' pointers point into `buf`, which moves with the entry and is used by
// whichever one thread has the entry.
unsafe impl Send for FakeEntry {}

// SAFETY: the boxed buffer (and the boxed iovecs into it) is owned by the entry alone,
// stays at one address while the entry moves, and is freed only with the entry.
unsafe impl Entry for FakeEntry {
    fn request(&self) -> IoRequest {
        let (buf, len) = if self.kind.is_vectored() {
            (self.iovecs.as_ptr().cast_mut().cast(), self.iovecs.len())
        } else {
            (self.buf.as_ptr().cast_mut(), self.buf.len())
        };
        IoRequest {
            kind: self.kind,
            fd: self.fd,
            offset: self.offset,
            buf,
            len,
            rw_flags: self.rw_flags,
        }
    }

    fn is_direct(&self) -> bool {
        self.direct
    }
}

/// Where [`route`](super::offload::route) sends `entry`, and the offset it leaves it.
pub(crate) fn route_of(entry: &FakeEntry) -> (super::offload::Route, i64) {
    let mut request = entry.request();
    let route = super::offload::route(&mut request, entry.is_direct());
    (route, request.offset)
}
