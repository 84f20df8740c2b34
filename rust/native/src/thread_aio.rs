//! `caio.thread_aio`: the Context types over the worker-thread backend.
//!
//! Two types, one per way of delivering completions:
//! - `Context` (caio's type, with exactly its surface): a worker takes the GIL and runs the
//!   op's callback itself;
//! - `EventfdContext`: workers only queue completions and signal an eventfd (`fileno`); the
//!   thread that calls `process_events()` (an event loop) runs the callbacks, many per
//!   wake-up. Its own type, so that code duck-typing caio's API (`hasattr(ctx,
//!   "process_events")`) never takes the default Context for one it must pump.

use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use caio_backends::{CompletionSink, EventQueue, SubmitError, ThreadPool};
use caio_core::{Completion, Phase, RequestId};

use crate::args::parse_args;
use crate::context::{self, CompletionMethods, ContextSlots, DrainArgs};
use crate::error::{entry, str_object, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::gil::{wait_interruptibly, without_gil, Waited};
use crate::inflight::InFlight;
use crate::operation::{self, deliver, OpRef};
use crate::values;

static OPERATION_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static CONTEXT_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static EVENTFD_CONTEXT_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

const DEFAULT_MAX_REQUESTS: u16 = 512;
const DEFAULT_POOL_SIZE: u16 = 8;
const MAX_POOL_SIZE: u16 = 128;

/// Delivers on the worker thread, with the GIL (caio's C behaviour).
struct GilSink {
    inflight: Arc<InFlight>,
}

impl CompletionSink for GilSink {
    fn complete(&self, completion: Completion) {
        if ffi::is_finalizing() {
            // Taking the GIL now would kill or hang this thread; the op leaks instead.
            return;
        }
        // SAFETY: PyGILState_Ensure/Release pair on this thread; the interpreter is alive
        // (checked just above).
        unsafe {
            let gil = ffi::PyGILState_Ensure();
            let op = self.inflight.lock().remove(completion.id);
            if let Some(op) = op {
                deliver(op, completion.res);
            }
            ffi::PyGILState_Release(gil);
        }
    }
}

struct Engine {
    max_requests: u16,
    pool_size: u16,
    pool: Mutex<Option<ThreadPool>>,
    inflight: Arc<InFlight>,
    events: Option<Arc<EventQueue>>,
}

impl Engine {
    fn lock_pool(&self) -> MutexGuard<'_, Option<ThreadPool>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the pool (queued work still runs) with the GIL released, then, in eventfd
    /// mode, delivers what the workers left in the queue on this thread.
    fn close(&self) {
        let pool = self.lock_pool().take();
        if let Some(pool) = pool {
            without_gil(move || drop(pool));
        }
        if self.events.is_some() {
            self.drain(usize::MAX);
        }
    }

    /// Takes request `id` out of the pool's queue if no worker has started it, and reports
    /// it as cancelled like any completion: in callback mode its callback runs right here,
    /// in eventfd mode it waits in the queue for `process_events()`. GIL held.
    fn cancel(&self, id: RequestId) -> bool {
        let cancelled = self.lock_pool().as_ref().and_then(|pool| pool.cancel(id));
        // Reported with the pool lock released: the callback may submit or close.
        cancelled.map(|cancelled| cancelled.complete()).is_some()
    }

    /// Delivers up to `max` queued completions on this thread. GIL held.
    fn drain(&self, max: usize) -> usize {
        let Some(events) = &self.events else {
            return 0;
        };
        let batch = events.take(max);
        let count = batch.len();
        for completion in batch {
            let op = self.inflight.lock().remove(completion.id);
            if let Some(op) = op {
                deliver(op, completion.res);
            }
        }
        count
    }
}

/// # Safety
/// `slf` is a live instance of this module's Context type.
unsafe fn engine<'a>(slf: *mut PyObject) -> Result<&'a Engine> {
    // SAFETY: see the function's contract (its layout is `ContextObject<Engine>`).
    unsafe { context::engine(slf, "Context is not initialized") }
}

fn closed() -> Error {
    Error::Runtime("Context is closed".into())
}

fn operation_type() -> *mut PyTypeObject {
    OPERATION_TYPE.load(Ordering::Acquire)
}

fn is_operation(obj: *mut PyObject) -> bool {
    // SAFETY: `obj` is a live argument and the type was created in module exec.
    unsafe { ffi::PyObject_TypeCheck(obj, operation_type()) != 0 }
}

/// Why the workers could not start, and which limit to raise.
fn pool_start_error(e: std::io::Error, pool_size: u16) -> Error {
    Error::Os(
        e.raw_os_error().unwrap_or(libc::EAGAIN),
        format!(
            "cannot start {pool_size} worker threads: the number of threads is limited by \
             RLIMIT_NPROC (ulimit -u), kernel.threads-max and memory (each thread needs a \
             stack: RLIMIT_AS, ulimit -v); raise the limit or use a smaller pool_size"
        ),
    )
}

/// Why the eventfd could not be created, and which limit to raise.
fn eventfd_error(e: std::io::Error) -> Error {
    Error::Os(
        e.raw_os_error().unwrap_or(libc::EMFILE),
        "cannot create the eventfd: open files are limited by RLIMIT_NOFILE (ulimit -n) \
         and fs.file-max"
            .into(),
    )
}

/// `tp_new` of both types (neither can be subclassed, so `cls` says which delivery):
/// `(max_requests=512, pool_size=8)` parsed as caio did (masked 16-bit, 0 = the default).
unsafe extern "C" fn ctx_new(
    cls: *mut PyTypeObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let eventfd = cls == EVENTFD_CONTEXT_TYPE.load(Ordering::Acquire);
        let format = if eventfd {
            c"|HH:EventfdContext"
        } else {
            c"|HH:Context"
        };
        let (mut max_requests, mut pool_size): (u16, u16) = (0, 0);
        parse_args!(
            args,
            kwargs,
            format,
            [c"max_requests", c"pool_size"],
            &mut max_requests,
            &mut pool_size
        )?;
        let max_requests = if max_requests == 0 {
            DEFAULT_MAX_REQUESTS
        } else {
            max_requests
        };
        let pool_size = if pool_size == 0 {
            DEFAULT_POOL_SIZE
        } else {
            pool_size
        };
        if pool_size > MAX_POOL_SIZE {
            return Err(Error::Value(format!(
                "pool_size too large. Allowed lower then {MAX_POOL_SIZE} (got {pool_size})"
            )));
        }
        if max_requests == u16::MAX {
            return Err(Error::Value(
                "max_requests too large. Allowed lower then 65535".into(),
            ));
        }
        let inflight = Arc::new(InFlight::new());
        let (events, sink): (Option<Arc<EventQueue>>, Arc<dyn CompletionSink>) = if eventfd {
            let events = Arc::new(EventQueue::new().map_err(eventfd_error)?);
            (Some(events.clone()), events)
        } else {
            let sink = GilSink {
                inflight: inflight.clone(),
            };
            (None, Arc::new(sink))
        };
        let pool = ThreadPool::new(pool_size as usize, max_requests as usize, sink)
            .map_err(|e| pool_start_error(e, pool_size))?;
        let engine = Box::new(Engine {
            max_requests,
            pool_size,
            pool: Mutex::new(Some(pool)),
            inflight,
            events,
        });
        // Idle workers (thread_aio) need no GIL to stop if allocation fails.
        context::alloc(cls, engine)
    })
}

