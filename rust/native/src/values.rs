//! New references to return from C-API entry points.

use crate::error::{Error, Result};
use crate::ffi::{self, PyObject, PyOwned};

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

/// A tuple of two Python `int`s.
pub(crate) fn uint_pair(a: u64, b: u64) -> Result<*mut PyObject> {
    // SAFETY: a fresh tuple of two slots, each set once with a new reference (which
    // PyTuple_SetItem steals, even when it fails); GIL held by every caller.
    unsafe {
        let tuple = PyOwned::from_new(ffi::PyTuple_New(2)).ok_or(Error::AlreadySet)?;
        for (i, value) in [a, b].into_iter().enumerate() {
            if ffi::PyTuple_SetItem(tuple.as_ptr(), i as ffi::Py_ssize_t, uint(value)?) != 0 {
                return Err(Error::AlreadySet);
            }
        }
        Ok(tuple.into_ptr())
    }
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
