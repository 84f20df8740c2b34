//! What the three native Context types share: the object layout around a backend engine,
//! allocation and teardown, and the methods that behave the same everywhere.

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr;

use caio_backends::EventFd;

use crate::args::parse_args;
use crate::error::{Error, Result};
use crate::ffi::{self, PyObject, PyTypeObject};
use crate::operation::{self, OpPtr};
use crate::types::{getset_end, leak, TypeBuilder};
use crate::values;

/// A Context instance: the Python object header and the backend's engine (`E`).
#[repr(C)]
pub(crate) struct ContextObject<E> {
    ob_base: PyObject,
    weakreflist: *mut PyObject,
    engine: *mut E,
}

/// The engine of a live Context, or `RuntimeError(uninitialized)`.
///
/// # Safety
/// `slf` is a live instance of a Context type whose layout is `ContextObject<E>`.
pub(crate) unsafe fn engine<'a, E>(slf: *mut PyObject, uninitialized: &str) -> Result<&'a E> {
    // SAFETY: see the function's contract; the engine lives as long as the object.
    unsafe { (*slf.cast::<ContextObject<E>>()).engine.as_ref() }
        .ok_or_else(|| Error::Runtime(uninitialized.into()))
}

/// Allocates an instance of `cls` owning `engine`.
pub(crate) fn alloc<E>(cls: *mut PyTypeObject, engine: Box<E>) -> Result<*mut PyObject> {
    // SAFETY: `cls` is one of our Context types (tp_new receives it) with this layout;
    // GenericAlloc zero-fills the instance.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(cls, 0);
        if obj.is_null() {
            return Err(Error::AlreadySet);
        }
        (*obj.cast::<ContextObject<E>>()).engine = Box::into_raw(engine);
        Ok(obj)
    }
}

/// The body of a Context's `tp_dealloc`: clears weak references, hands the engine to
/// `teardown` (which drops it), frees the object and releases its heap type.
///
/// # Safety
/// Called once from `tp_dealloc`, GIL held, `slf` laid out as `ContextObject<E>`.
pub(crate) unsafe fn dealloc<E>(slf: *mut PyObject, teardown: impl FnOnce(Box<E>)) {
    // SAFETY: see the function's contract.
    unsafe {
        let ty = (*slf).ob_type;
        let obj = slf.cast::<ContextObject<E>>();
        if !(*obj).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        let engine = std::mem::replace(&mut (*obj).engine, ptr::null_mut());
        if !engine.is_null() {
            teardown(Box::from_raw(engine));
        }
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(slf.cast());
        ffi::Py_DecRef(ty.cast());
    }
}

/// The positional arguments of a METH_VARARGS call, borrowed for the call.
pub(crate) fn arguments(args: *mut PyObject) -> Vec<*mut PyObject> {
    // SAFETY: METH_VARARGS hands us a tuple.
    let n = unsafe { ffi::PyTuple_Size(args) };
    (0..n)
        // SAFETY: index in range; the tuple keeps the items alive for the call.
        .map(|i| unsafe { ffi::PyTuple_GetItem(args, i) })
        .collect()
}

/// `poll()`: reads and resets the eventfd counter; a bare `BlockingIOError` when zero.
pub(crate) fn poll(eventfd: &EventFd) -> Result<*mut PyObject> {
    match eventfd.read() {
        Ok(count) => values::uint(count),
        Err(_) => Err(Error::WouldBlock),
    }
}

/// `run_inline(op)`: completes a small cached read now (see [`operation::run_inline`]).
pub(crate) fn run_inline(
    arg: *mut PyObject,
    is_operation: fn(*mut PyObject) -> bool,
    type_name: &str,
) -> Result<*mut PyObject> {
    if !is_operation(arg) {
        return Err(Error::Type(format!(
            "run_inline() argument must be a {type_name}"
        )));
    }
    // SAFETY: type-checked just above.
    Ok(values::boolean(operation::run_inline(unsafe {
        OpPtr::new(arg)
    })))
}

/// The arguments of `process_events(max_requests=512, min_requests=0, timeout=0)`, parsed
/// as caio did (masked unsigned ints, a C int timeout in seconds: < 0 waits forever);
/// `max_requests=0` means the default.
pub(crate) struct DrainArgs {
    pub(crate) max: u32,
    pub(crate) min: u32,
    pub(crate) timeout: c_int,
}

pub(crate) const DEFAULT_DRAIN: u32 = 512;

