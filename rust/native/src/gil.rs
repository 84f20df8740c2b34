//! Releasing the GIL around blocking work.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::ffi;

/// Runs `f` with the GIL released and takes it back afterwards, even if `f` panics.
/// `f` must not touch Python objects.
pub(crate) fn without_gil<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: every caller holds the GIL (we are inside a C-API call); the thread state is
    // restored below on every path.
    let state = unsafe { ffi::PyEval_SaveThread() };
    let result = catch_unwind(AssertUnwindSafe(f));
    // SAFETY: `state` is the thread state saved above, on this same thread.
    unsafe { ffi::PyEval_RestoreThread(state) };
    result.unwrap_or_else(|panic| resume_unwind(panic))
}
