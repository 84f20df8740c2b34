//! An owned strong reference.

use std::ptr::NonNull;

use super::{PyObject, Py_DecRef, Py_IncRef};

/// A strong reference we own: `Clone` increments and `Drop` decrements the refcount.
/// Both need the GIL, which every holder of a `PyOwned` has by construction: they are only
/// created and dropped by bridge code running on a thread that holds it.
#[repr(transparent)]
pub(crate) struct PyOwned(NonNull<PyObject>);

// SAFETY: a `PyOwned` may travel between threads inside the in-flight registry; it is
// only cloned or dropped on threads holding the GIL (see the type's docs), which
// serialises refcount changes.
unsafe impl Send for PyOwned {}

impl PyOwned {
    /// Takes over a new reference (from a `New reference` C-API call). `None` on NULL,
    /// which the C-API uses to say an exception is set.
    ///
    /// # Safety
    /// `ptr` is NULL or a new strong reference the caller gives away; the GIL is held.
    pub(crate) unsafe fn from_new(ptr: *mut PyObject) -> Option<Self> {
        NonNull::new(ptr).map(Self)
    }

    /// Takes a new strong reference to a borrowed object.
    ///
    /// # Safety
    /// `ptr` points to a live object; the GIL is held.
    pub(crate) unsafe fn from_borrowed(ptr: NonNull<PyObject>) -> Self {
        // SAFETY: live object, GIL held (caller's contract).
        unsafe { Py_IncRef(ptr.as_ptr()) };
        Self(ptr)
    }

    pub(crate) fn as_ptr(&self) -> *mut PyObject {
        self.0.as_ptr()
    }

    /// Gives the reference away (to a C-API return value).
    pub(crate) fn into_ptr(self) -> *mut PyObject {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl Clone for PyOwned {
    fn clone(&self) -> Self {
        // SAFETY: we hold a strong reference, so the object is live; GIL held (type docs).
        unsafe { Py_IncRef(self.0.as_ptr()) };
        Self(self.0)
    }
}

impl Drop for PyOwned {
    fn drop(&mut self) {
        // SAFETY: releases the reference this value owns; GIL held (type docs).
        unsafe { Py_DecRef(self.0.as_ptr()) };
    }
}
