//! The one Context every backend shares: the object around a backend's engine, its
//! allocation, fork check, GC slots and teardown, and every method that behaves the same
//! on each backend (`submit`, `process_events`, `poll`, `run_inline`, `fileno`, `repr`).
//!
//! A backend is a [`Backend`]: its engine type (which owns a [`Driver`]), its names and
//! docs, its constructor arguments, its error tables and its extra methods. Its trampolines
//! are these generic functions, instantiated once per backend.

use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use caio_backends::{process, DispatchError, Driver, IoRequest, Submission};
use caio_core::{Phase, RequestId};

use crate::args::parse_args;
use crate::drainer;
use crate::entry::OpEntry;
use crate::error::{entry, str_object, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::gil::{blocking_wait, without_gil};
use crate::operation::{self, Flavor, OpRef};
use crate::types::{getset_end, leak, method, method_kw, TypeBuilder};
use crate::values;

/// A backend's Operation type: made once, shared by its Context types.
pub(crate) struct OperationSpec {
    pub(crate) name: &'static CStr,
    /// Its name in `caio._native`.
    pub(crate) attr: &'static CStr,
    pub(crate) doc: &'static CStr,
    pub(crate) flavor: Flavor,
    pub(crate) ty: AtomicPtr<PyTypeObject>,
}

impl OperationSpec {
    pub(crate) const fn new(flavor: Flavor) -> Self {
        let (name, attr, doc) = flavor.type_names();
        Self {
            name,
            attr,
            doc,
            flavor,
            ty: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

/// Where a backend's types are kept once created: its Operation type (which thread_aio's
/// two Context types share) and its Context type.
pub(crate) struct TypeSlots {
    operation: &'static OperationSpec,
    context: AtomicPtr<PyTypeObject>,
}

impl TypeSlots {
    pub(crate) const fn new(operation: &'static OperationSpec) -> Self {
        Self {
            operation,
            context: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

/// A read-only integer property of a backend's engine.
pub(crate) struct Property<B: Backend> {
    pub(crate) name: &'static CStr,
    pub(crate) doc: &'static CStr,
    pub(crate) get: fn(&Engine<B>) -> i64,
}

/// What a Context object owns: the driver, and what the backend keeps beside it (the
/// arguments it was made with).
pub(crate) struct Engine<B: Backend> {
    pub(crate) driver: B::Driver,
    pub(crate) backend: B,
}

/// One backend's Context type: what the backend keeps beside its driver, and what makes
/// its type its own; everything else about the type is here.
pub(crate) trait Backend: Sized + Send + Sync + 'static {
    type Driver: Driver<OpEntry>;
    /// The type's qualified name (`caio.linux_uring.Context`).
    const NAME: &'static CStr;
    /// Its name in `caio._native`.
    const ATTR: &'static CStr;
    const DOC: &'static CStr;
    const SUBMIT_DOC: &'static CStr;
    /// Whether completions are delivered by `process_events()` on the caller's thread: the
    /// type then has `process_events`, `poll`, `run_inline` and `fileno`. `false` for a
    /// Context whose workers run the callbacks (thread_aio's caio type).
    const PUMPED: bool = true;

    /// Where its types are kept.
    const TYPES: &'static TypeSlots;
    /// `tp_new`: the constructor's arguments, parsed as caio did, and the driver built.
    fn new(args: *mut PyObject, kwargs: *mut PyObject) -> Result<(Self, Self::Driver)>;
    /// `submit`'s error for argument `index`, which is not an Operation.
    fn not_an_operation(index: usize, obj: *mut PyObject) -> Error;
    /// `submit`'s error when the driver refused a request.
    fn dispatch_error(error: DispatchError) -> Error;
    /// Checks `process_events`' arguments beyond their types.
    fn check_drain(drain: &DrainArgs) -> Result<()> {
        drain.check_min_le_max()
    }
    const CANCEL_DOC: &'static CStr;
    /// `cancel(...)`: each backend's own arguments and answer.
    fn cancel(call: Call<'_, Self>) -> Result<*mut PyObject>;
    /// What `repr` shows after the name and address (the in-flight count follows).
    fn describe(engine: &Engine<Self>) -> String;
    /// Methods of this backend's own (`flush`, `close`).
    fn methods() -> Vec<ffi::PyMethodDef>;
    /// `max_requests` as the Context was made with (0 replaced by the default).
    fn max_requests(&self) -> u32;
    const MAX_REQUESTS_DOC: &'static CStr;
    /// Runs a write `run_inline` was given on the calling thread if this backend takes
    /// writes inline (linux_uring), returning its result; `None`: it did nothing.
    ///
    /// # Safety
    /// As for [`caio_backends::IoRequest::perform`].
    unsafe fn inline_write(_engine: &Engine<Self>, _request: &IoRequest) -> Option<i64> {
        None
    }
    /// Read-only properties of this backend's own, beside `max_requests` (and `fileno`).
    fn properties() -> Vec<Property<Self>> {
        Vec::new()
    }
}

/// A method call on a Context: its engine, the Context itself, and the arguments.
pub(crate) struct Call<'a, B: Backend> {
    pub(crate) engine: &'a Engine<B>,
    pub(crate) slf: *mut PyObject,
    pub(crate) args: *mut PyObject,
    pub(crate) kwargs: *mut PyObject,
}

/// A Context instance: the Python object header and the backend's engine.
#[repr(C)]
struct ContextObject<B: Backend> {
    ob_base: PyObject,
    weakreflist: *mut PyObject,
    engine: *mut Engine<B>,
    /// The process that created the engine, and the fork generation it was created in:
    /// a child of `fork()` shares the parent's kernel objects and has none of its threads.
    pid: i32,
    generation: u64,
}

/// The Context instance behind `slf`.
///
/// # Safety
/// `slf` is a live instance of `B`'s Context type (the interpreter hands our slots only
/// those), so it is laid out as `ContextObject<B>`.
unsafe fn object<'a, B: Backend>(slf: *mut PyObject) -> &'a ContextObject<B> {
    // SAFETY: see the function's contract; the object outlives the call it serves.
    unsafe { &*slf.cast::<ContextObject<B>>() }
}

impl<B: Backend> ContextObject<B> {
    fn inherited(&self) -> bool {
        self.generation != process::fork_generation()
    }

    /// The engine, whichever process made it.
    fn any_engine(&self) -> Option<&Engine<B>> {
        // SAFETY: the engine is set at allocation and freed only in dealloc.
        unsafe { self.engine.as_ref() }
    }

    /// The engine if it may be used from this process.
    fn own_engine(&self) -> Option<&Engine<B>> {
        if self.inherited() {
            return None;
        }
        self.any_engine()
    }
}

/// The engine of the Context `slf`; `RuntimeError` for a Context inherited through
/// `fork()`, which must not touch its parent's kernel objects.
///
/// # Safety
/// As for [`object`].
pub(crate) unsafe fn engine<'a, B: Backend>(slf: *mut PyObject) -> Result<&'a Engine<B>> {
    // SAFETY: see the function's contract.
    let obj = unsafe { object::<B>(slf) };
    let Some(engine) = obj.any_engine() else {
        return Err(Error::Runtime("Context is not initialized".into()));
    };
    if obj.inherited() {
        return Err(Error::Runtime(format!(
            "this Context was created in process {}; a Context cannot be used after \
             fork(), create a new one in the child",
            obj.pid
        )));
    }
    Ok(engine)
}

pub(crate) fn is_operation<B: Backend>(obj: *mut PyObject) -> bool {
    // SAFETY: `obj` is a live argument. Operation types cannot be subclassed, so the exact
    // type is the whole check.
    unsafe { (*obj).ob_type == B::TYPES.operation.ty.load(Ordering::Acquire) }
}

/// The request id of `obj` if it is an Operation in flight on the Context `slf`.
pub(crate) fn in_flight_here<B: Backend>(
    slf: *mut PyObject,
    obj: *mut PyObject,
) -> Option<RequestId> {
    if !is_operation::<B>(obj) {
        return None;
    }
    // SAFETY: type-checked just above.
    let op = unsafe { OpRef::new(obj) };
    (op.phase() == Phase::InFlight && op.context() == slf).then(|| RequestId(op.request_id()))
}

/// Delivers completed requests on this thread (GIL held); returns how many.
pub(crate) fn deliver_all(batch: Vec<(OpEntry, i64)>) -> usize {
    let n = batch.len();
    for (entry, res) in batch {
        entry.complete(res);
    }
    n
}

/// A failed system call of a Context method, as caio raised it (`OperationError`).
pub(crate) fn os_error(e: std::io::Error) -> Error {
    Error::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

// ---- the methods every backend shares -------------------------------------------------

unsafe extern "C" fn new<B: Backend>(
    cls: *mut PyTypeObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let (backend, driver) = B::new(args, kwargs)?;
        let engine = Box::new(Engine { driver, backend });
        let generation = process::fork_generation();
        // SAFETY: `cls` is B's Context type (tp_new receives it) with this layout;
        // GenericAlloc zero-fills (and GC-tracks) the instance.
        unsafe {
            let obj = ffi::PyType_GenericAlloc(cls, 0);
            if obj.is_null() {
                // The engine goes: its threads are idle and need no GIL to stop.
                return Err(Error::AlreadySet);
            }
            let ctx = obj.cast::<ContextObject<B>>();
            (*ctx).pid = process::pid();
            (*ctx).generation = generation;
            (*ctx).engine = Box::into_raw(engine);
            Ok(obj)
        }
    })
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

/// `submit(*operations)`: every argument type-checked first, then each op claimed once
/// (one claimed before is skipped) and handed to the driver in order. What the driver
/// refuses is un-claimed (dropping its entry does that); its error is raised after the
/// accepted ones went on.
unsafe extern "C" fn submit<B: Backend>(slf: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance (a method of the type).
        let engine = unsafe { engine::<B>(slf)? };
        let ops = arguments(args);
        if let Some(i) = ops.iter().position(|&o| !is_operation::<B>(o)) {
            return Err(B::not_an_operation(i, ops[i]));
        }
        if !engine.driver.is_open() {
            return Err(B::dispatch_error(DispatchError::Closed));
        }
        let batch: Vec<Submission<OpEntry>> = ops
            .iter()
            // SAFETY: type-checked above; `slf` is live; GIL held.
            .filter_map(|&obj| unsafe { OpEntry::claim(obj, slf) })
            .map(|entry| Submission {
                id: entry.id(),
                entry,
            })
            .collect();
        let dispatched = engine.driver.dispatch(batch);
        drop(dispatched.refused);
        match dispatched.error {
            Some(error) => Err(B::dispatch_error(error)),
            None => values::int(dispatched.accepted as i64),
        }
    })
}

/// The arguments of `process_events(max_requests=512, min_requests=0, timeout=0)`, parsed
/// as caio did (masked unsigned ints, a C int timeout in seconds: < 0 waits forever);
/// `max_requests=0` means the default.
pub(crate) struct DrainArgs {
    pub(crate) max: u32,
    pub(crate) min: u32,
    timeout: c_int,
}

const DEFAULT_DRAIN: u32 = 512;

impl DrainArgs {
    fn parse(args: *mut PyObject, kwargs: *mut PyObject) -> Result<Self> {
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

    /// The wait limit: `None` waits forever, zero only looks.
    fn timeout(&self) -> Option<Duration> {
        (self.timeout >= 0).then(|| Duration::from_secs(self.timeout as u64))
    }
}

unsafe extern "C" fn process_events<B: Backend>(
    slf: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let driver = &unsafe { engine::<B>(slf)? }.driver;
        let drain = DrainArgs::parse(args, kwargs)?;
        B::check_drain(&drain)?;
        if drain.min > 0 {
            let (min, timeout) = (drain.min as usize, drain.timeout());
            blocking_wait(|on_signal| driver.wait(min, timeout, on_signal))?.map_err(os_error)?;
        }
        let mut batch = Vec::new();
        driver
            .take(drain.max as usize, &mut batch)
            .map_err(os_error)?;
        values::int(deliver_all(batch) as i64)
    })
}

unsafe extern "C" fn cancel<B: Backend>(
    slf: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine::<B>(slf)? };
        B::cancel(Call {
            engine,
            slf,
            args,
            kwargs,
        })
    })
}

