//! `caio.linux_aio`: the Context type over a Linux kernel AIO context.
//!
//! `submit` calls `io_submit`, which for ordinary (buffered) files does the whole transfer
//! right there on the calling thread, and on pipes, sockets and terminals waits there for
//! data (or room) for as long as it takes, with the GIL held. So that no request can freeze
//! an event loop (or the whole process), requests over 64 KiB on files without `O_DIRECT`
//! go to two helper threads, and requests on streams each run on a thread of their own (see
//! [`route`]); their completions are announced on the same eventfd and delivered by the
//! same `process_events`.

use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use caio_backends::aio::{AioContext, Iocb};
use caio_backends::{CompletionSink, EventQueue, IoKind, IoRequest, ThreadPool};
use caio_core::{Completion, Phase, RequestId};

use crate::args::parse_args;
use crate::context::{self, CompletionMethods, ContextSlots, DrainArgs};
use crate::error::{entry, repr_of, str_object, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::gil::{wait_interruptibly, without_gil, Waited};
use crate::inflight::InFlight;
use crate::limits::{explain, setup_error, Resource};
use crate::operation::{self, deliver, Flavor, OpRef};
use crate::values;

static OPERATION_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static CONTEXT_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

const DEFAULT_MAX_REQUESTS: u32 = 32;
const MAX_DRAIN: u32 = 1 << 20;
/// Buffered requests above this size run on helper threads (see the module docs).
const OFFLOAD_ABOVE: usize = 64 * 1024;
const OFFLOAD_THREADS: usize = 2;
/// Stack of a stream request's thread: it only runs `IoRequest::perform`.
const STREAM_THREAD_STACK: usize = 64 * 1024;

/// One in-flight request: the engine's reference to the op, and the control block the
/// kernel may look up again (`io_cancel` matches it by address, so it is boxed).
struct Entry {
    op: PyOwned,
    iocb: Box<Iocb>,
    offloaded: bool,
}

struct Engine {
    max_requests: u32,
    inflight: InFlight<Entry>,
    /// Completions from the helper threads; its eventfd is also the kernel's RESFD.
    events: Arc<EventQueue>,
    offload: Mutex<Option<ThreadPool>>,
    // Declared last: destroying the context waits for the kernel's outstanding requests.
    aio: AioContext,
}

/// Where a request runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `io_submit` itself: `O_DIRECT` requests (truly asynchronous), small buffered file
    /// requests (mostly page-cache copies), and whatever `io_submit` refuses up front (a
    /// bad descriptor, one not open for this direction, a negative offset, a sync or a
    /// read of a descriptor that supports neither), so that it still raises at submit.
    Kernel,
    /// The helper threads: large buffered requests on regular files and block devices.
    Helpers,
    /// A thread of its own: requests on streams (pipes, FIFOs, sockets, character devices,
    /// eventfds...), which may wait for the other side for any length of time, so that a
    /// waiting one holds up neither the helper threads nor other stream requests.
    Stream,
}

/// Decides where `request` runs (see [`Route`]). On a non-seekable descriptor the kernel
/// ignores the offset; so do the threads: the request then runs at offset 0, which
/// `IoRequest::perform` reads as "the current position" on such a descriptor.
fn route(request: &mut IoRequest, direct: bool) -> Route {
    if request.offset < 0 || !matches!(request.kind, IoKind::Read | IoKind::Write) {
        return Route::Kernel;
    }
    let fd = request.fd;
    // SAFETY: fstat writes into a zeroed struct on our stack; fcntl(F_GETFL) and lseek
    // (called below, only when needed) take no pointer; a bad fd just makes them fail.
    let (file_type, access, seekable) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Route::Kernel;
        }
        let access = move || libc::fcntl(fd, libc::F_GETFL) & libc::O_ACCMODE;
        let seekable = move || libc::lseek(fd, 0, libc::SEEK_CUR) >= 0;
        (st.st_mode & libc::S_IFMT, access, seekable)
    };
    let files = matches!(file_type, libc::S_IFREG | libc::S_IFBLK);
    // The common case costs one fstat: small or O_DIRECT file requests, and directories
    // (no read or write: io_submit refuses them with EINVAL).
    if files && (direct || request.len <= OFFLOAD_ABOVE) || file_type == libc::S_IFDIR {
        return Route::Kernel;
    }
    let access = access();
    let allowed = match request.kind {
        IoKind::Read => access == libc::O_RDONLY || access == libc::O_RDWR,
        _ => access == libc::O_WRONLY || access == libc::O_RDWR,
    };
    if !allowed {
        Route::Kernel
    } else if files {
        Route::Helpers
    } else {
        if !seekable() {
            request.offset = 0;
        }
        Route::Stream
    }
}

