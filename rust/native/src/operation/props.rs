//! What Python sees of an op: `get_value()`, `set_callback()`, the properties, `repr`.

use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use caio_backends::IoKind;
use caio_core::Phase;

use super::flavor::ReadPayload;
use super::{type_name, OpRef};
use crate::args::parse_args;
use crate::error::{entry, repr_of, str_object, Error, Result};
use crate::ffi::{self, PyObject, PyOwned};
use crate::values::{self, int, none, uint};

/// The read-only properties, one getter for all (`get_property::<{ Property::X as u8 }>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Property {
    Fileno = 0,
    Offset = 1,
    Nbytes = 2,
    Result = 3,
    Error = 4,
    Priority = 5,
    Context = 6,
    Payload = 7,
}

impl Property {
    fn from_u8(p: u8) -> Self {
        match p {
            0 => Self::Fileno,
            1 => Self::Offset,
            2 => Self::Nbytes,
            3 => Self::Result,
            4 => Self::Error,
            5 => Self::Priority,
            6 => Self::Context,
            7 => Self::Payload,
            _ => unreachable!("no Operation property {p}"),
        }
    }
}

/// The getter of property `P` (a [`Property`]).
pub(super) unsafe extern "C" fn get_property<const P: u8>(
    slf: *mut PyObject,
    _: *mut c_void,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: the interpreter calls a getter of our type with an instance of it, alive
        // for the call; GIL held.
        let op = unsafe { OpRef::new(slf) };
        let fields = op.fields();
        match Property::from_u8(P) {
            Property::Fileno => uint(fields.fd as u64),
            Property::Offset => uint(fields.offset as u64),
            Property::Nbytes => uint(fields.nbytes.get() as u64),
            Property::Result => int(fields.result.get()),
            Property::Error => int(fields.error.get() as i64),
            Property::Priority => int(fields.priority as i64),
            Property::Context => Ok(object_or_none(fields.context.cloned())),
            Property::Payload => payload(op),
        }
    })
}

fn object_or_none(obj: Option<PyOwned>) -> *mut PyObject {
    obj.map_or_else(none, PyOwned::into_ptr)
}

fn ensure_not_in_flight(op: OpRef<'_>, what: &str) -> Result<()> {
    if op.phase() == Phase::InFlight {
        Err(Error::Runtime(format!(
            "{what} is not available while the operation is in flight"
        )))
    } else {
        Ok(())
    }
}

/// `len` zero bytes from `bytes(len)`, which allocates with calloc: a large buffer is
/// fresh zero pages from the OS, so nothing proportional to `len` runs or stays committed
/// until someone writes (or reads) those pages.
fn zeroed_bytes(len: usize) -> Result<PyOwned> {
    let size = uint(len as u64)?;
    // SAFETY: `size` is a new int reference, which `PyOwned` takes over; calling the bytes
    // type with an int is `bytes(n)`; GIL held.
    unsafe {
        let size = PyOwned::from_new(size).ok_or(Error::AlreadySet)?;
        PyOwned::from_new(ffi::PyObject_CallOneArg(
            ptr::addr_of_mut!(ffi::PyBytes_Type).cast(),
            size.as_ptr(),
        ))
    }
    .ok_or(Error::AlreadySet)
}

pub(super) unsafe extern "C" fn op_get_value(
    slf: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        // SAFETY: the interpreter calls a method of our type with an instance of it, alive
        // for the call; GIL held.
        let op = unsafe { OpRef::new(slf) };
        ensure_not_in_flight(op, "get_value()")?;
        let fields = op.fields();
        let done = op.phase() == Phase::Done;
        if done && fields.error.get() != 0 {
            return Err(Error::Errno(fields.error.get()));
        }
        match fields.kind {
            // A read into the caller's buffer: how many bytes landed there.
            IoKind::Read if fields.reads_into => int(fields.result.get()),
            IoKind::Read if !done => zeroed_bytes(fields.nbytes.get()).map(PyOwned::into_ptr),
            IoKind::Read => {
                let (data, kept) = fields.buffer_data();
                let got = (fields.result.get() as usize).min(kept);
                if got == kept {
                    fields.buffer.cloned().ok_or(Error::AlreadySet)
                } else {
                    // SAFETY: `got` of the `kept` bytes of a done op's buffer, which nobody
                    // writes any more; GIL held.
                    unsafe {
                        PyOwned::from_new(ffi::PyBytes_FromStringAndSize(data.cast(), got as _))
                    }
                    .ok_or(Error::AlreadySet)
                }
                .map(PyOwned::into_ptr)
            }
            IoKind::Write | IoKind::ReadV | IoKind::WriteV => int(fields.result.get()),
            IoKind::Fsync | IoKind::Fdsync => Ok(none()),
        }
    })
}