unsafe extern "C" fn ctx_submit(slf: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance (a method of the type).
        let engine = unsafe { engine(slf)? };
        let ops = context::arguments(args);
        if let Some(i) = ops.iter().position(|&o| !is_operation(o)) {
            return Err(Error::Type(format!("Wrong type for argument {i}")));
        }
        let pool_guard = engine.lock_pool();
        let pool = pool_guard.as_ref().ok_or_else(closed)?;
        let mut accepted: i64 = 0;
        for &obj in &ops {
            // SAFETY: type-checked above.
            let op = unsafe { OpRef::new(obj) };
            if !op.state().try_claim() {
                continue;
            }
            // SAFETY: `obj` is live (borrowed from the args tuple).
            let held = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(obj)) };
            op.set_context(slf);
            let id = engine.inflight.lock().insert(held);
            // What a cancel targets.
            op.set_request_id(id.0);
            // SAFETY: the op's buffer stays valid until its completion is delivered: the
            // registry holds a strong reference to the op, the op holds the buffer, and
            // nothing releases either before `deliver` (a dropped op is still referenced
            // by the registry, which no GC clear releases).
            if let Err(err) = unsafe { pool.submit(id, op.request()) } {
                let held = engine.inflight.lock().remove(id);
                op.unclaim();
                drop(held);
                return Err(Error::Runtime(
                    match err {
                        SubmitError::QueueFull => "Thread pool queue full",
                        SubmitError::Shutdown => "Thread pool is shutdown",
                    }
                    .into(),
                ));
            }
            accepted += 1;
        }
        drop(pool_guard);
        values::int(accepted)
    })
}