fn os_error(e: std::io::Error) -> Error {
    Error::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `io_submit` errors as caio raised them: a request the kernel refuses up front is a
/// `ValueError`, here also an `OSError` with the errno (`caio.errors.SubmitError`); a full
/// queue stays caio's `OverflowError`.
fn submit_error(errno: i32) -> Error {
    let message = match errno {
        libc::EAGAIN => {
            return Error::Overflow(
                "Insufficient resources are available to queue any iocbs [EAGAIN]".into(),
            )
        }
        libc::EBADF => "The file descriptor specified in the first iocb is invalid [EBADF]",
        libc::EFAULT => "One of the data structures points to invalid data [EFAULT]",
        libc::EINVAL => {
            "The AIO context specified by ctx_id is invalid. nr is less than 0. The iocb at \
             *iocbpp[0] is not properly initialized, the operation specified is invalid for \
             the file descriptor in the iocb, or the value in the aio_reqprio field is \
             invalid. [EINVAL]"
        }
        other => return Error::Errno(other),
    };
    Error::Refused(errno, message.into())
}

/// `io_cancel` errors as caio raised them; the kernel's refusals carry their errno
/// (`EINVAL`: `caio.errors.SubmitError`, a `ValueError`; `EAGAIN`: `OperationError`, a
/// `SystemError`).
fn cancel_error(errno: i32) -> Error {
    match errno {
        libc::EFAULT => {
            Error::Runtime("One of the data structures points to invalid data [EFAULT]".into())
        }
        libc::EINVAL => Error::Refused(
            errno,
            "The AIO context specified by ctx_id is invalid [EINVAL]".into(),
        ),
        libc::ENOSYS => Error::NotImplemented(
            "io_cancel() is not implemented on this architecture [ENOSYS]".into(),
        ),
        other => Error::Errno(other),
    }
}

impl Engine {
    fn lock_offload(&self) -> MutexGuard<'_, Option<ThreadPool>> {
        self.offload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a dispatched-then-refused request again and makes its op submittable.
    fn roll_back(&self, id: RequestId) {
        if let Some(entry) = self.inflight.lock().remove(id) {
            // SAFETY: the registry only holds our Operation objects.
            let op = unsafe { OpRef::new(entry.op.as_ptr()) };
            op.unclaim();
        }
    }

    /// The helper threads, started on first use.
    fn helper_pool(&self) -> Result<MutexGuard<'_, Option<ThreadPool>>> {
        let mut pool = self.lock_offload();
        if pool.is_none() {
            let started = ThreadPool::new(OFFLOAD_THREADS, usize::MAX, self.events.clone());
            *pool = Some(
                started.map_err(|e| Error::Runtime(format!("cannot start helper threads: {e}")))?,
            );
        }
        Ok(pool)
    }

    /// Takes up to `room` kernel completions that are already there, without waiting.
    /// A signal can interrupt even this zero-timeout call; nothing is lost then, so it is
    /// simply repeated.
    fn reap_ready(&self, room: usize, out: &mut Vec<Completion>) -> Result<()> {
        if room == 0 {
            return Ok(());
        }
        loop {
            match self.aio.get_events(0, room, Some(Duration::ZERO), out) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.map(drop).map_err(os_error),
            }
        }
    }

    /// Takes what has completed (up to `max` in `out`, which may hold some already) and,
    /// while fewer than `min` are there, waits for more until `left` passes (`None`:
    /// forever). Runs with the GIL released; a signal ends it as [`Waited::Interrupted`].
    fn collect_step(
        &self,
        min: usize,
        max: usize,
        left: Option<Duration>,
        out: &mut Vec<Completion>,
    ) -> Result<Waited<()>> {
        // Completions come from the kernel and from the helper threads, and either may be
        // the one awaited (a helper request may even be submitted while we wait). Both
        // signal the eventfd, so sleep on that and look at both after every wake-up.
        let deadline = left.map(|t| Instant::now() + t);
        let outcome = loop {
            self.reap_ready(max - out.len(), out)?;
            out.extend(self.events.take(max - out.len()));
            if out.len() >= min || out.len() >= max {
                break Waited::Done(());
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break Waited::Done(()),
                },
            };
            match caio_backends::io::wait_readable(self.events.eventfd().as_raw_fd(), left) {
                Ok(_) => {
                    let _ = self.events.eventfd().read();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break Waited::Interrupted,
                Err(e) => return Err(os_error(e)),
            }
        };
        // We may have eaten a wake-up meant for an event loop watching the eventfd.
        self.events.eventfd().signal();
        Ok(outcome)
    }

    /// Collects up to `max` completions, waiting with the GIL released until `min` are
    /// there or `timeout` passes (`None`: forever). A signal runs Python's handlers: an
    /// exception they raise ends the wait (what was taken stays queued for the next call),
    /// otherwise it goes on for the time left.
    fn collect(
        &self,
        min: usize,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Completion>> {
        let mut out = self.events.take(max);
        if out.len() >= min {
            self.reap_ready(max - out.len(), &mut out)?;
            return Ok(out);
        }
        let waited =
            wait_interruptibly(timeout, |left| self.collect_step(min, max, left, &mut out));
        if let Err(err) = waited {
            for completion in out {
                self.events.complete(completion);
            }
            return Err(err);
        }
        Ok(out)
    }
}

