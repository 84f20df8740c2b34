//! Errors as Rust values, raised as Python exceptions at one boundary ([`entry`]).

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::ffi::{self, PyObject, PyOwned};

/// A Python exception to raise, or one the C-API has already set.
#[derive(Debug)]
pub(crate) enum Error {
    Type(String),
    Value(String),
    Runtime(String),
    Overflow(String),
    Attribute(String),
    Memory(String),
    System(String),
    NotImplemented(String),
    /// `BlockingIOError()` with no arguments (as caio's `poll()` raises it).
    WouldBlock,
    /// A failed operation: `SystemError(strerror)` with `errno`/`strerror` attributes.
    Errno(i32),
    /// `OSError(errno, message)` (the builtin picks the subclass, e.g. `BlockingIOError`
    /// for `EAGAIN`): a system call failed outside an operation, e.g. a Context could not
    /// get a kernel resource; the message says which limit and how to raise it.
    Os(i32, String),
    /// The C-API already set an exception (NULL or -1 came back).
    AlreadySet,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

impl Error {
    #[cold]
    fn raise(self) {
        // SAFETY: the boundary runs with the GIL held; exception objects are static.
        unsafe {
            let (kind, msg) = match self {
                Error::AlreadySet => {
                    if ffi::PyErr_Occurred().is_null() {
                        (
                            ffi::PyExc_SystemError,
                            "caio: error reported without an exception".into(),
                        )
                    } else {
                        return;
                    }
                }
                Error::Type(m) => (ffi::PyExc_TypeError, m),
                Error::Value(m) => (ffi::PyExc_ValueError, m),
                Error::Runtime(m) => (ffi::PyExc_RuntimeError, m),
                Error::Overflow(m) => (ffi::PyExc_OverflowError, m),
                Error::Attribute(m) => (ffi::PyExc_AttributeError, m),
                Error::Memory(m) => (ffi::PyExc_MemoryError, m),
                Error::System(m) => (ffi::PyExc_SystemError, m),
                Error::NotImplemented(m) => (ffi::PyExc_NotImplementedError, m),
                Error::WouldBlock => {
                    ffi::PyErr_SetObject(ffi::PyExc_BlockingIOError, ptr::null_mut());
                    return;
                }
                Error::Errno(errno) => return raise_errno(errno),
                Error::Os(errno, message) => return raise_os_error(errno, &message),
            };
            let text = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
            ffi::PyErr_SetString(kind, text.as_ptr());
        }
    }
}

/// `SystemError(strerror)` as caio raises it for a failed operation, plus `errno` and
/// `strerror` attributes so callers can tell errors apart without parsing text.
#[cold]
fn raise_errno(errno: i32) {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or("").to_owned();
    // SAFETY: GIL held at the boundary; every object built here is owned by a PyOwned
    // until it is handed to PyErr_SetObject, which takes its own reference.
    unsafe {
        let Ok(message) = str_object(&text) else {
            return;
        };
        let Some(exc) = PyOwned::from_new(ffi::PyObject_CallOneArg(
            ffi::PyExc_SystemError,
            message.as_ptr(),
        )) else {
            return;
        };
        let Some(code) = PyOwned::from_new(ffi::PyLong_FromLongLong(errno as i64)) else {
            return;
        };
        if ffi::PyObject_SetAttrString(exc.as_ptr(), c"errno".as_ptr(), code.as_ptr()) < 0
            || ffi::PyObject_SetAttrString(exc.as_ptr(), c"strerror".as_ptr(), message.as_ptr()) < 0
        {
            return;
        }
        ffi::PyErr_SetObject(ffi::PyExc_SystemError, exc.as_ptr());
    }
}

/// `OSError(errno, message)`, so that `exc.errno`, `exc.strerror` and the subclass are
/// what Python itself would give for that errno.
#[cold]
fn raise_os_error(errno: i32, message: &str) {
    // SAFETY: GIL held at the boundary; the argument objects are owned until the call.
    unsafe {
        let Ok(text) = str_object(message) else {
            return;
        };
        let Some(code) = PyOwned::from_new(ffi::PyLong_FromLongLong(errno as i64)) else {
            return;
        };
        let Some(args) = PyOwned::from_new(ffi::PyTuple_New(2)) else {
            return;
        };
        // PyTuple_SetItem steals a reference: hand it new ones.
        ffi::PyTuple_SetItem(args.as_ptr(), 0, code.into_ptr());
        ffi::PyTuple_SetItem(args.as_ptr(), 1, text.into_ptr());
        let Some(exc) =
            PyOwned::from_new(ffi::PyObject_CallObject(ffi::PyExc_OSError, args.as_ptr()))
        else {
            return;
        };
        ffi::PyErr_SetObject(ffi::Py_TYPE(exc.as_ptr()).cast(), exc.as_ptr());
    }
}

/// A new `str`.
pub(crate) fn str_object(text: &str) -> Result<PyOwned> {
    // SAFETY: the pointer/length pair describes `text`; GIL held by every caller.
    unsafe {
        PyOwned::from_new(ffi::PyUnicode_FromStringAndSize(
            text.as_ptr().cast(),
            text.len() as ffi::Py_ssize_t,
        ))
    }
    .ok_or(Error::AlreadySet)
}

/// `repr(obj)` as a Rust string (a placeholder if repr itself fails).
pub(crate) fn repr_of(obj: *mut PyObject) -> String {
    // SAFETY: `obj` is a live object passed in by Python; GIL held.
    unsafe {
        let Some(r) = PyOwned::from_new(ffi::PyObject_Repr(obj)) else {
            clear_error();
            return "<unrepresentable object>".into();
        };
        let mut len: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(r.as_ptr(), &mut len);
        if data.is_null() {
            clear_error();
            return "<unrepresentable object>".into();
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len as usize);
        String::from_utf8_lossy(bytes).into_owned()
    }
}

fn clear_error() {
    let (mut t, mut v, mut tb) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    // SAFETY: takes ownership of the pending exception's parts, which the PyOwned
    // wrappers then release; GIL held.
    unsafe {
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        drop((
            PyOwned::from_new(t),
            PyOwned::from_new(v),
            PyOwned::from_new(tb),
        ));
    }
}

/// Reports the pending exception to `sys.unraisablehook` (a failing callback must not stop
/// the delivery of other completions).
pub(crate) fn write_unraisable(context: *mut PyObject) {
    // SAFETY: GIL held; `context` is a live object or NULL.
    unsafe { ffi::PyErr_WriteUnraisable(context) };
}

/// Values a C-API entry point can return on success; each has its own error sentinel.
pub(crate) trait Sentinel: Copy {
    const ERROR: Self;
}

impl Sentinel for *mut PyObject {
    const ERROR: Self = ptr::null_mut();
}

impl Sentinel for std::os::raw::c_int {
    const ERROR: Self = -1;
}

/// Runs the body of an `extern "C"` entry point: an `Err` becomes a raised exception and a
/// panic becomes a `SystemError` instead of unwinding into the interpreter.
pub(crate) fn entry<T: Sentinel>(body: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => {
            err.raise();
            T::ERROR
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Error::Runtime(format!("caio internal error: {what}")).raise();
            T::ERROR
        }
    }
}
