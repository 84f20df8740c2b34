//! `caio.linux_uring`: the Context type over an io_uring instance.
//!
//! `submit` only stages entries; `flush` hands them to the kernel and delivers what already
//! completed (page-cache reads often finish inside that syscall); `process_events` delivers
//! the rest, optionally waiting with the GIL released. Callbacks always run on the thread
//! that calls `flush`/`process_events`, never with a lock held.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use caio_backends::uring::{Cancel, Cancelled};
use caio_backends::{uring, EventFd, Ring};
use caio_core::{Completion, Phase, RequestId};

use crate::args::parse_args;
use crate::context::{self, CompletionMethods, ContextSlots, DrainArgs};
use crate::error::{entry, repr_of, str_object, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::gil::{wait_interruptibly, without_gil, Waited};
use crate::inflight::InFlight;
use crate::limits::{setup_error, Resource};
use crate::operation::{self, deliver, Flavor, OpRef};
use crate::values;

static OPERATION_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static CONTEXT_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

const DEFAULT_MAX_REQUESTS: u32 = 32;

/// The ring and the completions reaped from it but not yet delivered.
struct RingState {
    ring: Ring,
    ready: VecDeque<Completion>,
}

struct Engine {
    max_requests: u32,
    sqpoll: bool,
    ring_fd: c_int,
    state: Mutex<RingState>,
    inflight: InFlight,
    /// Threads blocked in `process_events(min_requests > 0, timeout != 0)`. While any
    /// are parked, only they reap the CQ, so `flush()` can never take the completion a
    /// parked thread was woken for.
    parked: AtomicUsize,
    // Declared last: dropped after the ring that signals it.
    eventfd: EventFd,
}

fn os_error(e: std::io::Error) -> Error {
    Error::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Engine {
    /// Takes the ring without the GIL (call from inside `without_gil`).
    fn lock(&self) -> MutexGuard<'_, RingState> {
        // Nothing panics while holding this lock with the ring half-updated (the queues
        // publish on drop), so a poisoned lock is still sound to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the ring with the GIL held: if another thread has it, the GIL is released
    /// while waiting, so the interpreter runs on (and a holder that needs the GIL before it
    /// lets go cannot deadlock with us). Every holder keeps the ring only for calls that do
    /// not wait (a cancel naps without it).
    fn lock_gil_held(&self) -> MutexGuard<'_, RingState> {
        match self.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => without_gil(|| self.lock()),
        }
    }

    /// Takes up to `max` reaped completions (reaping first if `reap`), re-arming the
    /// eventfd if some stay behind, and turns them into the ops they complete.
    fn collect(&self, state: &mut RingState, max: usize, reap: bool) -> Vec<(PyOwned, i64)> {
        if reap {
            state.ring.reap(&mut state.ready);
        }
        let n = state.ready.len().min(max);
        let batch: Vec<Completion> = state.ready.drain(..n).collect();
        if !state.ready.is_empty() {
            self.eventfd.signal();
        }
        let mut inflight = self.inflight.lock();
        batch
            .into_iter()
            .filter_map(|c| inflight.remove(c.id).map(|op| (op, c.res)))
            .collect()
    }

    /// Waits (the GIL released while blocked; call with it held) until `min` completions are
    /// reaped or the time is up. A signal runs Python's handlers: an exception they raise
    /// (`KeyboardInterrupt`) ends the wait with it, otherwise the wait resumes for the time
    /// left. The thread counts as parked until it returns, on every path.
    fn wait(&self, min: usize, timeout: Option<Duration>) -> Result<()> {
        self.parked.fetch_add(1, Ordering::SeqCst);
        let result = wait_interruptibly(timeout, |left| self.wait_step(min, left));
        let others_parked = self.parked.fetch_sub(1, Ordering::SeqCst) > 1;
        if others_parked || result.is_err() {
            without_gil(|| {
                let mut state = self.lock();
                if result.is_err() && !state.ready.is_empty() {
                    // Reaped but not delivered: whoever drains next must hear of them.
                    self.eventfd.signal();
                }
                if others_parked {
                    // Other threads are parked on the ring; what we reaped may include
                    // theirs. A no-op completion makes them look again.
                    if state.ring.stager().push_wakeup().is_ok() {
                        let _ = state.ring.submit();
                    }
                }
            });
        }
        result
    }

    /// One blocking stretch of [`wait`](Self::wait) (without the GIL), of at most `left`.
    fn wait_step(&self, min: usize, left: Option<Duration>) -> Result<Waited<()>> {
        let deadline = left.map(|t| Instant::now() + t);
        loop {
            {
                let mut state = self.lock();
                if !self.sqpoll && state.ring.pending() > 0 {
                    match state.ring.submit() {
                        Err(e) if e.kind() == ErrorKind::Interrupted => {
                            return Ok(Waited::Interrupted)
                        }
                        other => other.map_err(os_error)?,
                    };
                }
                let RingState { ring, ready } = &mut *state;
                ring.reap(ready);
                if ready.len() >= min {
                    return Ok(Waited::Done(()));
                }
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(Waited::Done(())),
                },
            };
            match uring::wait_readable(self.ring_fd, left) {
                Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(Waited::Interrupted),
                other => other.map_err(os_error)?,
            };
        }
    }
}

