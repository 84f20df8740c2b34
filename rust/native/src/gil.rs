//! The GIL: releasing it around blocking work, and taking it on threads of ours.

use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};
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

/// Runs a blocking wait with the GIL released. The wait gets an `on_signal` hook for
/// when a signal interrupts it: the hook takes the GIL back, runs Python's signal
/// handlers (`PyErr_CheckSignals`) and releases it again, answering whether to go on. An
/// exception a handler raised (`KeyboardInterrupt` for Ctrl-C) is what the call then
/// raises, whatever the wait returned. `wait` must not touch Python objects.
pub(crate) fn blocking_wait<T>(wait: impl FnOnce(&mut dyn FnMut() -> bool) -> T) -> Result<T> {
    // SAFETY: every caller holds the GIL; it is restored below on every path.
    let mut state = unsafe { ffi::PyEval_SaveThread() };
    let mut raised = false;
    let result = {
        let mut on_signal = || {
            // SAFETY: `state` is this thread's saved state; the GIL is released again
            // before returning, so the wait goes on without it.
            unsafe {
                ffi::PyEval_RestoreThread(state);
                raised = ffi::PyErr_CheckSignals() < 0;
                state = ffi::PyEval_SaveThread();
            }
            !raised
        };
        catch_unwind(AssertUnwindSafe(|| wait(&mut on_signal)))
    };
    // SAFETY: `state` is the thread state saved last, on this same thread.
    unsafe { ffi::PyEval_RestoreThread(state) };
    let value = result.unwrap_or_else(|panic| resume_unwind(panic));
    if raised {
        return Err(Error::AlreadySet);
    }
    Ok(value)
}

/// The GIL taken on a thread of ours (a worker, the drainer), released on drop, so that a
/// panic on the way out cannot leave it held.
pub(crate) struct GilGuard(ffi::PyGILState_STATE, PhantomData<*const ()>);

impl GilGuard {
    /// Takes the GIL. `None` once the interpreter is finalizing: taking it then would
    /// kill or hang this thread.
    pub(crate) fn acquire() -> Option<Self> {
        if ffi::is_finalizing() {
            return None;
        }
        // SAFETY: the interpreter is alive (checked above); released by Drop on this thread.
        Some(Self(unsafe { ffi::PyGILState_Ensure() }, PhantomData))
    }
}

impl Drop for GilGuard {
    fn drop(&mut self) {
        // SAFETY: pairs the Ensure of `acquire`, on the same thread (the guard is not Send).
        unsafe { ffi::PyGILState_Release(self.0) };
    }
}