/// The one argument of `cancel(operation)`; `wrong` makes the error for anything but one
/// of `B`'s Operations.
pub(crate) fn operation_arg<B: Backend>(
    args: *mut PyObject,
    kwargs: *mut PyObject,
    wrong: fn(*mut PyObject) -> Error,
) -> Result<*mut PyObject> {
    let mut obj: *mut PyObject = ptr::null_mut();
    parse_args!(args, kwargs, c"O:cancel", [c"operation"], &mut obj)?;
    if is_operation::<B>(obj) {
        Ok(obj)
    } else {
        Err(wrong(obj))
    }
}

/// `poll()`: reads and resets the eventfd counter; a bare `BlockingIOError` when zero.
unsafe extern "C" fn poll<B: Backend>(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let driver = &unsafe { engine::<B>(slf)? }.driver;
        match driver.eventfd().map(|fd| fd.read()) {
            Some(Ok(count)) => values::uint(count),
            _ => Err(Error::WouldBlock),
        }
    })
}

/// `run_inline(op)`: completes a small cached read (or, on linux_uring and linux_aio, a small buffered
/// file write) now (see [`operation::run_inline`]).
unsafe extern "C" fn run_inline<B: Backend>(
    slf: *mut PyObject,
    arg: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine::<B>(slf)? };
        if !engine.driver.is_open() {
            return Err(Error::Runtime("Context is closed".into()));
        }
        if !is_operation::<B>(arg) {
            return Err(Error::Type(format!(
                "run_inline() argument must be a {}",
                B::TYPES.operation.name.to_string_lossy()
            )));
        }
        // SAFETY: type-checked just above.
        let op = unsafe { OpRef::new(arg) };
        // SAFETY: `run_inline` hands over only an unclaimed op's request, whose buffer
        // no one else touches meanwhile (see there).
        let write = |request: &IoRequest| unsafe { B::inline_write(engine, request) };
        Ok(values::boolean(operation::run_inline(op, write)))
    })
}