/// # Safety
/// `slf` is a live instance of this module's Context type.
unsafe fn engine<'a>(slf: *mut PyObject) -> Result<&'a Engine> {
    // SAFETY: see the function's contract (its layout is `ContextObject<Engine>`).
    unsafe { context::engine(slf, "self->ctx is NULL") }
}

fn is_operation(obj: *mut PyObject) -> bool {
    // SAFETY: `obj` is a live argument; the type was created in module exec.
    unsafe { ffi::PyObject_TypeCheck(obj, OPERATION_TYPE.load(Ordering::Acquire)) != 0 }
}

unsafe extern "C" fn ctx_new(
    cls: *mut PyTypeObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let events = Arc::new(EventQueue::new().map_err(|e| setup_error(Resource::EventFd, e))?);
        let mut max_requests: u32 = 0;
        parse_args!(
            args,
            kwargs,
            c"|I:Context",
            [c"max_requests"],
            &mut max_requests
        )?;
        let max_requests = if max_requests == 0 {
            DEFAULT_MAX_REQUESTS
        } else {
            max_requests
        };
        let aio = AioContext::new(max_requests).map_err(|e| {
            setup_error(
                Resource::AioContext {
                    events: max_requests,
                },
                e,
            )
        })?;
        let engine = Box::new(Engine {
            max_requests,
            inflight: InFlight::new(),
            events,
            offload: Mutex::new(None),
            aio,
        });
        context::alloc(cls, engine)
    })
}

