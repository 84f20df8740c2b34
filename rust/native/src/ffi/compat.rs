//! Per-version shims.

#[cfg(not(Py_3_13))]
extern "C" {
    // Exported (as a private name) by CPython 3.10-3.12; public from 3.13 on.
    fn _Py_IsFinalizing() -> std::os::raw::c_int;
}

/// Whether the interpreter is shutting down (a foreign thread must not take the GIL then).
pub(crate) fn is_finalizing() -> bool {
    #[cfg(Py_3_13)]
    // SAFETY: callable from any thread without the GIL; reads one runtime flag.
    let flag = unsafe { pyo3_ffi::Py_IsFinalizing() };
    #[cfg(not(Py_3_13))]
    // SAFETY: as above (same function under its older name).
    let flag = unsafe { _Py_IsFinalizing() };
    flag != 0
}
