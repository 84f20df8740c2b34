//! Helpers shared by the unit tests.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An anonymous read-write file (created in the temp dir, then unlinked) holding `data`.
pub(crate) fn temp_file(data: &[u8]) -> std::fs::File {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "caio-backends-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(data).unwrap();
    f
}

/// A fresh pipe: (read end, write end), both close-on-exec.
pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2() writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let [r, w] = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    (r, w)
}

/// Returns from the test (skipped, with a note) where io_uring cannot be used.
macro_rules! require_uring {
    () => {
        if $crate::uring::Ring::probe().is_err() {
            eprintln!("io_uring unavailable here; skipped");
            return;
        }
    };
}

pub(crate) use require_uring;