unsafe extern "C" fn get_fileno<B: Backend>(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let driver = &unsafe { engine::<B>(slf)? }.driver;
        match driver.eventfd() {
            Some(fd) => values::int(fd.as_raw_fd() as i64),
            // Unreachable: only a pumped Context has this property.
            None => Err(Error::Attribute("this Context has no eventfd".into())),
        }
    })
}

/// A [`Property`] getter: `closure` is the property's `get` function.
unsafe extern "C" fn get_property<B: Backend>(
    slf: *mut PyObject,
    closure: *mut c_void,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `create_type` stored a `fn(&B) -> i64` as this getter's closure.
        let get: fn(&Engine<B>) -> i64 = unsafe { std::mem::transmute(closure) };
        // SAFETY: `slf` is our instance.
        values::int(get(unsafe { engine::<B>(slf)? }))
    })
}

unsafe extern "C" fn repr<B: Backend>(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let state = match unsafe { engine::<B>(slf) } {
            Ok(engine) => format!(
                "{}, in_flight={}",
                B::describe(engine),
                engine.driver.in_flight()
            ),
            Err(_) => "uninitialized".into(),
        };
        let text = format!("<{} at {slf:p}: {state}>", B::NAME.to_string_lossy());
        str_object(&text).map(PyOwned::into_ptr)
    })
}

