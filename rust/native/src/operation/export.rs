//! A write payload that is not `bytes`, a `read_into` target, the buffers of a vectored
//! op: the buffer exports (`PyObject_GetBuffer`) the op holds while the kernel may touch
//! the memory, so that the exporter (a `bytearray`, an `mmap`, an array) refuses to resize
//! or free it meanwhile.

use std::os::raw::c_int;

use caio_backends::io::{iov_max, max_rw_count};

use crate::error::{Error, Result};
use crate::ffi;
use crate::ffi::{PyObject, PyOwned};

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
        Self::with_flags(obj, ffi::PyBUF_SIMPLE, || {
            Error::Value(format!(
                "payload_bytes argument must be a bytes-like object, not {}",
                type_name()
            ))
        })
    }

    /// Exports `obj`'s memory as one contiguous, writable run of bytes (for a read into
    /// it): a read-only buffer (`bytes`, a read-only memoryview) keeps the exporter's
    /// `BufferError`, an object without the buffer protocol is a `TypeError`.
    pub(super) fn writable(obj: *mut PyObject, type_name: impl FnOnce() -> String) -> Result<Self> {
        Self::with_flags(obj, ffi::PyBUF_WRITABLE, || {
            Error::Type(format!(
                "read_into() needs a writable bytes-like object, not {}",
                type_name()
            ))
        })
    }

    /// Exports `obj`'s memory as one contiguous run of bytes, writable if asked;
    /// `not_a_buffer` is the error for an object without the buffer protocol, the
    /// exporter's own `BufferError` stands for a read-only or non-contiguous one.
    fn with_flags(
        obj: *mut PyObject,
        flags: c_int,
        not_a_buffer: impl FnOnce() -> Error,
    ) -> Result<Self> {
        // SAFETY: `obj` is a live argument; GIL held. `view` is written by GetBuffer only
        // when it succeeds (and then released by Drop).
        unsafe {
            if ffi::PyObject_CheckBuffer(obj) == 0 {
                return Err(not_a_buffer());
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

    /// The exporter the export holds a strong reference to (NULL if none), for the GC.
    pub(super) fn owner(&self) -> *mut PyObject {
        self.0.obj
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful GetBuffer and is released once.
        unsafe { ffi::PyBuffer_Release(&mut *self.0) };
    }
}

/// The buffers of a vectored op (`readv`/`writev`): one export per buffer and the iovec
/// array the kernel reads, describing them in order. The iovecs point into the exports'
/// memory, so both live and go together, when the completion is reaped.
pub(super) struct Vectored {
    iovecs: Box<[libc::iovec]>,
    /// Held for their memory (and visited by the GC); released on drop (with the GIL, as
    /// every op field).
    exports: Vec<Export>,
    total: usize,
}

/// The items of the sequence `seq` as a tuple and their count, at most `max`: refused as too many
/// (`ValueError`) from its length alone when it has one, and never more than `max + 1`
/// items taken (a `__getitem__` that never ends, a length that lies), so that a huge or
/// endless sequence costs nothing. Not a sequence (or a buffer, a sequence of ints named
/// apart so that `readv(bytearray(...))` says what went wrong): `TypeError`.
fn bounded_items(
    seq: *mut PyObject,
    max: usize,
    method: &str,
    type_name: impl Fn(*mut PyObject) -> String,
) -> Result<(PyOwned, usize)> {
    let too_many = |got: &dyn std::fmt::Display| {
        Error::Value(format!(
            "{method}() takes at most {max} buffers (IOV_MAX), got {got}"
        ))
    };
    // SAFETY: `seq` is a live argument, `iter` and each item new references we own; GIL
    // held. The fresh tuple gets each of its slots set once (SetItem steals the item).
    unsafe {
        if ffi::PyObject_CheckBuffer(seq) != 0 || ffi::PySequence_Check(seq) == 0 {
            return Err(Error::Type(format!(
                "{method}() takes a sequence of bytes-like objects, not {}",
                type_name(seq)
            )));
        }
        let size = ffi::PySequence_Size(seq);
        if size < 0 {
            if ffi::PyErr_ExceptionMatches(ffi::PyExc_TypeError) == 0 {
                return Err(Error::AlreadySet);
            }
            ffi::PyErr_Clear(); // no len(): counted as taken
        } else if size as usize > max {
            return Err(too_many(&size));
        } else if ffi::PyTuple_CheckExact(seq) != 0 || ffi::PyList_CheckExact(seq) != 0 {
            // Copied as they are, `size` items at most.
            let tuple = PyOwned::from_new(ffi::PySequence_Tuple(seq)).ok_or(Error::AlreadySet)?;
            return Ok((tuple, size as usize));
        }
        let iter = PyOwned::from_new(ffi::PyObject_GetIter(seq)).ok_or(Error::AlreadySet)?;
        let mut items = Vec::new();
        while items.len() <= max {
            match PyOwned::from_new(ffi::PyIter_Next(iter.as_ptr())) {
                Some(item) => items.push(item),
                None if !ffi::PyErr_Occurred().is_null() => return Err(Error::AlreadySet),
                None => break,
            }
        }
        if items.len() > max {
            return Err(too_many(&"more"));
        }
        let count = items.len();
        let tuple = PyOwned::from_new(ffi::PyTuple_New(count as ffi::Py_ssize_t))
            .ok_or(Error::AlreadySet)?;
        for (index, item) in items.into_iter().enumerate() {
            ffi::PyTuple_SetItem(tuple.as_ptr(), index as ffi::Py_ssize_t, item.into_ptr());
        }
        Ok((tuple, count))
    }
}

impl Vectored {
    /// Exports every buffer of the sequence `seq` (writable ones for a read), in order.
    /// Returns the buffers as a new tuple (the op's `payload`) with their exports.
    /// Errors: not a sequence, an element without the buffer protocol: `TypeError`; a
    /// read-only (for a read) or non-contiguous element: the exporter's `BufferError`;
    /// no elements, more than `IOV_MAX`, or more bytes than one request moves
    /// ([`max_rw_count`], so a vectored request is always one syscall): `ValueError`.
    /// Whatever was exported before an error is released.
    pub(super) fn of(
        seq: *mut PyObject,
        writable: bool,
        method: &str,
        type_name: impl Fn(*mut PyObject) -> String,
    ) -> Result<(PyOwned, Self)> {
        let max = iov_max();
        let (tuple, count) = bounded_items(seq, max, method, &type_name)?;
        if count == 0 {
            return Err(Error::Value(format!(
                "{method}() needs at least one buffer"
            )));
        }
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        let what = if writable { "a writable" } else { "a" };
        let mut exports = Vec::with_capacity(count);
        let mut iovecs = Vec::with_capacity(count);
        let mut total = 0usize;
        for index in 0..count {
            // SAFETY: `index` is within the tuple, which holds the item; GIL held.
            let item = unsafe { ffi::PyTuple_GetItem(tuple.as_ptr(), index as ffi::Py_ssize_t) };
            let export = Export::with_flags(item, flags, || {
                Error::Type(format!(
                    "{method}() needs {what} bytes-like object at index {index}, not {}",
                    type_name(item)
                ))
            })?;
            let (data, len) = export.region();
            total = total.saturating_add(len);
            iovecs.push(libc::iovec {
                // An empty buffer's address means nothing; NULL keeps it from failing an
                // O_DIRECT alignment check in the kernel.
                iov_base: if len == 0 {
                    std::ptr::null_mut()
                } else {
                    data.cast()
                },
                iov_len: len,
            });
            exports.push(export);
        }
        let max_total = max_rw_count();
        if total > max_total {
            return Err(Error::Value(format!(
                "{method}() buffers total {total} bytes, more than one request moves \
                 ({max_total} bytes)"
            )));
        }
        let vectored = Self {
            iovecs: iovecs.into_boxed_slice(),
            exports,
            total,
        };
        Ok((tuple, vectored))
    }

    /// `(iovec array, count)`: a vectored request's `buf` and `len`.
    pub(super) fn request_region(&self) -> (*mut u8, usize) {
        (self.iovecs.as_ptr().cast_mut().cast(), self.iovecs.len())
    }

    /// The exporters the exports hold strong references to, for the GC.
    pub(super) fn owners(&self) -> impl Iterator<Item = *mut PyObject> + '_ {
        self.exports.iter().map(Export::owner)
    }

    /// The bytes all the buffers hold.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Each buffer's `(address, size)`, in order (empty ones at address 0).
    pub(super) fn segments(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.iovecs
            .iter()
            .map(|iov| (iov.iov_base as usize, iov.iov_len))
    }
}
