//! Releasing the GIL around blocking work.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

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

/// What one blocking step of a [`wait_interruptibly`] loop ended with.
pub(crate) enum Waited<T> {
    /// The wait is over (what it waited for arrived, or its time ran out).
    Done(T),
    /// A signal interrupted it (`EINTR`) before it was over.
    Interrupted,
}

/// Blocks in `step` with the GIL released until it reports [`Waited::Done`], giving it the
/// time left each round (`None`: no limit; `Some(ZERO)`: look once more and finish).
///
/// A step interrupted by a signal takes the GIL back and runs Python's signal handlers
/// (`PyErr_CheckSignals`): an exception they raise (`KeyboardInterrupt` for Ctrl-C) ends
/// the wait as an error; otherwise the wait resumes for the time that is left. `step` must
/// not touch Python objects.
pub(crate) fn wait_interruptibly<T>(
    timeout: Option<Duration>,
    mut step: impl FnMut(Option<Duration>) -> Result<Waited<T>>,
) -> Result<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match without_gil(|| step(left))? {
            Waited::Done(value) => return Ok(value),
            Waited::Interrupted => {
                // SAFETY: the GIL is held again (without_gil restored it).
                if unsafe { ffi::PyErr_CheckSignals() } < 0 {
                    return Err(Error::AlreadySet);
                }
            }
        }
    }
}
