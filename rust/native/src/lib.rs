//! `caio._native`: the CPython bridge over caio's Rust backends, on the raw C-API.
//!
//! Layout: [`ffi`] (the C-API surface and owned references), [`error`] (the one place
//! exceptions are raised), [`types`] (heap-type construction), [`operation`] (the
//! Operation object every backend shares), [`context`] (the one generic Context, over a
//! backend's `Driver`), [`entry`] (what a driver carries for an Operation), and one small
//! module per backend: its names, arguments, error tables and extra methods.

mod args;
mod context;
mod drainer;
mod entry;
mod error;
mod ffi;
mod gil;
mod limits;
mod linux_aio;
mod linux_uring;
mod operation;
mod thread_aio;
mod types;
mod values;

use std::os::raw::c_int;
use std::ptr;

use crate::ffi::PyObject;

unsafe extern "C" fn module_exec(module: *mut PyObject) -> c_int {
    error::entry(|| {
        error::init()?;
        context::register::<thread_aio::Threads<false>>(module)?;
        context::register::<thread_aio::Threads<true>>(module)?;
        context::register::<linux_uring::Uring>(module)?;
        context::register::<linux_aio::Aio>(module)?;
        Ok(0)
    })
}

unsafe extern "C" fn uring_probe(_module: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    error::entry(|| match linux_uring::probe() {
        None => Ok(values::none()),
        Some(reason) => error::str_object(&reason).map(ffi::PyOwned::into_ptr),
    })
}

unsafe extern "C" fn aio_probe(_module: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    error::entry(|| match linux_aio::probe() {
        None => Ok(values::none()),
        Some(reason) => error::str_object(&reason).map(ffi::PyOwned::into_ptr),
    })
}

unsafe extern "C" fn uring_sqpoll_allowed(
    _module: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    error::entry(|| Ok(values::boolean(linux_uring::sqpoll_allowed())))
}

/// `direct_alignment(fd) -> (memory, offset_and_size)`: what `O_DIRECT` needs on `fd`.
unsafe extern "C" fn direct_alignment(_module: *mut PyObject, fd: *mut PyObject) -> *mut PyObject {
    error::entry(|| {
        // SAFETY: `fd` is the call's live argument; GIL held. -1 means it raised.
        let fd = unsafe { ffi::PyObject_AsFileDescriptor(fd) };
        if fd < 0 {
            return Err(error::Error::AlreadySet);
        }
        let (memory, block) = caio_backends::aio::direct_io_alignment(fd);
        values::uint_pair(memory as u64, block as u64)
    })
}

/// `_direct_bounces() -> int`: O_DIRECT bounce buffers allocated so far (for tests).
unsafe extern "C" fn direct_bounces(_module: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    error::entry(|| values::uint(caio_backends::buffer::bounce_buffers_allocated()))
}

/// `io_limits() -> (iov_max, max_rw_count)`: the most buffers and bytes one vectored
/// request takes (python_aio uses the same limits). Safe: it reads neither argument.
extern "C" fn io_limits(_module: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    use caio_backends::io::{iov_max, max_rw_count};
    error::entry(|| values::uint_pair(iov_max() as u64, max_rw_count() as u64))
}

/// The module definition and its slots, handed to the interpreter once.
struct ModuleDef(std::cell::UnsafeCell<ffi::PyModuleDef>);

// SAFETY: the definition is only touched by `PyInit__native`, which the interpreter calls
// with the GIL held, and by the interpreter itself.
unsafe impl Sync for ModuleDef {}

static mut SLOTS: [ffi::PyModuleDef_Slot; 4] = [
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_exec,
        value: module_exec as *mut _,
    },
    // One interpreter only: the types live in process-wide statics.
    #[cfg(Py_3_12)]
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_multiple_interpreters,
        value: ffi::Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED,
    },
    #[cfg(not(Py_3_12))]
    ffi::PyModuleDef_Slot {
        slot: 0,
        value: ptr::null_mut(),
    },
    // The bridge relies on the GIL to serialise access to Operation fields.
    #[cfg(Py_3_13)]
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_gil,
        value: ffi::Py_MOD_GIL_USED,
    },
    #[cfg(not(Py_3_13))]
    ffi::PyModuleDef_Slot {
        slot: 0,
        value: ptr::null_mut(),
    },
    ffi::PyModuleDef_Slot {
        slot: 0,
        value: ptr::null_mut(),
    },
];

static MODULE: ModuleDef = ModuleDef(std::cell::UnsafeCell::new(ffi::PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"caio._native".as_ptr(),
    m_doc: c"Native backends of caio (Rust).".as_ptr(),
    m_size: 0,
    m_methods: ptr::null_mut(),
    m_slots: ptr::null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
}));

/// Module entry point (multi-phase initialisation).
///
/// # Safety
/// Called by the interpreter, once per import, with the GIL held.
#[no_mangle]
pub unsafe extern "C" fn PyInit__native() -> *mut PyObject {
    // SAFETY: see `ModuleDef`; the slots array is only written here, before the
    // interpreter reads the definition.
    unsafe {
        let def = MODULE.0.get();
        (*def).m_slots = ptr::addr_of_mut!(SLOTS).cast();
        (*def).m_methods = types::leak(vec![
            types::method(
                c"uring_probe",
                uring_probe,
                ffi::METH_NOARGS,
                c"uring_probe() -> None, or why io_uring cannot be used here.",
            ),
            types::method(
                c"aio_probe",
                aio_probe,
                ffi::METH_NOARGS,
                c"aio_probe() -> None, or why kernel AIO cannot be used here.",
            ),
            types::method(
                c"uring_sqpoll_allowed",
                uring_sqpoll_allowed,
                ffi::METH_NOARGS,
                c"uring_sqpoll_allowed() -> bool: whether a SQPOLL ring can be created.",
            ),
            types::method(
                c"retire",
                context::retire_method,
                ffi::METH_O,
                c"retire(context): the caller is done with a native Context; what it still has in flight is delivered on a background thread, then the Context is let go (anything else: no-op).",
            ),
            types::method(
                c"direct_alignment",
                direct_alignment,
                ffi::METH_O,
                c"direct_alignment(fd) -> (memory, offset_and_size): the alignment O_DIRECT needs on fd (statx STATX_DIOALIGN, else 4096 for both).",
            ),
            types::method(
                c"_direct_bounces",
                direct_bounces,
                ffi::METH_NOARGS,
                c"_direct_bounces() -> int: O_DIRECT bounce buffers allocated so far in this process (a test hook).",
            ),
            types::method(
                c"io_limits",
                io_limits,
                ffi::METH_NOARGS,
                c"io_limits() -> (iov_max, max_rw_count): the most buffers and bytes one readv/writev takes.",
            ),
            ffi::PyMethodDef::zeroed(),
        ]);
        ffi::PyModuleDef_Init(def)
    }
}
