//! Argument parsing with CPython's own `PyArg_ParseTupleAndKeywords`, so integer
//! conversions (masking `K`/`I`/`H`, range-checked `L`) behave exactly as in caio's C code.

/// `parse_args!(args, kwargs, c"fmt", [c"kw", ...], &mut out, ...)` → `Result<()>`.
macro_rules! parse_args {
    ($args:expr, $kwargs:expr, $fmt:expr, [$($kw:expr),* $(,)?] $(, $out:expr)* $(,)?) => {{
        let mut kwlist: [*const std::os::raw::c_char; 0 $(+ { let _ = $kw; 1 })* + 1] =
            [$($kw.as_ptr(),)* std::ptr::null()];
        // SAFETY: `args`/`kwargs` come straight from the interpreter (a tuple and a dict or
        // NULL); the format string's codes match the types of the out-pointers given with
        // it at each call site; `kwlist` is NULL-terminated and outlives the call.
        let ok = unsafe {
            $crate::ffi::PyArg_ParseTupleAndKeywords(
                $args,
                $kwargs,
                $fmt.as_ptr(),
                kwlist.as_mut_ptr() as _,
                $($out),*
            )
        };
        if ok == 0 {
            Err($crate::error::Error::AlreadySet)
        } else {
            Ok(())
        }
    }};
}

pub(crate) use parse_args;
