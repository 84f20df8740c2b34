//! The drainer: one background thread that delivers the completions of Contexts nobody
//! else will pump any more (dropped with work in flight and found by the GC, or retired
//! by a closing asyncio adapter), then lets them go.
//!
//! It sleeps in `poll()` on the Contexts' completion eventfds, and with the GIL calls each
//! one's own `poll()`, `flush()` (linux_uring) and `process_events()`, so callbacks run
//! exactly as they would for the owner, on this thread. A Context is released (usually
//! freed, which closes its kernel objects) once nothing of it is in flight. The thread
//! exits when it has no Context left, and is stopped by an `atexit` hook: it never takes
//! the GIL once the interpreter is finalizing, and whatever it still holds then is leaked
//! (the kernel may still own those buffers).

use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use caio_backends::{io::wait_any_readable, process, EventFd};

use crate::error::{entry, Error};
use crate::ffi::{self, PyObject, PyOwned};
use crate::gil::{without_gil, GilGuard};
use crate::values;

/// Counts the in-flight ops of a Context (GIL held).
pub(crate) type InFlightOf = unsafe fn(*mut PyObject) -> usize;

/// A Context in the drainer's care.
struct Orphan {
    ctx: PyOwned,
    fd: c_int,
    in_flight: InFlightOf,
}

#[derive(Default)]
struct State {
    orphans: Vec<Orphan>,
    /// Wakes the thread when an orphan arrives or it must stop; `Some` while it runs.
    wake: Option<Arc<EventFd>>,
    /// Every drainer thread started (one runs at a time; the others are finished or about
    /// to be), joined by the atexit hook.
    threads: Vec<JoinHandle<()>>,
    /// Set by the atexit hook: nothing is adopted any more.
    stopped: bool,
    atexit_registered: bool,
}

/// The state, created on first use. A child of `fork()` starts over with a fresh one (the
/// parent's may be locked by a thread that does not exist in the child; it is leaked).
static STATE: AtomicPtr<Mutex<State>> = AtomicPtr::new(ptr::null_mut());
/// The fork generation `STATE` belongs to.
static STATE_GENERATION: AtomicU64 = AtomicU64::new(0);

fn state() -> MutexGuard<'static, State> {
    let generation = process::fork_generation();
    let seen = STATE_GENERATION.load(Ordering::SeqCst);
    if seen != generation
        && STATE_GENERATION
            .compare_exchange(seen, generation, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        // Inherited through fork(): leaked, never locked here.
        STATE.store(ptr::null_mut(), Ordering::SeqCst);
    }
    let mut current = STATE.load(Ordering::SeqCst);
    if current.is_null() {
        let fresh = Box::into_raw(Box::default());
        current = match STATE.compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                winner
            }
        };
    }
    // SAFETY: a published state is never freed (only leaked after fork).
    let mutex: &'static Mutex<State> = unsafe { &*current };
    // Nothing panics half-way through an update, so a poisoned lock is still sound.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a reference to `ctx` and delivers its completions until nothing is in flight.
/// GIL held. If the drainer cannot run (interpreter exiting, thread refused), the Context
/// is leaked: never freed, so nothing the kernel may write is released.
///
/// # Safety
/// `ctx` is a live Context; `fd` is its completion eventfd and `in_flight` counts its ops.
pub(crate) unsafe fn adopt(ctx: *mut PyObject, fd: c_int, in_flight: InFlightOf) {
    // SAFETY: live object, GIL held (caller's contract).
    let held = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(ctx)) };
    if ffi::is_finalizing() {
        std::mem::forget(held);
        return;
    }
    // Registered before taking the lock: a Python call may run a GC that adopts too.
    let register = !state().atexit_registered;
    if register && register_atexit() {
        state().atexit_registered = true;
    }
    let mut state = state();
    if state.stopped {
        std::mem::forget(held);
        return;
    }
    state.orphans.push(Orphan {
        ctx: held,
        fd,
        in_flight,
    });
    if let Some(wake) = &state.wake {
        wake.signal();
        return;
    }
    let wake = match EventFd::new() {
        Ok(wake) => Arc::new(wake),
        Err(_) => return leak_orphans(&mut state),
    };
    let for_thread = wake.clone();
    let builder = std::thread::Builder::new().name("caio-drainer".into());
    let spawned = caio_backends::spawn_without_signals(builder, move || run(for_thread));
    match spawned {
        Ok(handle) => {
            state.wake = Some(wake);
            // Threads that ran out of work are gone (or only returning): forget them.
            state.threads.retain(|t| !t.is_finished());
            state.threads.push(handle);
        }
        Err(_) => leak_orphans(&mut state),
    }
}