/// `payload`: a read's whole buffer (as the backend shows it), a write's payload, or None.
fn payload(op: OpRef<'_>) -> Result<*mut PyObject> {
    ensure_not_in_flight(op, "payload")?;
    let fields = op.fields();
    match fields.kind {
        // A read into the caller's buffer: that buffer.
        IoKind::Read if fields.reads_into => Ok(object_or_none(fields.buffer.cloned())),
        IoKind::Read => {
            let (data, kept) = fields.buffer_data();
            let done = op.phase() == Phase::Done;
            let whole = if done && kept == fields.requested {
                fields.buffer.cloned().ok_or(Error::AlreadySet)?
            } else if let (true, Some(whole)) = (done, fields.whole_payload.cloned()) {
                whole
            } else {
                // caio's payload is the whole requested buffer: the data read (none if
                // never run: the buffer is uninitialised) and a zero tail, built only
                // for a caller who asks for it, from calloc'd pages, so the unused part
                // of the bound costs neither time nor memory.
                let whole = zeroed_bytes(fields.requested)?;
                if done {
                    let (dst, _) = super::bytes_data(whole.as_ptr());
                    // SAFETY: `kept <= requested` bytes from a done op's buffer, which
                    // nobody writes, into a fresh bytes object nobody else has seen.
                    unsafe { ptr::copy_nonoverlapping(data, dst, kept) };
                    // Kept: a done op's payload no longer changes, and caio's is one
                    // object (uring) or views of one buffer.
                    drop(fields.whole_payload.replace(Some(whole.clone())));
                }
                whole
            };
            match op.behaviour().read_payload {
                ReadPayload::Bytes => Ok(whole.into_ptr()),
                // The view holds a reference to the bytes: it stays valid after the op is
                // gone (unlike caio's C views).
                ReadPayload::MemoryView => {
                    // SAFETY: `whole` is a live bytes object; GIL held.
                    let view = unsafe { ffi::PyMemoryView_FromObject(whole.as_ptr()) };
                    if view.is_null() {
                        Err(Error::AlreadySet)
                    } else {
                        Ok(view)
                    }
                }
            }
        }
        // A vectored op's: the tuple of its buffers.
        IoKind::Write | IoKind::ReadV | IoKind::WriteV => {
            Ok(object_or_none(fields.buffer.cloned()))
        }
        IoKind::Fsync | IoKind::Fdsync => Ok(none()),
    }
}

pub(super) unsafe extern "C" fn op_set_callback(
    slf: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let mut callback: *mut PyObject = ptr::null_mut();
        parse_args!(
            args,
            kwargs,
            c"O:set_callback",
            [c"callback"],
            &mut callback
        )?;
        // SAFETY: `callback` is a live argument (parsed from the call's own arguments), and
        // `slf` an instance of our type, alive for the call; GIL held.
        let (op, callback) = unsafe {
            if ffi::PyCallable_Check(callback) == 0 {
                return Err(Error::Value(format!(
                    "object {} is not callable",
                    repr_of(callback)
                )));
            }
            let callback = PyOwned::from_borrowed(NonNull::new_unchecked(callback));
            (OpRef::new(slf), callback)
        };
        // The old callback is released after the new one is in place: its finaliser may
        // run arbitrary code.
        drop(op.fields().callback.replace(Some(callback)));
        Ok(values::boolean(true))
    })
}

pub(super) unsafe extern "C" fn op_repr(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: the interpreter calls a slot of our type with an instance of it, alive
        // for the call; GIL held.
        let op = unsafe { OpRef::new(slf) };
        let fields = op.fields();
        let mode = match fields.kind {
            IoKind::Read => "read",
            IoKind::Write => "write",
            IoKind::Fsync => "fsync",
            IoKind::Fdsync => "fdsync",
            IoKind::ReadV => "readv",
            IoKind::WriteV => "writev",
        };
        let state = match op.phase() {
            Phase::New => "new",
            Phase::InFlight => "in flight",
            Phase::Done => "done",
        };
        let text = format!(
            "<{} at {:p}: mode=\"{mode}\", fd={}, offset={}, nbytes={}, result={}, state={state}>",
            type_name(slf)
                .trim_start_matches("<class '")
                .trim_end_matches("'>"),
            slf,
            fields.fd,
            fields.offset,
            fields.nbytes.get(),
            fields.result.get(),
        );
        str_object(&text).map(PyOwned::into_ptr)
    })
}