unsafe extern "C" fn ctx_cancel(
    slf: *mut PyObject,
    args: *mut PyObject,
    _kwargs: *mut PyObject,
) -> *mut PyObject {
    // Accepts anything, as caio did; only ops in flight on this Context are looked at. A
    // syscall a worker already runs cannot be interrupted: that op completes normally.
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        let mut cancelled: i64 = 0;
        for obj in context::arguments(args) {
            if !is_operation(obj) {
                continue;
            }
            // SAFETY: type-checked just above.
            let op = unsafe { OpRef::new(obj) };
            if op.phase() == Phase::InFlight
                && op.context() == slf
                && engine.cancel(RequestId(op.request_id()))
            {
                cancelled += 1;
            }
        }
        values::int(cancelled)
    })
}

unsafe extern "C" fn ctx_close(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        unsafe { engine(slf)? }.close();
        Ok(values::none())
    })
}

fn events_of(engine: &Engine) -> Result<&Arc<EventQueue>> {
    engine.events.as_ref().ok_or_else(|| {
        // Unreachable: only EventfdContext has the methods that call this.
        Error::Runtime("this thread_aio Context has no completion queue".into())
    })
}

unsafe extern "C" fn ctx_process_events(
    slf: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        let drain = DrainArgs::parse(args, kwargs)?;
        drain.check_min_le_max()?;
        let (max, min) = (drain.max, drain.min);
        let events = events_of(engine)?;
        if min > 0 && drain.timeout != 0 && events.len() < min as usize {
            // Sleeps in poll(), so Ctrl-C or another signal wakes it to run Python's
            // handlers; their exception ends the wait, else it resumes for the time left.
            wait_interruptibly(drain.timeout(), |left| {
                match events.wait(min as usize, left) {
                    Ok(_) => Ok(Waited::Done(())),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        Ok(Waited::Interrupted)
                    }
                    Err(e) => Err(Error::Os(
                        e.raw_os_error().unwrap_or(0),
                        format!("waiting for completions on the Context's eventfd failed: {e}"),
                    )),
                }
            })?;
        }
        values::int(engine.drain(max as usize) as i64)
    })
}

unsafe extern "C" fn ctx_poll(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        context::poll(events_of(engine)?.eventfd())
    })
}

unsafe extern "C" fn ctx_run_inline(slf: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        if engine.lock_pool().is_none() {
            return Err(closed());
        }
        context::run_inline(arg, is_operation, "caio.thread_aio.Operation")
    })
}

unsafe extern "C" fn get_max_requests(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.max_requests as i64))
}

unsafe extern "C" fn get_pool_size(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.pool_size as i64))
}

unsafe extern "C" fn get_fileno(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        match &engine.events {
            Some(events) => values::int(events.eventfd().as_raw_fd() as i64),
            // Unreachable: only EventfdContext has this property.
            None => Err(Error::Attribute(
                "this thread_aio Context has no eventfd".into(),
            )),
        }
    })
}

unsafe extern "C" fn ctx_repr(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let text = match unsafe { engine(slf) } {
            Ok(e) => format!(
                "<caio.thread_aio.{} at {slf:p}: max_requests={}, pool_size={}, \
                 in_flight={}, {}>",
                if e.events.is_some() {
                    "EventfdContext"
                } else {
                    "Context"
                },
                e.max_requests,
                e.pool_size,
                e.inflight.lock().len(),
                if e.lock_pool().is_some() {
                    "open"
                } else {
                    "closed"
                },
            ),
            Err(_) => format!("<caio.thread_aio.Context at {slf:p}: uninitialized>"),
        };
        str_object(&text).map(PyOwned::into_ptr)
    })
}