impl DrainArgs {
    pub(crate) fn parse(args: *mut PyObject, kwargs: *mut PyObject) -> Result<Self> {
        let (mut max, mut min, mut timeout): (u32, u32, c_int) = (DEFAULT_DRAIN, 0, 0);
        parse_args!(
            args,
            kwargs,
            c"|IIi:process_events",
            [c"max_requests", c"min_requests", c"timeout"],
            &mut max,
            &mut min,
            &mut timeout
        )?;
        let max = if max == 0 { DEFAULT_DRAIN } else { max };
        Ok(Self { max, min, timeout })
    }

    /// `ValueError` unless `min_requests <= max_requests` (linux_uring's wording).
    pub(crate) fn check_min_le_max(&self) -> Result<()> {
        if self.min > self.max {
            return Err(Error::Value(format!(
                "min_requests ({}) must be <= max_requests ({})",
                self.min, self.max
            )));
        }
        Ok(())
    }

    /// The wait limit: `None` waits forever.
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        (self.timeout >= 0).then(|| std::time::Duration::from_secs(self.timeout as u64))
    }
}

/// The methods of a Context whose completions are delivered on the caller's thread
/// (`process_events`, `poll`, `run_inline`): each backend's implementations.
pub(crate) struct CompletionMethods {
    pub(crate) process_events: ffi::PyCFunctionWithKeywords,
    pub(crate) poll: ffi::PyCFunction,
    pub(crate) run_inline: ffi::PyCFunction,
}

impl CompletionMethods {
    fn defs(&self) -> [ffi::PyMethodDef; 3] {
        use crate::types::{method, method_kw};
        [
            method_kw(
                c"process_events",
                self.process_events,
                0,
                c"process_events(max_requests=512, min_requests=0, timeout=0) -> int: deliver up to max_requests completions on this thread (running their callbacks), first waiting with the GIL released until min_requests are there or timeout seconds pass (<0: forever).",
            ),
            method(
                c"poll",
                self.poll,
                ffi::METH_NOARGS,
                c"poll() -> int: read and reset the eventfd counter (BlockingIOError if it is 0).",
            ),
            method(
                c"run_inline",
                self.run_inline,
                ffi::METH_O,
                c"run_inline(op) -> bool: if op is a small read whose data is in the page cache, complete it now on this thread (callback included); False leaves op untouched.",
            ),
        ]
    }
}

/// What makes one backend's Context type: its own methods and properties (the shared
/// completion methods and the table terminators are added here).
pub(crate) struct ContextSlots {
    pub(crate) doc: &'static CStr,
    pub(crate) new: ffi::newfunc,
    pub(crate) dealloc: ffi::destructor,
    pub(crate) repr: ffi::reprfunc,
    pub(crate) methods: Vec<ffi::PyMethodDef>,
    /// `None` for a Context that runs callbacks itself (thread_aio's default type, whose
    /// surface is caio's: code that finds `process_events` pumps the Context).
    pub(crate) completion: Option<CompletionMethods>,
    pub(crate) getsets: Vec<ffi::PyGetSetDef>,
}

/// Builds a Context type whose instances are `ContextObject<E>`.
pub(crate) fn create_type<E>(
    name: &'static CStr,
    slots: ContextSlots,
) -> Result<*mut PyTypeObject> {
    let mut methods = slots.methods;
    if let Some(completion) = &slots.completion {
        methods.extend(completion.defs());
    }
    methods.push(ffi::PyMethodDef::zeroed());
    let mut getsets = slots.getsets;
    getsets.push(getset_end());
    TypeBuilder::new(
        name,
        std::mem::size_of::<ContextObject<E>>(),
        std::mem::offset_of!(ContextObject<E>, weakreflist),
    )
    .slot(ffi::Py_tp_doc, slots.doc.as_ptr() as *mut c_void)
    .slot(ffi::Py_tp_new, slots.new as *mut c_void)
    .slot(ffi::Py_tp_dealloc, slots.dealloc as *mut c_void)
    .slot(ffi::Py_tp_repr, slots.repr as *mut c_void)
    .slot(ffi::Py_tp_methods, leak(methods).cast())
    .slot(ffi::Py_tp_getset, leak(getsets).cast())
    .build()
}

/// Adds `(name, type)` pairs to the module being executed.
pub(crate) fn add_to_module(
    module: *mut PyObject,
    types: &[(&CStr, *mut PyTypeObject)],
) -> Result<()> {
    for (name, ty) in types {
        // SAFETY: `module` is the module being executed; AddObjectRef takes its own
        // reference to the type (the process-wide static keeps another forever).
        if unsafe { ffi::PyModule_AddObjectRef(module, name.as_ptr(), ty.cast()) } < 0 {
            return Err(Error::AlreadySet);
        }
    }
    Ok(())
}