fn leak_orphans(state: &mut State) {
    for orphan in state.orphans.drain(..) {
        std::mem::forget(orphan.ctx);
    }
}

/// The thread's body: wait for completions, deliver them, release drained Contexts.
fn run(wake: Arc<EventFd>) {
    loop {
        let fds: Vec<c_int> = {
            let state = state();
            if state.stopped {
                return;
            }
            state.orphans.iter().map(|o| o.fd).collect()
        };
        wait_any(&fds, wake.as_raw_fd());
        let _ = wake.read();
        if ffi::is_finalizing() {
            return;
        }
        // The atexit hook stops us before the interpreter starts finalizing.
        let Some(_gil) = GilGuard::acquire() else {
            return;
        };
        if pump_all() {
            return;
        }
    }
}

/// Delivers what every orphan has ready and drops the drained ones. GIL held. True when
/// the thread may exit (no orphan left, or stopped).
fn pump_all() -> bool {
    let orphans = std::mem::take(&mut state().orphans);
    let mut kept = Vec::with_capacity(orphans.len());
    let mut drained_orphans = Vec::new();
    for orphan in orphans {
        let ctx = orphan.ctx.as_ptr();
        pump(ctx);
        // SAFETY: `ctx` is live (we hold it), GIL held. A Context a callback kept: the GC
        // finalizes an object only once, so it could never hand this one to us again;
        // untracked, a later drop with work in flight leaks it (safely) instead of letting
        // the GC clear its ops' callbacks. Untracking is idempotent (dealloc does it too).
        let drained = unsafe {
            let drained = (orphan.in_flight)(ctx) == 0;
            if drained && ffi::Py_REFCNT(ctx) > 1 {
                ffi::PyObject_GC_UnTrack(ctx.cast());
            }
            drained
        };
        if drained {
            drained_orphans.push(orphan);
        } else {
            kept.push(orphan);
        }
    }
    // Freed before deciding whether to exit, and outside the lock: a Context's teardown may
    // release the GIL (joining threads, io_destroy) and run arbitrary code (adopting
    // another Context takes the lock). Once the thread has said it exits, it never
    // releases the GIL again before it is gone, so the atexit hook cannot miss it.
    drop(drained_orphans);
    let mut state = state();
    // Orphans adopted meanwhile (callbacks may drop Contexts too) stay queued.
    kept.append(&mut state.orphans);
    state.orphans = kept;
    let exit = state.stopped || state.orphans.is_empty();
    if exit && !state.stopped {
        // Adopters from now on start a new thread.
        state.wake = None;
    }
    exit
}

/// One round of deliveries for `ctx`, as its owner would do them. GIL held; errors (there
/// is nobody to raise them to) are reported as unraisable.
fn pump(ctx: *mut PyObject) {
    // Reset the wake-up first: a completion landing after the drain below signals again.
    if call_method(ctx, c"poll", &[]).is_err() {
        // The error just raised: BlockingIOError when there was nothing.
        clear_error();
    }
    if has_method(ctx, c"flush") {
        report(call_method(ctx, c"flush", &[]));
    }
    loop {
        match call_method(ctx, c"process_events", &[512, 0, 0]) {
            Ok(n) if n >= 512 => continue,
            other => {
                report(other);
                return;
            }
        }
    }
}

fn has_method(obj: *mut PyObject, name: &std::ffi::CStr) -> bool {
    // SAFETY: live object, GIL held; HasAttrString never raises.
    unsafe { ffi::PyObject_HasAttrString(obj, name.as_ptr()) != 0 }
}

