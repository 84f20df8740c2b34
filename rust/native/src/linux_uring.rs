//! `caio.linux_uring`: the Context over an io_uring instance ([`UringDriver`]).
//!
//! `submit` only stages entries; `flush` hands them to the kernel and delivers what already
//! completed (page-cache reads often finish inside that syscall); `process_events` delivers
//! the rest. Callbacks always run on the thread that calls `flush`/`process_events`.

use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;

use caio_backends::driver::uring::{UringDriver, UringSetupError};
use caio_backends::{process, DispatchError, Driver, IoRequest, Ring};
use caio_core::RequestId;

use crate::args::parse_args;
use crate::context::{
    self, deliver_all, in_flight_here, operation_arg, os_error, Backend, Call, Engine,
    OperationSpec, Property, TypeSlots,
};
use crate::entry::OpEntry;
use crate::error::{entry, repr_of, Error, Result};
use crate::ffi::{self, PyObject};
use crate::gil::without_gil;
use crate::limits::{setup_error, Resource};
use crate::operation::Flavor;
use crate::types::method;
use crate::values;

const DEFAULT_MAX_REQUESTS: u32 = 32;

static OPERATION: OperationSpec = OperationSpec::new(Flavor::Uring);

static TYPES: TypeSlots = TypeSlots::new(&OPERATION);

pub(crate) struct Uring {
    max_requests: u32,
}

impl Backend for Uring {
    type Driver = UringDriver<OpEntry>;
    const NAME: &'static CStr = c"caio.linux_uring.Context";
    const ATTR: &'static CStr = c"UringContext";
    const DOC: &'static CStr = c"Context(max_requests=32, sqpoll=False)\n\nio_uring AIO context.";
    const SUBMIT_DOC: &'static CStr =
        c"submit(*operations) -> int: stage operations (no syscall); flush() sends them.";
    const TYPES: &'static TypeSlots = &TYPES;

    fn new(args: *mut PyObject, kwargs: *mut PyObject) -> Result<(Self, Self::Driver)> {
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
        let driver = UringDriver::new(max_requests, sqpoll != 0).map_err(|e| match e {
            UringSetupError::EventFd(e) => setup_error(Resource::EventFd, e),
            UringSetupError::Ring(e) => setup_error(Resource::Ring, e),
        })?;
        Ok((Self { max_requests }, driver))
    }

    fn not_an_operation(index: usize, _: *mut PyObject) -> Error {
        Error::Type(format!("argument {} is not an Operation", index + 1))
    }

    fn dispatch_error(error: DispatchError) -> Error {
        match error {
            DispatchError::Os(e) | DispatchError::NoThreads(e) => os_error(e),
            DispatchError::Full | DispatchError::Closed => {
                Error::Overflow("io_uring SQ ring full".into())
            }
        }
    }

    fn describe(engine: &Engine<Self>) -> String {
        let (max, d) = (engine.backend.max_requests, &engine.driver);
        let eventfd = d.eventfd().map_or(-1, |fd| fd.as_raw_fd());
        let (ring, sqpoll) = (d.ring_fd(), d.sqpoll() as u8);
        format!("max_requests={max}, uring_fd={ring}, eventfd={eventfd}, sqpoll={sqpoll}")
    }

    const CANCEL_DOC: &'static CStr =
        c"cancel(operation) -> 0: ask the kernel to cancel an in-flight operation.";

    /// Only an op in flight on this ring is targeted; anything else gets an id no request
    /// has, so the kernel answers ENOENT and no other request is touched. The op stays in
    /// flight (its buffer owned) until its own completion. A cancel may nap while the SQ
    /// is full, so it runs without the GIL.
    fn cancel(call: Call<'_, Self>) -> Result<*mut PyObject> {
        let obj = operation_arg::<Self>(call.args, call.kwargs, |obj| {
            // SAFETY: a live argument; its type is always set.
            let ty = repr_of(unsafe { (*obj).ob_type }.cast());
            Error::Type(format!(
                "argument 1 must be caio.linux_uring.Operation, not {ty}"
            ))
        })?;
        let target = in_flight_here::<Self>(call.slf, obj).unwrap_or(RequestId::NONE);
        without_gil(|| call.engine.driver.cancel(target)).map_err(os_error)?;
        values::int(0)
    }

    fn methods() -> Vec<ffi::PyMethodDef> {
        vec![method(
            c"flush",
            flush,
            ffi::METH_NOARGS,
            c"flush() -> int: hand staged operations to the kernel, deliver what completed.",
        )]
    }

    fn max_requests(&self) -> u32 {
        self.max_requests
    }

    const MAX_REQUESTS_DOC: &'static CStr = c"The requested capacity.";

    /// Small buffered file writes complete on the caller's thread (see
    /// [`UringDriver::inline_write`]).
    unsafe fn inline_write(engine: &Engine<Self>, request: &IoRequest) -> Option<i64> {
        // SAFETY: the caller's promise.
        unsafe { engine.driver.inline_write(request) }
    }

    fn properties() -> Vec<Property<Self>> {
        let sqpoll = |e: &Engine<Self>| e.driver.sqpoll().into();
        let doc = c"1 if SQPOLL was negotiated, else 0.";
        vec![Property {
            name: c"sqpoll",
            doc,
            get: sqpoll,
        }]
    }
}

unsafe extern "C" fn flush(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance (a method of the type).
        let driver = &unsafe { context::engine::<Uring>(slf)? }.driver;
        let mut batch = Vec::new();
        driver.flush(&mut batch).map_err(os_error)?;
        values::int(deliver_all(batch) as i64)
    })
}

/// `None` if io_uring works here, else the reason (the text `ImportError` carries).
pub(crate) fn probe() -> Option<String> {
    let release = process::kernel_release();
    if process::kernel_version() < (5, 6) {
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