/// # Safety
/// `slf` is a live instance of this module's Context type.
unsafe fn engine<'a>(slf: *mut PyObject) -> Result<&'a Engine> {
    // SAFETY: see the function's contract (its layout is `ContextObject<Engine>`).
    unsafe { context::engine(slf, "context not initialized") }
}

fn operation_type() -> *mut PyTypeObject {
    OPERATION_TYPE.load(Ordering::Acquire)
}

fn is_operation(obj: *mut PyObject) -> bool {
    // SAFETY: `obj` is a live argument; exact type check as caio does.
    unsafe { (*obj).ob_type == operation_type() }
}

fn ring_full() -> Error {
    Error::Overflow("io_uring SQ ring full".into())
}

fn deliver_all(batch: Vec<(PyOwned, i64)>) -> usize {
    let n = batch.len();
    for (op, res) in batch {
        deliver(op, res);
    }
    n
}

unsafe extern "C" fn ctx_new(
    cls: *mut PyTypeObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let (mut max_requests, mut sqpoll): (u32, c_int) = (0, 0);
        parse_args!(
            args,
            kwargs,
            c"|Ip:Context",
            [c"max_requests", c"sqpoll"],
            &mut max_requests,
            &mut sqpoll
        )?;
        let max_requests = if max_requests == 0 {
            DEFAULT_MAX_REQUESTS
        } else {
            max_requests
        };
        let eventfd = EventFd::new().map_err(|e| setup_error(Resource::EventFd, e))?;
        // One slot of headroom, as caio: the kernel rounds up to a power of two anyway.
        let entries = max_requests
            .checked_add(1)
            .ok_or(Error::Errno(libc::EINVAL))?;
        let ring = Ring::new(entries, sqpoll != 0, eventfd.as_raw_fd())
            .map_err(|e| setup_error(Resource::Ring, e))?;
        let engine = Box::new(Engine {
            max_requests,
            sqpoll: ring.sqpoll(),
            ring_fd: ring.fd(),
            state: Mutex::new(RingState {
                ring,
                ready: VecDeque::new(),
            }),
            inflight: InFlight::new(),
            parked: AtomicUsize::new(0),
            eventfd,
        });
        context::alloc(cls, engine)
    })
}

unsafe extern "C" fn ctx_submit(slf: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance (a method of the type).
        let engine = unsafe { engine(slf)? };
        let ops = context::arguments(args);
        if let Some(i) = ops.iter().position(|&o| !is_operation(o)) {
            return Err(Error::Type(format!(
                "argument {} is not an Operation",
                i + 1
            )));
        }
        let mut state = engine.lock_gil_held();
        let mut stager = state.ring.stager();
        let mut accepted: i64 = 0;
        for &obj in &ops {
            // SAFETY: type-checked above.
            let op = unsafe { OpRef::new(obj) };
            if !op.state().try_claim() {
                continue;
            }
            if stager.is_full() {
                // Ops staged earlier in this call are published (and stay in flight) when
                // the stager drops.
                op.state().rollback();
                return Err(ring_full());
            }
            // SAFETY: `obj` is live (borrowed from the args tuple).
            let held = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(obj)) };
            op.set_context(slf);
            let id = engine.inflight.lock().insert(held);
            op.set_request_id(id.0);
            // SAFETY: the buffer stays valid until the CQE for `id` is reaped and
            // delivered: the registry holds the op, the op holds the buffer, the op holds
            // this Context (and so the ring), and nothing releases them before `deliver`.
            if unsafe { stager.push_request(id, &op.request()) }.is_err() {
                // Unreachable after the is_full check; undo everything all the same.
                let held = engine.inflight.lock().remove(id);
                op.unclaim();
                drop(held);
                return Err(ring_full());
            }
            accepted += 1;
        }
        drop(stager);
        drop(state);
        values::int(accepted)
    })
}

