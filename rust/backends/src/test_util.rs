//! Helpers shared by the unit tests.

use std::io::Write;
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