// ---- lifetime: GC, finalization, retirement, dealloc --------------------------------------

/// `tp_traverse`: the type, and (for a pumped Context) the in-flight ops: the Context ⇄
/// in-flight ops cycle is then visible to the GC, which finds a Context dropped with work
/// in flight and hands it to the drainer (see [`finalize`]). There is deliberately no
/// `tp_clear`: the driver's references to in-flight ops are never dropped by the GC.
unsafe extern "C" fn traverse<B: Backend>(
    slf: *mut PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `slf` is our instance (the GC calls this with the GIL held).
    let obj = unsafe { object::<B>(slf) };
    if let (true, Some(engine)) = (B::PUMPED, obj.own_engine()) {
        let mut failed = 0;
        let _ = engine.driver.visit(&mut |entry| {
            // SAFETY: each entry holds a strong reference to a live op; GIL held (GC).
            failed = unsafe { visit(entry.as_ptr(), arg) };
            if failed == 0 {
                std::ops::ControlFlow::Continue(())
            } else {
                std::ops::ControlFlow::Break(())
            }
        });
        if failed != 0 {
            return failed;
        }
    }
    // SAFETY: heap types must visit their type, which the instance holds.
    unsafe { visit((*slf).ob_type.cast(), arg) }
}

/// How many ops of the Context `slf` are in flight (0 once it cannot be looked at).
///
/// # Safety
/// `slf` is a live instance of `B`'s Context type; GIL held.
unsafe fn in_flight_of<B: Backend>(slf: *mut PyObject) -> usize {
    // SAFETY: see the function's contract.
    let obj = unsafe { object::<B>(slf) };
    obj.own_engine().map_or(0, |e| e.driver.in_flight())
}