unsafe extern "C" fn ctx_flush(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        let batch = {
            let mut state = engine.lock_gil_held();
            // With nothing staged there is nothing to hand over and, as caio, nothing is
            // drained, unless the kernel holds completions that overflowed the CQ: no
            // later event would bring those.
            if !engine.sqpoll && state.ring.pending() == 0 && !state.ring.cq_overflow() {
                return values::int(0);
            }
            state.ring.submit().map_err(os_error)?;
            if engine.parked.load(Ordering::SeqCst) > 0 {
                // A parked thread reaps; taking completions here could starve it.
                return values::int(0);
            }
            engine.collect(&mut state, usize::MAX, true)
        };
        values::int(deliver_all(batch) as i64)
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
        let mut waited = false;
        if min > 0 {
            if drain.timeout == 0 {
                without_gil(|| engine.lock().ring.get_events()).map_err(os_error)?;
            } else {
                engine.wait(min as usize, drain.timeout())?;
                waited = true;
            }
        }
        let batch = {
            let mut state = engine.lock_gil_held();
            let reap = waited || engine.parked.load(Ordering::SeqCst) == 0;
            engine.collect(&mut state, max as usize, reap)
        };
        values::int(deliver_all(batch) as i64)
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
            // SAFETY: live argument; its type is always set.
            let ty = repr_of(unsafe { (*obj).ob_type }.cast());
            return Err(Error::Type(format!(
                "argument 1 must be caio.linux_uring.Operation, not {ty}"
            )));
        }
        // SAFETY: type-checked above.
        let op = unsafe { OpRef::new(obj) };
        // Only an op in flight on this ring is targeted; anything else gets an id no
        // request has, so the kernel answers ENOENT and no other request is touched.
        let target = if op.phase() == Phase::InFlight && op.context() == slf {
            RequestId(op.request_id())
        } else {
            RequestId::NONE
        };
        // A cancel must not fail because the ring is busy: a `Cancel` makes room for it or
        // (SQPOLL) needs none, and may nap (at most about a second in all, then it defers),
        // so it runs without the GIL and takes the ring only for each attempt. Without
        // SQPOLL the common case (a free slot) is tried first, with the GIL held. The op
        // stays in the registry (and its buffer owned) until its own completion either way.
        // A cancel's own completion is a sentinel: never counted, never a callback.
        let queued = !engine.sqpoll && engine.lock_gil_held().ring.try_cancel(target).is_ok();
        if !queued {
            let done = without_gil(|| Cancel::new(target).run(|c| c.step(&mut engine.lock().ring)));
            if done == Cancelled::Sync {
                // A sync cancel posts no completion; caio's cancel always did, and users
                // wait for the eventfd after cancelling (spec 2.1).
                engine.eventfd.signal();
            }
        }
        values::int(0)
    })
}

unsafe extern "C" fn ctx_poll(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let engine = unsafe { engine(slf)? };
        context::poll(&engine.eventfd)
    })
}

unsafe extern "C" fn ctx_run_inline(slf: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        unsafe { engine(slf)? };
        context::run_inline(arg, is_operation, "caio.linux_uring.Operation")
    })
}

unsafe extern "C" fn get_fileno(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.eventfd.as_raw_fd() as i64))
}

unsafe extern "C" fn get_max_requests(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.max_requests as i64))
}

unsafe extern "C" fn get_sqpoll(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| values::int(unsafe { engine(slf)? }.sqpoll as i64))
}

unsafe extern "C" fn ctx_repr(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let text = match unsafe { engine(slf) } {
            Ok(e) => format!(
                "<caio.linux_uring.Context at {slf:p}: max_requests={}, uring_fd={}, \
                 eventfd={}, sqpoll={}, in_flight={}>",
                e.max_requests,
                e.ring_fd,
                e.eventfd.as_raw_fd(),
                e.sqpoll as u8,
                e.inflight.lock().len(),
            ),
            Err(_) => format!("<caio.linux_uring.Context at {slf:p}: uninitialized>"),
        };
        str_object(&text).map(PyOwned::into_ptr)
    })
}