unsafe extern "C" fn ctx_submit(slf: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance (a method of the type).
        let engine = unsafe { engine(slf)? };
        let objs = context::arguments(args);
        if let Some(i) = objs.iter().position(|&o| !is_operation(o)) {
            return Err(Error::Type(format!(
                "Wrong type for argument {i} -> {}",
                repr_of(objs[i])
            )));
        }
        let resfd = engine.events.eventfd().as_raw_fd();
        // Claimed ops in argument order; offloaded ones are dispatched only after
        // io_submit, so that what the call reports is always a prefix of the claimed ops.
        let mut claimed: Vec<Claimed> = Vec::with_capacity(objs.len());
        let mut iocbs: Vec<*mut Iocb> = Vec::new();
        for &obj in &objs {
            // SAFETY: type-checked above.
            let op = unsafe { OpRef::new(obj) };
            if !op.state().try_claim() {
                continue;
            }
            let mut request = op.request();
            // SAFETY: `obj` is live (borrowed from the args tuple).
            let held = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(obj)) };
            op.set_context(slf);
            let route = route(&mut request, op.is_direct());
            let mut registry = engine.inflight.lock();
            let id = registry.insert(Entry {
                op: held,
                iocb: Box::new(Iocb::default()),
                offloaded: route != Route::Kernel,
            });
            op.set_request_id(id.0);
            if route != Route::Kernel {
                claimed.push(Claimed::Offload(id, request, route));
            } else {
                let entry = registry.get_mut(id).expect("just inserted");
                *entry.iocb = Iocb::new(id, &request, op.priority(), resfd);
                iocbs.push(&mut *entry.iocb as *mut Iocb);
                claimed.push(Claimed::Kernel(id));
            }
        }
        // The helper threads must be running before io_submit: once the kernel has taken
        // a request, nothing submitted with it may be undone.
        let pool = if claimed
            .iter()
            .any(|c| matches!(c, Claimed::Offload(_, _, Route::Helpers)))
        {
            match engine.helper_pool() {
                Ok(pool) => Some(pool),
                Err(err) => {
                    for c in &claimed {
                        engine.roll_back(c.id());
                    }
                    return Err(err);
                }
            }
        } else {
            None
        };
        let accepted = if iocbs.is_empty() {
            0
        } else {
            // SAFETY: each iocb is boxed in the registry entry of its op, which stays until
            // the completion is delivered (rollbacks below only touch iocbs the kernel did
            // not take); each op holds its buffer and this Context (so the AIO context
            // outlives the request).
            match unsafe { engine.aio.submit(&mut iocbs) } {
                Ok(accepted) => accepted,
                Err(e) => {
                    for c in &claimed {
                        engine.roll_back(c.id());
                    }
                    return Err(submit_error(e.raw_os_error().unwrap_or(libc::EIO)));
                }
            }
        };
        // io_submit stops at the first iocb it cannot queue: that op and every op after it
        // never started and become submittable again.
        let mut kernel_seen = 0;
        let mut taken: i64 = 0;
        let mut stopped = false;
        for c in claimed {
            match c {
                Claimed::Kernel(id) => {
                    kernel_seen += 1;
                    stopped |= kernel_seen > accepted;
                    if stopped {
                        engine.roll_back(id);
                    } else {
                        taken += 1;
                    }
                }
                Claimed::Offload(id, ..) if stopped => engine.roll_back(id),
                Claimed::Offload(id, request, Route::Helpers) => {
                    let helpers = pool.as_ref().and_then(|p| p.as_ref());
                    let helpers = helpers.expect("started before io_submit");
                    // SAFETY: `id` was registered above with the op that owns the buffer;
                    // the entry stays until its completion is delivered.
                    if let Err(err) = unsafe { helpers.submit(id, request) } {
                        // Not reachable while this Context lives (the queue is unbounded
                        // and shuts down only with it). Requests before this one may be
                        // running already, so it fails as a completion, not a rollback.
                        debug_assert!(false, "helper threads refused: {err:?}");
                        engine.events.complete(Completion {
                            id,
                            res: -i64::from(libc::EAGAIN),
                        });
                    }
                    taken += 1;
                }
                Claimed::Offload(id, request, _) => {
                    let events = engine.events.clone();
                    let builder = std::thread::Builder::new()
                        .name("caio-aio-stream".into())
                        .stack_size(STREAM_THREAD_STACK);
                    let spawned = caio_backends::spawn_without_signals(builder, move || {
                        // SAFETY: as for the helper threads above (the thread ends
                        // with this request).
                        let res = unsafe { request.perform() };
                        events.complete(Completion { id, res });
                    });
                    if let Err(err) = spawned {
                        // Out of threads. The requests before this one have started, so
                        // it fails as a completion, not a rollback.
                        engine.events.complete(Completion {
                            id,
                            res: -i64::from(err.raw_os_error().unwrap_or(libc::EAGAIN)),
                        });
                    }
                    taken += 1;
                }
            }
        }
        values::int(taken)
    })
}