impl context::Engine for Engine {
    fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }

    /// Only eventfd mode needs pumping; in the default mode the workers deliver.
    fn completion_fd(&self) -> Option<c_int> {
        self.events
            .as_ref()
            .map(|events| events.eventfd().as_raw_fd())
    }

    fn visit_in_flight(&self, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
        if self.events.is_none() {
            return 0;
        }
        self.inflight.visit(visit, arg, PyOwned::as_ptr)
    }
}

unsafe extern "C" fn ctx_dealloc(slf: *mut PyObject) {
    // SAFETY: called once when the refcount reaches zero, with the GIL held (possibly on a
    // worker thread that just delivered the last op). No op is in flight: each one holds a
    // reference to this Context. `close` joins the workers with the GIL released.
    unsafe { context::dealloc::<Engine>(slf, |engine| engine.close()) }
}

/// What both Context types have: caio's thread_aio surface.
fn shared_slots(doc: &'static CStr, completion: Option<CompletionMethods>) -> ContextSlots {
    use crate::types::{getset, method, method_kw};
    let methods = vec![
        method(
            c"submit",
            ctx_submit,
            ffi::METH_VARARGS,
            c"submit(*operations) -> int: number of operations accepted.",
        ),
        method_kw(
            c"cancel",
            ctx_cancel,
            0,
            c"cancel(*operations) -> int: how many queued operations were taken out \
              before a worker started them (they complete with ECANCELED); a running \
              syscall cannot be interrupted and completes normally.",
        ),
        method(
            c"close",
            ctx_close,
            ffi::METH_NOARGS,
            c"close(): stop accepting work; queued work still runs, workers are joined.",
        ),
    ];
    let getsets = vec![
        getset(
            c"max_requests",
            get_max_requests,
            c"How many requests may wait for a worker.",
        ),
        getset(c"pool_size", get_pool_size, c"Number of worker threads."),
    ];
    ContextSlots {
        doc,
        new: ctx_new,
        dealloc: ctx_dealloc,
        repr: ctx_repr,
        methods,
        completion,
        getsets,
    }
}

/// Creates the three types (once per process) and adds them to `module`.
pub(crate) fn add_types(module: *mut PyObject) -> Result<()> {
    if OPERATION_TYPE.load(Ordering::Acquire).is_null() {
        let op_type = operation::create_type(
            c"caio.thread_aio.Operation",
            c"A file operation for caio.thread_aio.Context (read, write, fsync, fdsync).",
            operation::Flavor::Thread,
        )?;
        OPERATION_TYPE.store(op_type, Ordering::Release);
    }
    if CONTEXT_TYPE.load(Ordering::Acquire).is_null() {
        let slots = shared_slots(
            c"Context(max_requests=512, pool_size=8)\n\nthread aio context: file I/O on a pool of native worker threads; each callback runs on the worker that did the I/O, holding the GIL.",
            None,
        );
        let ty = context::create_type::<Engine>(c"caio.thread_aio.Context", slots)?;
        CONTEXT_TYPE.store(ty, Ordering::Release);
    }
    if EVENTFD_CONTEXT_TYPE.load(Ordering::Acquire).is_null() {
        let mut slots = shared_slots(
            c"EventfdContext(max_requests=512, pool_size=8)\n\nthread aio context delivering on the caller's thread: workers queue completions without taking the GIL and signal the eventfd fileno; process_events() runs the callbacks.",
            Some(CompletionMethods {
                process_events: ctx_process_events,
                poll: ctx_poll,
                run_inline: ctx_run_inline,
            }),
        );
        slots.getsets.push(crate::types::getset(
            c"fileno",
            get_fileno,
            c"The eventfd signalled when completions are queued.",
        ));
        let ty = context::create_type::<Engine>(c"caio.thread_aio.EventfdContext", slots)?;
        EVENTFD_CONTEXT_TYPE.store(ty, Ordering::Release);
    }
    context::add_to_module(
        module,
        &[
            (c"ThreadOperation", OPERATION_TYPE.load(Ordering::Acquire)),
            (c"ThreadContext", CONTEXT_TYPE.load(Ordering::Acquire)),
            (
                c"ThreadEventfdContext",
                EVENTFD_CONTEXT_TYPE.load(Ordering::Acquire),
            ),
        ],
    )
}
