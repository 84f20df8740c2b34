//! The engine's strong references to in-flight operations.

use std::sync::{Mutex, MutexGuard};

use caio_core::Registry;

use crate::ffi::PyOwned;

/// Ops in flight, each with the strong reference the engine holds on the kernel's behalf.
/// Only a Context whose completions need pumping shows them to the GC (see
/// `context::Engine::visit_in_flight`), and a Context has no `tp_clear`, so the GC never
/// drops them: it can never free an op the kernel may still write into. Lock it only with
/// the GIL held (`visit` relies on that).
pub(crate) struct InFlight<T = PyOwned>(Mutex<Registry<T>>);

impl<T> InFlight<T> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Registry::new()))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry<T>> {
        // Registry operations cannot panic half-way, so a poisoned lock is still sound.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> InFlight<T> {
    /// Visits the op of every entry (GC `tp_traverse`; `op_of` picks it out of an entry).
    /// The lock is only ever taken with the GIL held, and the GC holds it, so the registry
    /// cannot change during a collection; should the lock be taken all the same (by this
    /// very thread), nothing is visited, every time: the GC then sees references it cannot
    /// explain and keeps the ops, which is always safe.
    pub(crate) fn visit(
        &self,
        visit: crate::ffi::visitproc,
        arg: *mut std::os::raw::c_void,
        op_of: impl Fn(&T) -> *mut crate::ffi::PyObject,
    ) -> std::os::raw::c_int {
        let registry = match self.0.try_lock() {
            Ok(registry) => registry,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return 0,
        };
        for entry in registry.values() {
            // SAFETY: each entry holds a strong reference to a live op; GIL held (GC).
            let r = unsafe { visit(op_of(entry), arg) };
            if r != 0 {
                return r;
            }
        }
        0
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        // Entries left here can never complete (the interpreter is going away, or their
        // worker died). Their buffers may still be in use, and we may not hold the GIL:
        // leak them rather than free or DECREF anything.
        for op in self.lock().drain() {
            std::mem::forget(op);
        }
    }
}
