//! New references to return from C-API entry points.

use crate::error::{Error, Result};
use crate::ffi::{self, PyObject};

fn checked(obj: *mut PyObject) -> Result<*mut PyObject> {
    if obj.is_null() {
        Err(Error::AlreadySet)
    } else {
        Ok(obj)
    }
}

/// A Python `int` from a signed value.
pub(crate) fn int(value: i64) -> Result<*mut PyObject> {
    // SAFETY: plain constructor; every caller holds the GIL.
    checked(unsafe { ffi::PyLong_FromLongLong(value) })
}

/// A Python `int` from an unsigned value.
pub(crate) fn uint(value: u64) -> Result<*mut PyObject> {
    // SAFETY: plain constructor; every caller holds the GIL.
    checked(unsafe { ffi::PyLong_FromUnsignedLongLong(value) })
}

fn new_ref(obj: *mut PyObject) -> *mut PyObject {
    // SAFETY: `obj` is one of the interpreter's static singletons; GIL held.
    unsafe { ffi::Py_IncRef(obj) };
    obj
}

/// `None`.
pub(crate) fn none() -> *mut PyObject {
    // SAFETY: Py_None only reads a static.
    new_ref(unsafe { ffi::Py_None() })
}

/// `True` or `False`.
pub(crate) fn boolean(value: bool) -> *mut PyObject {
    // SAFETY: Py_True/Py_False only read statics.
    new_ref(unsafe {
        if value {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        }
    })
}