impl context::Engine for Engine {
    fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }

    fn completion_fd(&self) -> Option<c_int> {
        Some(self.eventfd.as_raw_fd())
    }

    fn visit_in_flight(&self, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
        self.inflight.visit(visit, arg, PyOwned::as_ptr)
    }
}

unsafe extern "C" fn ctx_dealloc(slf: *mut PyObject) {
    // SAFETY: called once when the refcount reaches zero. No op is in flight (each one
    // holds a reference to this Context), so the kernel no longer uses any buffer and the
    // ring can be unmapped and closed. No callback runs from here.
    unsafe { context::dealloc::<Engine>(slf, drop) }
}

/// `None` if io_uring works here, else the reason (the text `ImportError` carries).
pub(crate) fn probe() -> Option<String> {
    let release = kernel_release();
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (5, 6) {
        return Some(format!(
            "linux_uring requires Linux 5.6+ (IORING_OP_READ/WRITE), current kernel is {release}"
        ));
    }
    match Ring::probe() {
        Ok(()) => None,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Some(format!(
            "io_uring_setup failed: syscall not available (ENOSYS). This usually means a \
             seccomp filter is blocking io_uring.\n\
             Fixes:\n\
             - Docker/Podman: run with --security-opt seccomp=unconfined (or a profile that \
             allows io_uring_setup, io_uring_enter, io_uring_register)\n\
             - Kubernetes: set securityContext.seccompProfile.type=Unconfined\n\
             - OrbStack: io_uring is blocked by its default seccomp profile; use a Linux VM\n\
             - or select another backend: CAIO_IMPL=linux or CAIO_IMPL=thread\n\
             Kernel: {release}"
        )),
        Err(e) => Some(format!(
            "io_uring_setup probe failed: {} (kernel {release}; check the sysctl \
             kernel.io_uring_disabled)",
            e.to_string().split(" (os error").next().unwrap_or_default()
        )),
    }
}

/// Whether this process may run a SQPOLL ring.
pub(crate) fn sqpoll_allowed() -> bool {
    Ring::probe_sqpoll()
}

pub(crate) fn kernel_release() -> String {
    // SAFETY: `uname` fills a zeroed struct on our stack.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::from("unknown");
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Creates the two types (once per process) and adds them to `module`.
pub(crate) fn add_types(module: *mut PyObject) -> Result<()> {
    use crate::types::{getset, method, method_kw};
    if OPERATION_TYPE.load(Ordering::Acquire).is_null() {
        let op_type = operation::create_type(
            c"caio.linux_uring.Operation",
            c"A file operation for caio.linux_uring.Context (read, write, fsync, fdsync).",
            Flavor::Uring,
        )?;
        OPERATION_TYPE.store(op_type, Ordering::Release);
    }
    if CONTEXT_TYPE.load(Ordering::Acquire).is_null() {
        let methods = vec![
            method(
                c"submit",
                ctx_submit,
                ffi::METH_VARARGS,
                c"submit(*operations) -> int: stage operations (no syscall); flush() sends them.",
            ),
            method(
                c"flush",
                ctx_flush,
                ffi::METH_NOARGS,
                c"flush() -> int: hand staged operations to the kernel, deliver what completed.",
            ),
            method_kw(
                c"cancel",
                ctx_cancel,
                0,
                c"cancel(operation) -> 0: ask the kernel to cancel an in-flight operation.",
            ),
        ];
        let getsets = vec![
            getset(
                c"fileno",
                get_fileno,
                c"The eventfd signalled on every completion.",
            ),
            getset(
                c"max_requests",
                get_max_requests,
                c"The requested capacity.",
            ),
            getset(
                c"sqpoll",
                get_sqpoll,
                c"1 if SQPOLL was negotiated, else 0.",
            ),
        ];
        let slots = ContextSlots {
            doc: c"Context(max_requests=32, sqpoll=False)\n\nio_uring AIO context.",
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
        let ty = context::create_type::<Engine>(c"caio.linux_uring.Context", slots)?;
        CONTEXT_TYPE.store(ty, Ordering::Release);
    }
    context::add_to_module(
        module,
        &[
            (c"UringOperation", OPERATION_TYPE.load(Ordering::Acquire)),
            (c"UringContext", CONTEXT_TYPE.load(Ordering::Acquire)),
        ],
    )
}
