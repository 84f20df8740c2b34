//! A non-blocking, close-on-exec eventfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The counter that tells an event loop "completions are waiting".
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates a fresh eventfd with a zero counter.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is handled below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, waking whoever polls the descriptor.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local; the fd is open for our lifetime.
        // The only possible failure is EAGAIN on a counter near u64::MAX, which still
        // leaves the descriptor readable, so it is safe to ignore.
        unsafe {
            libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Reads and resets the counter without blocking. `WouldBlock` when it is zero.
    pub fn read(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local; the fd is open for our lifetime.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        if n == 8 {
            Ok(value)
        } else if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_coalesce_and_read_resets_the_counter() {
        let efd = EventFd::new().unwrap();
        assert_eq!(efd.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        efd.signal();
        efd.signal();
        assert_eq!(efd.read().unwrap(), 2);
        assert_eq!(efd.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