/// Hands the Context `slf` to the drainer if it has work in flight and completions that
/// need pumping: the drainer takes a reference and delivers them on its thread, and lets
/// the Context go once nothing is in flight.
///
/// # Safety
/// `slf` is a live instance of `B`'s Context type; GIL held.
unsafe fn hand_to_drainer<B: Backend>(slf: *mut PyObject) {
    // SAFETY: see the function's contract.
    let obj = unsafe { object::<B>(slf) };
    let Some(engine) = obj.own_engine() else {
        return;
    };
    let driver = &engine.driver;
    if driver.in_flight() == 0 {
        return;
    }
    if let Some(fd) = driver.eventfd() {
        // SAFETY: live Context, its eventfd and its in-flight counter; GIL held.
        unsafe { drainer::adopt(slf, fd.as_raw_fd(), in_flight_of::<B>) };
    }
}

/// `tp_finalize` (PEP 442): the GC found this Context unreachable. If operations are
/// still in flight, the kernel owns their buffers: the drainer takes it over.
unsafe extern "C" fn finalize<B: Backend>(slf: *mut PyObject) {
    // SAFETY: `slf` is our instance; the GC calls this once, GIL held. Only a pumped
    // Context visits its ops, so only such a one is ever cyclic garbage.
    unsafe { hand_to_drainer::<B>(slf) }
}

/// The Context types and their retire function, registered by [`register`].
static RETIRERS: Mutex<Vec<(usize, Retire)>> = Mutex::new(Vec::new());

/// Hands a Context of one type to the drainer (see [`hand_to_drainer`]).
type Retire = unsafe fn(*mut PyObject);

/// `caio._native.retire(context)`: the owner of `context` (an adapter being closed) is
/// done with it. With nothing in flight this does nothing (the caller's reference going
/// away frees the Context); otherwise the drainer delivers the remaining completions, so
/// that the Context is freed once they are in. Anything else: no-op.
pub(crate) unsafe extern "C" fn retire_method(
    _module: *mut PyObject,
    arg: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `arg` is a live argument; its type is always set.
        let ty = unsafe { (*arg).ob_type } as usize;
        let retire = RETIRERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, f)| *f);
        if let Some(retire) = retire {
            // SAFETY: `arg` is an instance of the type this function was registered for.
            unsafe { retire(arg) };
        }
        Ok(values::none())
    })
}

unsafe extern "C" fn dealloc<B: Backend>(slf: *mut PyObject) {
    // SAFETY: called once when the refcount reaches zero, GIL held. No op is in flight
    // (each one holds a reference to this Context), so the driver holds no Python object
    // and the kernel no buffer. It is dropped with the GIL released: that joins threads
    // (a worker that just delivered the last op is not joined by itself) and io_destroy
    // waits for an RCU grace period. The engine of a Context inherited through `fork()` is
    // leaked instead: its kernel objects are the parent's and its threads do not exist here.
    unsafe {
        ffi::PyObject_GC_UnTrack(slf.cast());
        let ty = (*slf).ob_type;
        let obj = slf.cast::<ContextObject<B>>();
        if !(*obj).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        let engine = std::mem::replace(&mut (*obj).engine, ptr::null_mut());
        if !engine.is_null() && !(*obj).inherited() {
            let engine = Box::from_raw(engine);
            without_gil(move || drop(engine));
        }
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(slf.cast());
        ffi::Py_DecRef(ty.cast());
    }
}

// ---- the type ---------------------------------------------------------------------------

