//! What the three native Context types share: the object layout around a backend engine,
//! allocation and teardown, and the methods that behave the same everywhere.

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use caio_backends::EventFd;

use crate::args::parse_args;
use crate::drainer;
use crate::error::{entry, Error, Result};
use crate::ffi::{self, PyObject, PyTypeObject};
use crate::operation::{self, OpRef};
use crate::types::{getset_end, leak, TypeBuilder};
use crate::values;

/// A Context instance: the Python object header and the backend's engine (`E`).
#[repr(C)]
pub(crate) struct ContextObject<E> {
    ob_base: PyObject,
    weakreflist: *mut PyObject,
    engine: *mut E,
    /// The process that created the engine, and the fork generation it was created in:
    /// a child of `fork()` shares the parent's kernel objects and has none of its threads.
    pid: libc::pid_t,
    generation: u64,
}

/// What the shared Context machinery needs to know about a backend's engine.
pub(crate) trait Engine: 'static {
    /// How many ops are in flight.
    fn in_flight(&self) -> usize;

    /// The descriptor that becomes readable when `process_events()` has completions to
    /// deliver, for an engine whose completions only `process_events()` delivers; `None`
    /// when they are delivered without anyone pumping (thread_aio's workers).
    fn completion_fd(&self) -> Option<c_int>;

    /// Visits the engine's strong references to its in-flight ops (GC `tp_traverse`).
    /// Only an engine with a [`completion_fd`](Engine::completion_fd) visits anything:
    /// the Context ⇄ in-flight ops cycle is then visible to the GC, which finds a Context
    /// dropped with work in flight and hands it to the drainer (see [`finalize`]).
    fn visit_in_flight(&self, visit: ffi::visitproc, arg: *mut c_void) -> c_int;
}

/// Bumped in every child of `fork()` (by a `pthread_atfork` handler).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Only atomics: the child of a threaded process may run async-signal-safe code only,
    // until it execs or exits.
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    drainer::forget_after_fork();
}

/// The current fork generation (registers the `fork()` handler on first use).
pub(crate) fn fork_generation() -> u64 {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only touches atomics; no pointer is kept.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    FORK_GENERATION.load(Ordering::SeqCst)
}

/// Whether `slf` was inherited through `fork()` (its engine belongs to another process).
///
/// # Safety
/// `slf` is a live instance laid out as `ContextObject<E>`.
unsafe fn inherited<E>(slf: *mut PyObject) -> bool {
    // SAFETY: see the function's contract.
    unsafe {
        (*slf.cast::<ContextObject<E>>()).generation != FORK_GENERATION.load(Ordering::SeqCst)
    }
}

/// The engine of a live Context, or `RuntimeError(uninitialized)`; `RuntimeError` too for
/// a Context inherited through `fork()`, which must not touch its parent's kernel objects.
///
/// # Safety
/// `slf` is a live instance of a Context type whose layout is `ContextObject<E>`.
pub(crate) unsafe fn engine<'a, E>(slf: *mut PyObject, uninitialized: &str) -> Result<&'a E> {
    // SAFETY: see the function's contract; the engine lives as long as the object.
    unsafe {
        let obj = slf.cast::<ContextObject<E>>();
        if inherited::<E>(slf) && !(*obj).engine.is_null() {
            return Err(Error::Runtime(format!(
                "this Context was created in process {}; a Context cannot be used after \
                 fork(), create a new one in the child",
                (*obj).pid
            )));
        }
        (*obj).engine.as_ref()
    }
    .ok_or_else(|| Error::Runtime(uninitialized.into()))
}

/// Allocates an instance of `cls` owning `engine`.
pub(crate) fn alloc<E>(cls: *mut PyTypeObject, engine: Box<E>) -> Result<*mut PyObject> {
    let generation = fork_generation();
    // SAFETY: `cls` is one of our Context types (tp_new receives it) with this layout;
    // GenericAlloc zero-fills (and GC-tracks) the instance; getpid cannot fail.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(cls, 0);
        if obj.is_null() {
            return Err(Error::AlreadySet);
        }
        let ctx = obj.cast::<ContextObject<E>>();
        (*ctx).pid = libc::getpid();
        (*ctx).generation = generation;
        (*ctx).engine = Box::into_raw(engine);
        Ok(obj)
    }
}

/// The body of a Context's `tp_dealloc`: clears weak references, hands the engine to
/// `teardown` (which drops it), frees the object and releases its heap type. The engine
/// of a Context inherited through `fork()` is leaked instead: its kernel objects are the
/// parent's and its threads do not exist here.
///
/// # Safety
/// Called once from `tp_dealloc`, GIL held, `slf` laid out as `ContextObject<E>`.
pub(crate) unsafe fn dealloc<E>(slf: *mut PyObject, teardown: impl FnOnce(Box<E>)) {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::PyObject_GC_UnTrack(slf.cast());
        let ty = (*slf).ob_type;
        let obj = slf.cast::<ContextObject<E>>();
        if !(*obj).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        let engine = std::mem::replace(&mut (*obj).engine, ptr::null_mut());
        if !engine.is_null() && !inherited::<E>(slf) {
            teardown(Box::from_raw(engine));
        }
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(slf.cast());
        ffi::Py_DecRef(ty.cast());
    }
}

