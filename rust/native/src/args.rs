//! Argument parsing with CPython's own `PyArg_ParseTupleAndKeywords`, so integer
//! conversions (masking `K`/`I`/`H`, range-checked `L`) behave exactly as in caio's C code.

/// `parse_args!(args, kwargs, c"fmt", [c"kw", ...], &mut out, ...)` → `Result<()>`.
macro_rules! parse_args {
    ($args:expr, $kwargs:expr, $fmt:expr, [$($kw:expr),* $(,)?] $(, $out:expr)* $(,)?) => {{
        let mut kwlist: [*const std::os::raw::c_char; 0 $(+ $crate::args::one!($kw))* + 1] =
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

/// `1` for any expression, unevaluated: counts keywords in a constant context, so that a
/// keyword may be a runtime value.
macro_rules! one {
    ($kw:expr) => {
        1
    };
}

pub(crate) use {one, parse_args};
