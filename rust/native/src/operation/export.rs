//! A write payload that is not `bytes`: the buffer export (`PyObject_GetBuffer`) the op
//! holds while the kernel may read the memory, so that the exporter (a `bytearray`, an
//! `mmap`, an array) refuses to resize or free it meanwhile.

use crate::error::{Error, Result};
use crate::ffi;
use crate::ffi::PyObject;

/// A contiguous buffer export, released on drop (with the GIL: every op field is dropped
/// with it held).
pub(super) struct Export(Box<ffi::Py_buffer>);

// SAFETY: the export is plain memory description plus a strong reference the view holds;
// it moves with its op, and is only created and released with the GIL held.
unsafe impl Send for Export {}

impl Export {
    /// Exports `obj`'s memory as one contiguous, read-only run of bytes. An object without
    /// the buffer protocol is a `ValueError` (caio's type for a wrong payload); one whose
    /// memory is not contiguous keeps the exporter's own `BufferError`.
    pub(super) fn of(obj: *mut PyObject, type_name: impl FnOnce() -> String) -> Result<Self> {
        Self::with_flags(obj, ffi::PyBUF_SIMPLE, type_name)
    }

    /// Exports `obj`'s memory as one contiguous, writable run of bytes (for a read into
    /// it): a read-only buffer (`bytes`, a read-only memoryview) keeps the exporter's
    /// `BufferError`, an object without the buffer protocol is a `TypeError`.
    pub(super) fn writable(obj: *mut PyObject, type_name: impl FnOnce() -> String) -> Result<Self> {
        // SAFETY: `obj` is a live argument; GIL held.
        if unsafe { ffi::PyObject_CheckBuffer(obj) } == 0 {
            return Err(Error::Type(format!(
                "read_into() needs a writable bytes-like object, not {}",
                type_name()
            )));
        }
        Self::with_flags(obj, ffi::PyBUF_WRITABLE, type_name)
    }

    fn with_flags(
        obj: *mut PyObject,
        flags: std::os::raw::c_int,
        type_name: impl FnOnce() -> String,
    ) -> Result<Self> {
        // SAFETY: `obj` is a live argument; GIL held. `view` is written by GetBuffer only
        // when it succeeds (and then released by Drop).
        unsafe {
            if ffi::PyObject_CheckBuffer(obj) == 0 {
                return Err(Error::Value(format!(
                    "payload_bytes argument must be a bytes-like object, not {}",
                    type_name()
                )));
            }
            let mut view = Box::new(std::mem::zeroed::<ffi::Py_buffer>());
            if ffi::PyObject_GetBuffer(obj, &mut *view, flags) != 0 {
                return Err(Error::AlreadySet);
            }
            Ok(Self(view))
        }
    }

    /// `(data, size)` of the exported memory.
    pub(super) fn region(&self) -> (*mut u8, usize) {
        (self.0.buf.cast::<u8>(), self.0.len as usize)
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful GetBuffer and is released once.
        unsafe { ffi::PyBuffer_Release(&mut *self.0) };
    }
}