/// A claimed op of one `submit` call.
enum Claimed {
    Kernel(RequestId),
    /// Runs on a thread ([`Route::Helpers`] or [`Route::Stream`]).
    Offload(RequestId, IoRequest, Route),
}

impl Claimed {
    fn id(&self) -> RequestId {
        match self {
            Claimed::Kernel(id) | Claimed::Offload(id, ..) => *id,
        }
    }
}

fn deliver_batch(engine: &Engine, batch: Vec<Completion>) {
    for completion in batch {
        let entry = engine.inflight.lock().remove(completion.id);
        if let Some(entry) = entry {
            drop(entry.iocb);
            deliver(entry.op, completion.res);
        }
    }
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
        let (max, min) = (drain.max, drain.min);
        if max > MAX_DRAIN {
            return Err(Error::Overflow(format!(
                "max_requests ({max}) exceeds the maximum allowed ({MAX_DRAIN})"
            )));
        }
        if min > max {
            return Err(Error::Value(format!(
                "min_requests \"{min}\" must be lower then max_requests \"{max}\""
            )));
        }
        let timeout = drain.timeout();
        let batch = engine.collect(min as usize, max as usize, timeout)?;
        // The count of events taken (as io_getevents counts them), so that a caller that
        // drains until a call returns less than `max` never leaves any behind.
        let taken = batch.len();
        deliver_batch(engine, batch);
        values::int(taken as i64)
    })
}

unsafe extern "C" fn ctx_cancel(
    slf: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        let mut obj: *mut PyObject = ptr::null_mut();
        parse_args!(args, kwargs, c"O:cancel", [c"operation"], &mut obj)?;
        if !is_operation(obj) {
            return Err(Error::Type(format!(
                "Operation required not {}",
                repr_of(obj)
            )));
        }
        // SAFETY: type-checked above.
        let op = unsafe { OpRef::new(obj) };
        let id = RequestId(op.request_id());
        let iocb = if op.phase() == Phase::InFlight && op.context() == slf {
            engine
                .inflight
                .lock()
                .get_mut(id)
                .filter(|e| !e.offloaded)
                .map(|e| &mut *e.iocb as *mut Iocb)
        } else {
            None
        };
        // Only a kernel request of this context can be cancelled; for anything else
        // the kernel would answer EINVAL, and so do we (without asking it).
        let Some(iocb) = iocb else {
            return Err(cancel_error(libc::EINVAL));
        };
        // SAFETY: the iocb is boxed in the op's registry entry, alive while in flight.
        let completion = unsafe { engine.aio.cancel(iocb) }
            .map_err(|e| cancel_error(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let res = completion.res;
        deliver_batch(engine, vec![Completion { id, res }]);
        values::int(res)
    })
}

unsafe extern "C" fn ctx_poll(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        context::poll(engine.events.eventfd())
    })
}

unsafe extern "C" fn ctx_run_inline(slf: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        unsafe { engine(slf)? };
        context::run_inline(arg, is_operation, "caio.linux_aio.Operation")
    })
}

unsafe extern "C" fn get_fileno(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.events.eventfd().as_raw_fd() as i64))
}

unsafe extern "C" fn get_max_requests(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.max_requests as i64))
}