/// Calls `obj.name(*args)` and returns its integer result (0 for a non-integer).
fn call_method(obj: *mut PyObject, name: &std::ffi::CStr, args: &[i64]) -> Result<i64, ()> {
    // SAFETY: live object, GIL held; every new reference is owned by a PyOwned.
    unsafe {
        let method = PyOwned::from_new(ffi::PyObject_GetAttrString(obj, name.as_ptr())).ok_or(())?;
        let tuple = PyOwned::from_new(ffi::PyTuple_New(args.len() as ffi::Py_ssize_t)).ok_or(())?;
        for (i, &a) in args.iter().enumerate() {
            let item = ffi::PyLong_FromLongLong(a);
            if item.is_null() {
                return Err(());
            }
            // SetItem steals `item`.
            ffi::PyTuple_SetItem(tuple.as_ptr(), i as ffi::Py_ssize_t, item);
        }
        let result = PyOwned::from_new(ffi::PyObject_CallObject(method.as_ptr(), tuple.as_ptr()))
            .ok_or(())?;
        let n = ffi::PyLong_AsLongLong(result.as_ptr());
        if n == -1 && !ffi::PyErr_Occurred().is_null() {
            clear_error();
            return Ok(0);
        }
        Ok(n)
    }
}

fn report(result: Result<i64, ()>) {
    if result.is_err() {
        // SAFETY: GIL held; an exception is set (the call failed).
        unsafe { ffi::PyErr_WriteUnraisable(ptr::null_mut()) };
    }
}

/// Drops the pending exception. GIL held (as everywhere in this module with Python work).
fn clear_error() {
    let (mut t, mut v, mut tb) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
    // SAFETY: GIL held; the fetched references are released right away.
    unsafe {
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        for obj in [t, v, tb] {
            drop(PyOwned::from_new(obj));
        }
    }
}

/// Sleeps until one of `fds` or `wake` is readable, or a safety-net timeout (a missed
/// wake-up then costs at most that long, never a spin).
fn wait_any(fds: &[c_int], wake: c_int) {
    const SAFETY_NET: Duration = Duration::from_millis(500);
    let all: Vec<c_int> = fds.iter().copied().chain(std::iter::once(wake)).collect();
    wait_any_readable(&all, SAFETY_NET);
}

/// Registers [`stop`] with `atexit`, so that the thread is gone before the interpreter
/// starts finalizing. GIL held.
fn register_atexit() -> bool {
    // Called once per process: the function object points into this definition forever.
    let def = Box::leak(Box::new(crate::types::method(
        c"_stop_drainer",
        stop,
        ffi::METH_NOARGS,
        c"Stops caio's drainer thread (registered with atexit).",
    )));
    // SAFETY: GIL held; every new reference is owned by a PyOwned.
    unsafe {
        let registered = (|| {
            let func = PyOwned::from_new(ffi::PyCFunction_New(def, ptr::null_mut()))?;
            let atexit = PyOwned::from_new(ffi::PyImport_ImportModule(c"atexit".as_ptr()))?;
            let register = PyOwned::from_new(ffi::PyObject_GetAttrString(
                atexit.as_ptr(),
                c"register".as_ptr(),
            ))?;
            PyOwned::from_new(ffi::PyObject_CallOneArg(register.as_ptr(), func.as_ptr()))
        })();
        if registered.is_none() {
            ffi::PyErr_WriteUnraisable(ptr::null_mut());
        }
        registered.is_some()
    }
}

/// The atexit hook: stops the thread and waits for it (GIL released), leaking whatever it
/// still holds.
unsafe extern "C" fn stop(_module: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        let threads = {
            let mut state = state();
            state.stopped = true;
            if let Some(wake) = state.wake.take() {
                wake.signal();
            }
            std::mem::take(&mut state.threads)
        };
        let joined = without_gil(move || threads.into_iter().all(|t| t.join().is_ok()));
        // In flight at exit: the kernel may still own their buffers.
        leak_orphans(&mut state());
        if !joined {
            return Err(Error::Runtime("caio drainer thread panicked".into()));
        }
        Ok(values::none())
    })
}
