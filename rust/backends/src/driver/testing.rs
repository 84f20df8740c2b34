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
        }
    }

    pub(crate) fn sync(fd: RawFd) -> Self {
        Self {
            kind: IoKind::Fsync,
            fd,
            offset: 0,
            buf: Box::new([]),
            direct: false,
            rw_flags: 0,
        }
    }
}

// SAFETY: the boxed buffer is owned by the entry alone, stays at one address while the
// entry moves, and is freed only with the entry.
unsafe impl Entry for FakeEntry {
    fn request(&self) -> IoRequest {
        IoRequest {
            kind: self.kind,
            fd: self.fd,
            offset: self.offset,
            buf: self.buf.as_ptr().cast_mut(),
            len: self.buf.len(),
            rw_flags: self.rw_flags,
        }
    }

    fn is_direct(&self) -> bool {
        self.direct
    }
}