unsafe extern "C" fn ctx_repr(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let text = match unsafe { engine(slf) } {
            Ok(e) => format!(
                "<caio.linux_aio.Context at {slf:p}: max_requests={}, eventfd={}, in_flight={}>",
                e.max_requests,
                e.events.eventfd().as_raw_fd(),
                e.inflight.lock().len(),
            ),
            Err(_) => format!("<caio.linux_aio.Context at {slf:p}: uninitialized>"),
        };
        str_object(&text).map(PyOwned::into_ptr)
    })
}

impl context::Engine for Engine {
    fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }

    fn completion_fd(&self) -> Option<c_int> {
        Some(self.events.eventfd().as_raw_fd())
    }

    fn visit_in_flight(&self, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
        self.inflight.visit(visit, arg, |entry| entry.op.as_ptr())
    }
}

unsafe extern "C" fn ctx_dealloc(slf: *mut PyObject) {
    // SAFETY: called once when the refcount reaches zero. No op is in flight (each one
    // holds a reference to this Context), so the engine holds no Python object. It is
    // dropped with the GIL released: that joins the idle helper threads, and io_destroy
    // (which finds nothing outstanding) waits for an RCU grace period, tens of ms.
    unsafe { context::dealloc::<Engine>(slf, |engine| without_gil(move || drop(engine))) }
}

/// `None` if kernel AIO works here, else the reason (the text `ImportError` carries).
pub(crate) fn probe() -> Option<String> {
    let release = crate::linux_uring::kernel_release();
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (4, 18) {
        return Some(format!(
            "Linux kernel supported since 4.18 but current kernel is {release}."
        ));
    }
    match caio_backends::aio::probe() {
        Ok(()) => None,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            let why = explain(Resource::AioContext { events: 1 }, errno).unwrap_or_else(|| {
                let text = e.to_string();
                text.split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
            Some(format!(
                "Error on io_setup with code {errno} ({why}; kernel {release})"
            ))
        }
    }
}

/// Creates the two types (once per process) and adds them to `module`.
pub(crate) fn add_types(module: *mut PyObject) -> Result<()> {
    use crate::types::{getset, method, method_kw};
    if OPERATION_TYPE.load(Ordering::Acquire).is_null() {
        let op_type = operation::create_type(
            c"caio.linux_aio.Operation",
            c"A file operation for caio.linux_aio.Context (read, write, fsync, fdsync).",
            Flavor::Aio,
        )?;
        OPERATION_TYPE.store(op_type, Ordering::Release);
    }
    if CONTEXT_TYPE.load(Ordering::Acquire).is_null() {
        let methods = vec![
            method(
                c"submit",
                ctx_submit,
                ffi::METH_VARARGS,
                c"submit(*operations) -> int: io_submit them (buffered files: the transfer happens here, except large requests, which go to helper threads; requests on pipes, sockets and other streams each run on a thread of their own).",
            ),
            method_kw(
                c"cancel",
                ctx_cancel,
                0,
                c"cancel(operation) -> int: io_cancel (regular files: always ValueError on current kernels).",
            ),
        ];
        let getsets = vec![
            getset(
                c"fileno",
                get_fileno,
                c"The eventfd signalled on every completion.",
            ),
            getset(c"max_requests", get_max_requests, c"The io_setup capacity."),
        ];
        let slots = ContextSlots {
            doc: c"Context(max_requests=32)\n\nlinux aio context representation.",
            new: ctx_new,
            dealloc: ctx_dealloc,
            repr: ctx_repr,
            methods,
            completion: Some(CompletionMethods {
                process_events: ctx_process_events,
                poll: ctx_poll,
                run_inline: ctx_run_inline,
            }),
            getsets,
        };
        let ty = context::create_type::<Engine>(c"caio.linux_aio.Context", slots)?;
        CONTEXT_TYPE.store(ty, Ordering::Release);
    }
    context::add_to_module(
        module,
        &[
            (c"AioOperation", OPERATION_TYPE.load(Ordering::Acquire)),
            (c"AioContext", CONTEXT_TYPE.load(Ordering::Acquire)),
        ],
    )
}