fn create_type<B: Backend>() -> Result<*mut PyTypeObject> {
    let mut methods = vec![method(
        c"submit",
        submit::<B>,
        ffi::METH_VARARGS,
        B::SUBMIT_DOC,
    )];
    methods.push(method_kw(c"cancel", cancel::<B>, 0, B::CANCEL_DOC));
    methods.extend(B::methods());
    let mut getsets = Vec::new();
    if B::PUMPED {
        methods.extend([
            method_kw(
                c"process_events",
                process_events::<B>,
                0,
                c"process_events(max_requests=512, min_requests=0, timeout=0) -> int: deliver up to max_requests completions on this thread (running their callbacks), first waiting with the GIL released until min_requests are there or timeout seconds pass (<0: forever).",
            ),
            method(
                c"poll",
                poll::<B>,
                ffi::METH_NOARGS,
                c"poll() -> int: read and reset the eventfd counter (BlockingIOError if it is 0).",
            ),
            method(
                c"run_inline",
                run_inline::<B>,
                ffi::METH_O,
                c"run_inline(op) -> bool: if op is a small read whose data is in the page cache (linux_uring and linux_aio: or a small buffered write to a regular file), complete it now on this thread (callback included); False leaves op untouched.",
            ),
        ]);
        getsets.push(ffi::PyGetSetDef {
            name: c"fileno".as_ptr(),
            get: Some(get_fileno::<B>),
            set: None,
            doc: c"The eventfd signalled when completions are ready for process_events().".as_ptr(),
            closure: ptr::null_mut(),
        });
    }
    methods.push(ffi::PyMethodDef::zeroed());
    let max_requests = Property::<B> {
        name: c"max_requests",
        doc: B::MAX_REQUESTS_DOC,
        get: |e| e.backend.max_requests().into(),
    };
    let properties = std::iter::once(max_requests).chain(B::properties());
    getsets.extend(properties.map(|p| ffi::PyGetSetDef {
        name: p.name.as_ptr(),
        get: Some(get_property::<B>),
        set: None,
        doc: p.doc.as_ptr(),
        closure: p.get as *mut c_void,
    }));
    getsets.push(getset_end());
    let ty = TypeBuilder::new(
        B::NAME,
        std::mem::size_of::<ContextObject<B>>(),
        std::mem::offset_of!(ContextObject<B>, weakreflist),
    )
    .flags(ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC)
    .slot(ffi::Py_tp_traverse, traverse::<B> as *mut c_void)
    .slot(ffi::Py_tp_finalize, finalize::<B> as *mut c_void)
    .slot(ffi::Py_tp_doc, B::DOC.as_ptr() as *mut c_void)
    .slot(ffi::Py_tp_new, new::<B> as *mut c_void)
    .slot(ffi::Py_tp_dealloc, dealloc::<B> as *mut c_void)
    .slot(ffi::Py_tp_repr, repr::<B> as *mut c_void)
    .slot(ffi::Py_tp_methods, leak(methods).cast())
    .slot(ffi::Py_tp_getset, leak(getsets).cast())
    .build()?;
    RETIRERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((ty as usize, hand_to_drainer::<B>));
    Ok(ty)
}

/// Creates `B`'s Context type and its Operation type (each once per process) and adds
/// both to the module being executed.
pub(crate) fn register<B: Backend>(module: *mut PyObject) -> Result<()> {
    let spec = B::TYPES.operation;
    if spec.ty.load(Ordering::Acquire).is_null() {
        let ty = operation::create_type(spec.name, spec.doc, spec.flavor)?;
        spec.ty.store(ty, Ordering::Release);
    }
    let slot = &B::TYPES.context;
    if slot.load(Ordering::Acquire).is_null() {
        slot.store(create_type::<B>()?, Ordering::Release);
    }
    for (name, ty) in [
        (spec.attr, spec.ty.load(Ordering::Acquire)),
        (B::ATTR, slot.load(Ordering::Acquire)),
    ] {
        // SAFETY: `module` is the module being executed; AddObjectRef takes its own
        // reference to the type (the process-wide static keeps another forever).
        if unsafe { ffi::PyModule_AddObjectRef(module, name.as_ptr(), ty.cast()) } < 0 {
            return Err(Error::AlreadySet);
        }
    }
    Ok(())
}
