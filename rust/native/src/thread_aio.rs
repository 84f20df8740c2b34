//! `caio.thread_aio`: the Context types over the worker-thread backend ([`ThreadDriver`]).
//!
//! Two types, one per way of delivering completions:
//! - `Context` (caio's type, with exactly its surface): a worker takes the GIL and runs the
//!   op's callback itself;
//! - `EventfdContext`: workers only queue completions and signal an eventfd (`fileno`); the
//!   thread that calls `process_events()` (an event loop) runs the callbacks, many per
//!   wake-up. Its own type, so that code duck-typing caio's API (`hasattr(ctx,
//!   "process_events")`) never takes the default Context for one it must pump.

use std::ffi::CStr;

use caio_backends::driver::thread::{ThreadDriver, ThreadSetupError};
use caio_backends::{CancelOutcome, Delivery, DispatchError, Driver};

use crate::args::parse_args;
use crate::context::{
    self, arguments, deliver_all, in_flight_here, Backend, Call, Engine, OperationSpec, Property,
    TypeSlots,
};
use crate::entry::OpEntry;
use crate::error::{entry, Error, Result};
use crate::ffi::{self, PyObject};
use crate::gil::{without_gil, GilGuard};
use crate::operation::Flavor;
use crate::types::method;
use crate::values;

const DEFAULT_MAX_REQUESTS: u16 = 512;
const DEFAULT_POOL_SIZE: u16 = 8;
const MAX_POOL_SIZE: u16 = 128;

static OPERATION: OperationSpec = OperationSpec::new(Flavor::Thread);

static CALLBACK_TYPES: TypeSlots = TypeSlots::new(&OPERATION);
static EVENTFD_TYPES: TypeSlots = TypeSlots::new(&OPERATION);

/// The engine of both types; `EVENTFD` says which delivery.
pub(crate) struct Threads<const EVENTFD: bool> {
    max_requests: u16,
}

/// Delivers on the worker thread, with the GIL (caio's C behaviour). Once the interpreter
/// is finalizing the GIL cannot be taken: the op leaks instead.
fn deliver_on_worker(entry: OpEntry, res: i64) {
    match GilGuard::acquire() {
        Some(_gil) => entry.complete(res),
        None => std::mem::forget(entry),
    }
}

/// Why the workers could not start, and which limit to raise.
fn setup_error(e: ThreadSetupError, pool_size: u16) -> Error {
    match e {
        ThreadSetupError::Threads(e) => Error::Os(
            e.raw_os_error().unwrap_or(libc::EAGAIN),
            format!(
                "cannot start {pool_size} worker threads: the number of threads is limited \
                 by RLIMIT_NPROC (ulimit -u), kernel.threads-max and memory (each thread \
                 needs a stack: RLIMIT_AS, ulimit -v); raise the limit or use a smaller \
                 pool_size"
            ),
        ),
        ThreadSetupError::EventFd(e) => {
            crate::limits::setup_error(crate::limits::Resource::EventFd, e)
        }
    }
}

impl<const EVENTFD: bool> Backend for Threads<EVENTFD> {
    type Driver = ThreadDriver<OpEntry>;
    const NAME: &'static CStr = if EVENTFD {
        c"caio.thread_aio.EventfdContext"
    } else {
        c"caio.thread_aio.Context"
    };
    const ATTR: &'static CStr = if EVENTFD {
        c"ThreadEventfdContext"
    } else {
        c"ThreadContext"
    };
    const DOC: &'static CStr = if EVENTFD {
        c"EventfdContext(max_requests=512, pool_size=8)\n\nthread aio context delivering on the caller's thread: workers queue completions without taking the GIL and signal the eventfd fileno; process_events() runs the callbacks."
    } else {
        c"Context(max_requests=512, pool_size=8)\n\nthread aio context: file I/O on a pool of native worker threads; each callback runs on the worker that did the I/O, holding the GIL."
    };
    const SUBMIT_DOC: &'static CStr = c"submit(*operations) -> int: number of operations accepted.";
    const PUMPED: bool = EVENTFD;
    const TYPES: &'static TypeSlots = if EVENTFD {
        &EVENTFD_TYPES
    } else {
        &CALLBACK_TYPES
    };

    /// `(max_requests=512, pool_size=8)` parsed as caio did (masked 16-bit, 0 = the default).
    fn new(args: *mut PyObject, kwargs: *mut PyObject) -> Result<(Self, Self::Driver)> {
        let format = if EVENTFD {
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
        let or_default = |v: u16, default: u16| if v == 0 { default } else { v };
        let max_requests = or_default(max_requests, DEFAULT_MAX_REQUESTS);
        let pool_size = or_default(pool_size, DEFAULT_POOL_SIZE);
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
        let delivery = if EVENTFD {
            Delivery::Queue
        } else {
            Delivery::Call(Box::new(deliver_on_worker))
        };
        let driver = ThreadDriver::new(pool_size.into(), max_requests.into(), delivery)
            .map_err(|e| setup_error(e, pool_size))?;
        Ok((Self { max_requests }, driver))
    }

    fn not_an_operation(index: usize, _: *mut PyObject) -> Error {
        Error::Type(format!("Wrong type for argument {index}"))
    }

    fn dispatch_error(error: DispatchError) -> Error {
        Error::Runtime(
            match error {
                DispatchError::Full => "Thread pool queue full",
                _ => "Context is closed",
            }
            .into(),
        )
    }

    fn describe(engine: &Engine<Self>) -> String {
        let driver = &engine.driver;
        format!(
            "max_requests={}, pool_size={}, {}",
            engine.backend.max_requests,
            driver.pool_size(),
            if driver.is_open() { "open" } else { "closed" },
        )
    }

    const CANCEL_DOC: &'static CStr = c"cancel(*operations) -> int: how many queued operations were taken out before a worker started them (they complete with ECANCELED); a running syscall cannot be interrupted and completes normally.";

    /// Accepts anything, as caio did; only ops in flight on this Context are looked at.
    /// Taking a queued request out never blocks; in caio's mode its callback runs right
    /// here, on this thread, which holds the GIL already.
    fn cancel(call: Call<'_, Self>) -> Result<*mut PyObject> {
        let cancelled = arguments(call.args)
            .into_iter()
            .filter_map(|obj| in_flight_here::<Self>(call.slf, obj))
            .filter(|&id| matches!(call.engine.driver.cancel(id), Ok(CancelOutcome::Requested)))
            .count();
        values::int(cancelled as i64)
    }

    fn methods() -> Vec<ffi::PyMethodDef> {
        vec![method(
            c"close",
            close::<EVENTFD>,
            ffi::METH_NOARGS,
            c"close(): stop accepting work; queued work still runs, workers are joined.",
        )]
    }

    fn max_requests(&self) -> u32 {
        self.max_requests.into()
    }

    const MAX_REQUESTS_DOC: &'static CStr = c"How many requests may wait for a worker.";

    fn properties() -> Vec<Property<Self>> {
        vec![Property {
            name: c"pool_size",
            doc: c"Number of worker threads.",
            get: |e| e.driver.pool_size() as i64,
        }]
    }
}

/// Stops the pool (queued work still runs) with the GIL released, then, in eventfd mode,
/// delivers what the workers left queued on this thread.
unsafe extern "C" fn close<const EVENTFD: bool>(
    slf: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let driver = &unsafe { context::engine::<Threads<EVENTFD>>(slf)? }.driver;
        without_gil(|| driver.shutdown());
        let mut batch = Vec::new();
        driver
            .take(usize::MAX, &mut batch)
            .map_err(context::os_error)?;
        deliver_all(batch);
        Ok(values::none())
    })
}
