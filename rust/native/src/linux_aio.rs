//! `caio.linux_aio`: the Context over a Linux kernel AIO context ([`AioDriver`]).
//!
//! `submit` calls `io_submit`, which for buffered files does the whole transfer right there;
//! the driver sends what would hold the caller up (large buffered requests, requests on
//! pipes and other streams) to threads instead, announced on the same eventfd.

use std::ffi::CStr;
use std::os::fd::AsRawFd;

use caio_backends::driver::aio::{AioDriver, AioSetupError};
use caio_backends::{process, CancelOutcome, DispatchError, Driver, IoRequest};

use crate::args::parse_args;
use crate::context::{
    in_flight_here, operation_arg, Backend, Call, DrainArgs, Engine, OperationSpec, TypeSlots,
};
use crate::entry::OpEntry;
use crate::error::{repr_of, Error, Result};
use crate::ffi::{self, PyObject};
use crate::limits::{explain, setup_error, Resource};
use crate::operation::Flavor;
use crate::values;

const DEFAULT_MAX_REQUESTS: u32 = 32;
const MAX_DRAIN: u32 = 1 << 20;

static OPERATION: OperationSpec = OperationSpec::new(Flavor::Aio);

static TYPES: TypeSlots = TypeSlots::new(&OPERATION);

pub(crate) struct Aio {
    max_requests: u32,
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

impl Backend for Aio {
    type Driver = AioDriver<OpEntry>;
    const NAME: &'static CStr = c"caio.linux_aio.Context";
    const ATTR: &'static CStr = c"AioContext";
    const DOC: &'static CStr = c"Context(max_requests=32)\n\nlinux aio context representation.";
    const SUBMIT_DOC: &'static CStr = c"submit(*operations) -> int: io_submit them (buffered files: the transfer happens here, except large requests, which go to helper threads; requests on pipes, sockets and other streams each run on a thread of their own).";
    const TYPES: &'static TypeSlots = &TYPES;

    fn new(args: *mut PyObject, kwargs: *mut PyObject) -> Result<(Self, Self::Driver)> {
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
        let driver = AioDriver::new(max_requests).map_err(|e| match e {
            AioSetupError::EventFd(e) => setup_error(Resource::EventFd, e),
            AioSetupError::Context(e) => setup_error(
                Resource::AioContext {
                    events: max_requests,
                },
                e,
            ),
        })?;
        Ok((Self { max_requests }, driver))
    }

    fn not_an_operation(index: usize, obj: *mut PyObject) -> Error {
        Error::Type(format!(
            "Wrong type for argument {index} -> {}",
            repr_of(obj)
        ))
    }

    fn dispatch_error(error: DispatchError) -> Error {
        match error {
            DispatchError::NoThreads(e) => {
                Error::Runtime(format!("cannot start helper threads: {e}"))
            }
            DispatchError::Os(e) => submit_error(e.raw_os_error().unwrap_or(libc::EIO)),
            DispatchError::Full | DispatchError::Closed => submit_error(libc::EAGAIN),
        }
    }

    fn check_drain(drain: &DrainArgs) -> Result<()> {
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
        Ok(())
    }

    fn describe(engine: &Engine<Self>) -> String {
        format!(
            "max_requests={}, eventfd={}",
            engine.backend.max_requests,
            engine.driver.eventfd().map_or(-1, |fd| fd.as_raw_fd()),
        )
    }

    const CANCEL_DOC: &'static CStr = c"cancel(operation) -> int: io_cancel (regular files: always ValueError on current kernels).";

    /// Only a kernel request of this Context can be cancelled; for anything else the
    /// kernel would answer EINVAL, and so do we (without asking it). A cancelled request's
    /// completion comes back from `io_cancel` and is delivered here.
    fn cancel(call: Call<'_, Self>) -> Result<*mut PyObject> {
        let obj = operation_arg::<Self>(call.args, call.kwargs, |obj| {
            Error::Type(format!("Operation required not {}", repr_of(obj)))
        })?;
        let Some(id) = in_flight_here::<Self>(call.slf, obj) else {
            return Err(cancel_error(libc::EINVAL));
        };
        match call.engine.driver.cancel(id) {
            Ok(CancelOutcome::Completed(entry, res)) => {
                entry.complete(res);
                values::int(res)
            }
            Ok(_) => Err(cancel_error(libc::EINVAL)),
            Err(e) => Err(cancel_error(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn methods() -> Vec<ffi::PyMethodDef> {
        Vec::new()
    }

    fn max_requests(&self) -> u32 {
        self.max_requests
    }

    const MAX_REQUESTS_DOC: &'static CStr = c"The io_setup capacity.";

    /// Small buffered file writes complete on the caller's thread (see
    /// [`AioDriver::inline_write`]).
    unsafe fn inline_write(engine: &Engine<Self>, request: &IoRequest) -> Option<i64> {
        // SAFETY: the caller's promise.
        unsafe { engine.driver.inline_write(request) }
    }
}

/// `None` if kernel AIO works here, else the reason (the text `ImportError` carries).
pub(crate) fn probe() -> Option<String> {
    let release = process::kernel_release();
    if process::kernel_version() < (4, 18) {
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
