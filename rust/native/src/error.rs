//! Errors as Rust values, raised as Python exceptions at one boundary ([`entry`]).

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

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
    NotImplemented(String),
    /// `BlockingIOError()` with no arguments (as caio's `poll()` raises it).
    WouldBlock,
    /// A kernel error where caio raised `SystemError` (a failed operation, a failed
    /// Context call): `caio.errors.OperationError(errno, strerror)`, an `OSError` that is
    /// also a `SystemError`.
    Errno(i32),
    /// A request kernel AIO refused up front, where caio raised `ValueError`:
    /// `caio.errors.SubmitError(errno, message)`, an `OSError` that is also a `ValueError`.
    Refused(i32, String),
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
                Error::NotImplemented(m) => (ffi::PyExc_NotImplementedError, m),
                Error::WouldBlock => {
                    ffi::PyErr_SetObject(ffi::PyExc_BlockingIOError, ptr::null_mut());
                    return;
                }
                Error::Errno(errno) => {
                    let class = OPERATION_ERROR.load(Ordering::Acquire);
                    return raise_os_error(class, errno, &strerror(errno));
                }
                Error::Refused(errno, message) => {
                    return raise_os_error(SUBMIT_ERROR.load(Ordering::Acquire), errno, &message)
                }
                Error::Os(errno, message) => {
                    return raise_os_error(ffi::PyExc_OSError, errno, &message)
                }
            };
            let text = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
            ffi::PyErr_SetString(kind, text.as_ptr());
        }
    }
}

/// The exception classes of `caio.errors`, looked up once when the module is executed.
static OPERATION_ERROR: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());
static SUBMIT_ERROR: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());

/// Imports `caio.errors` and keeps its classes: the errno mapping lives there, in Python,
/// so that the pure-Python backend raises exactly the same exceptions.
pub(crate) fn init() -> Result<()> {
    // SAFETY: called from the module's exec slot with the GIL held; the class references
    // are kept for the life of the process (the module supports one interpreter only).
    unsafe {
        let module = PyOwned::from_new(ffi::PyImport_ImportModule(c"caio.errors".as_ptr()))
            .ok_or(Error::AlreadySet)?;
        for (name, slot) in [
            (c"OperationError", &OPERATION_ERROR),
            (c"SubmitError", &SUBMIT_ERROR),
        ] {
            let class =
                PyOwned::from_new(ffi::PyObject_GetAttrString(module.as_ptr(), name.as_ptr()))
                    .ok_or(Error::AlreadySet)?;
            let old = slot.swap(class.into_ptr(), Ordering::AcqRel);
            drop(PyOwned::from_new(old));
        }
    }
    Ok(())
}

/// The C library's text for `errno`, as `os.strerror` gives it.
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    text.split(" (os error").next().unwrap_or("").to_owned()
}

/// Raises `class(errno, message)`; `class` is one of `caio.errors`' classes (NULL before
/// [`init`], then plain `OSError`) or `OSError`, which both pick the errno's subclass.
#[cold]
fn raise_os_error(class: *mut PyObject, errno: i32, message: &str) {
    // SAFETY: GIL held at the boundary; the argument objects are owned until the call;
    // `PyExc_OSError` is a static exception object.
    unsafe {
        let class = if class.is_null() {
            ffi::PyExc_OSError
        } else {
            class
        };
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
        let Some(exc) = PyOwned::from_new(ffi::PyObject_CallObject(class, args.as_ptr())) else {
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