/// The engine of `slf` if it may be looked at from this process, else `None`.
///
/// # Safety
/// `slf` is a live instance laid out as `ContextObject<E>`.
unsafe fn own_engine<'a, E>(slf: *mut PyObject) -> Option<&'a E> {
    // SAFETY: see the function's contract.
    unsafe {
        if inherited::<E>(slf) {
            return None;
        }
        (*slf.cast::<ContextObject<E>>()).engine.as_ref()
    }
}

/// `tp_traverse`: the type, and the in-flight ops of an engine that needs pumping.
unsafe extern "C" fn traverse<E: Engine>(
    slf: *mut PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `slf` is our instance (the GC calls this with the GIL held).
    unsafe {
        if let Some(engine) = own_engine::<E>(slf) {
            let r = engine.visit_in_flight(visit, arg);
            if r != 0 {
                return r;
            }
        }
        // Heap types must visit their type.
        visit((*slf).ob_type.cast(), arg)
    }
}

/// `tp_finalize` (PEP 442): the GC found this Context unreachable. If operations are still
/// in flight, the kernel owns their buffers: the drainer takes a reference (which
/// resurrects the Context, its ops and their callbacks), delivers their completions on its
/// thread and lets the Context go once nothing is in flight. There is deliberately no
/// `tp_clear`: the engine's references to in-flight ops are never dropped by the GC.
unsafe extern "C" fn finalize<E: Engine>(slf: *mut PyObject) {
    // SAFETY: `slf` is our instance; the GC calls this once, GIL held.
    unsafe {
        let Some(engine) = own_engine::<E>(slf) else {
            return;
        };
        if engine.in_flight() == 0 {
            return;
        }
        match engine.completion_fd() {
            Some(fd) => drainer::adopt(slf, fd, in_flight_of::<E>),
            // Not reachable (such an engine visits nothing, so it is never cyclic
            // garbage); keep everything alive all the same.
            None => ffi::Py_IncRef(slf),
        }
    }
}

/// How many ops of the Context `slf` are in flight (0 once it cannot be looked at).
///
/// # Safety
/// `slf` is a live instance laid out as `ContextObject<E>`; GIL held.
unsafe fn in_flight_of<E: Engine>(slf: *mut PyObject) -> usize {
    // SAFETY: see the function's contract.
    unsafe { own_engine::<E>(slf).map_or(0, Engine::in_flight) }
}

/// The Context types and their [`retire`], registered by [`create_type`].
static RETIRERS: Mutex<Vec<(usize, Retire)>> = Mutex::new(Vec::new());

type Retire = fn(*mut PyObject);

/// `caio._native.retire(context)` (see [`retire`]).
pub(crate) unsafe extern "C" fn retire_method(
    _module: *mut PyObject,
    arg: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `arg` is a live argument; its type is always set.
        let ty = unsafe { (*arg).ob_type } as usize;
        let retirer = RETIRERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, f)| *f);
        // Anything else (a test's wrapper around a Context, say) has nothing to drain.
        if let Some(retire) = retirer {
            retire(arg);
        }
        Ok(values::none())
    })
}

/// `caio._native.retire(context)`: the owner of `context` (an asyncio adapter being
/// closed) is done with it. With nothing in flight this does nothing (the caller's
/// reference going away frees the Context); otherwise the drainer takes a reference and
/// delivers the remaining completions, so that the Context is freed once they are in.
fn retire<E: Engine>(slf: *mut PyObject) {
    // SAFETY: the caller checked that `slf` is an instance laid out as `ContextObject<E>`.
    unsafe {
        let Some(engine) = own_engine::<E>(slf) else {
            return;
        };
        if engine.in_flight() == 0 {
            return;
        }
        if let Some(fd) = engine.completion_fd() {
            drainer::adopt(slf, fd, in_flight_of::<E>);
        }
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
        OpRef::new(arg)
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
pub(crate) fn create_type<E: Engine>(
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
    let ty = TypeBuilder::new(
        name,
        std::mem::size_of::<ContextObject<E>>(),
        std::mem::offset_of!(ContextObject<E>, weakreflist),
    )
    .flags(ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC)
    .slot(ffi::Py_tp_traverse, traverse::<E> as *mut c_void)
    .slot(ffi::Py_tp_finalize, finalize::<E> as *mut c_void)
    .slot(ffi::Py_tp_doc, slots.doc.as_ptr() as *mut c_void)
    .slot(ffi::Py_tp_new, slots.new as *mut c_void)
    .slot(ffi::Py_tp_dealloc, slots.dealloc as *mut c_void)
    .slot(ffi::Py_tp_repr, slots.repr as *mut c_void)
    .slot(ffi::Py_tp_methods, leak(methods).cast())
    .slot(ffi::Py_tp_getset, leak(getsets).cast())
    .build()?;
    RETIRERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((ty as usize, retire::<E>));
    Ok(ty)
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
