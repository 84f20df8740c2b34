//! The classmethods that build an op: `read`, `write`, `read_into`, `readv`, `writev`,
//! `fsync`, `fdsync`.

use std::cell::Cell;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};

use std::ffi::CStr;

use caio_backends::buffer::{direct_buffer, direct_segments, DirectError, DirectMemory};
use caio_backends::io::check_rw_flags;
use caio_backends::IoKind;
use caio_core::{OpState, RequestId};

use super::export::{Export, Vectored};
use super::flavor::{Behaviour, Flavor, NegativeOffset};
use super::{type_name, ObjectField, OperationObject};
use crate::args::parse_args;
use crate::error::{entry, repr_of, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::values::uint;

/// What a new Operation is made of.
struct NewOp {
    flavor: Flavor,
    kind: IoKind,
    reads_into: bool,
    fd: u32,
    offset: i64,
    nbytes: usize,
    /// A read's destination or a write's payload, None for syncs.
    buffer: Option<PyOwned>,
    /// A write's payload that is not `bytes`, a `read_into` target: its memory's export.
    export: Option<Export>,
    /// A vectored op's buffers (then `buffer` is their tuple).
    vectored: Option<Vectored>,
    direct: Option<DirectMemory>,
    priority: i16,
    /// `RWF_*` flags, checked for `kind` (see [`flags_arg`]).
    rw_flags: i32,
}

/// Allocates an instance of `cls` (one of our Operation types) with the given fields.
fn new_op(cls: *mut PyTypeObject, new: NewOp) -> Result<*mut PyObject> {
    // SAFETY: `cls` is our heap type (the classmethods receive it from the interpreter);
    // GIL held. GenericAlloc zero-fills and GC-tracks; the fields are written before
    // anything reads them, the header (set by GenericAlloc) and the weakref list excepted.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(cls, 0);
        if obj.is_null() {
            return Err(Error::AlreadySet);
        }
        let op = obj.cast::<OperationObject>();
        ptr::addr_of_mut!((*op).weakreflist).write(Cell::new(ptr::null_mut()));
        ptr::addr_of_mut!((*op).state).write(OpState::new());
        ptr::addr_of_mut!((*op).flavor).write(new.flavor);
        ptr::addr_of_mut!((*op).kind).write(new.kind);
        ptr::addr_of_mut!((*op).reads_into).write(new.reads_into);
        ptr::addr_of_mut!((*op).fd).write(new.fd);
        ptr::addr_of_mut!((*op).offset).write(new.offset);
        ptr::addr_of_mut!((*op).nbytes).write(Cell::new(new.nbytes));
        ptr::addr_of_mut!((*op).requested).write(new.nbytes);
        ptr::addr_of_mut!((*op).result).write(Cell::new(0));
        ptr::addr_of_mut!((*op).error).write(Cell::new(0));
        ptr::addr_of_mut!((*op).buffer).write(ObjectField::new(new.buffer));
        ptr::addr_of_mut!((*op).whole_payload).write(ObjectField::new(None));
        ptr::addr_of_mut!((*op).callback).write(ObjectField::new(None));
        ptr::addr_of_mut!((*op).context).write(ObjectField::new(None));
        ptr::addr_of_mut!((*op).request_id).write(Cell::new(RequestId::NONE.0));
        ptr::addr_of_mut!((*op).export).write(Cell::new(new.export));
        ptr::addr_of_mut!((*op).vectored).write(Cell::new(new.vectored));
        ptr::addr_of_mut!((*op).direct).write(Cell::new(new.direct));
        ptr::addr_of_mut!((*op).priority).write(new.priority);
        ptr::addr_of_mut!((*op).rw_flags).write(new.rw_flags);
        Ok(obj)
    }
}

/// io_uring's "use the file position" offset: `-1` as an `loff_t`.
const FILE_POSITION: i64 = -1;

/// The `offset` of `read`/`write` (omitted: 0). Every backend takes an `loff_t`,
/// 0 ..= 2**63 - 1; above it `OverflowError`, as caio's range-checked parsing gave (its
/// uring backend masked to 64 bits instead, so `2**64 + 5` wrote at offset 5). Below 0,
/// what the backend's [`NegativeOffset`] says.
fn offset_arg(rules: &Behaviour, obj: *mut PyObject) -> Result<i64> {
    if obj.is_null() {
        return Ok(0);
    }
    let file_position = rules.negative_offset == NegativeOffset::FilePosition;
    let mut overflow: c_int = 0;
    // SAFETY: `obj` is a live argument and `index` a new int reference we own; GIL held.
    // For an int, PyLong_AsLongLongAndOverflow reports overflow in the flag, never raises.
    let (index, value, is_u64_max) = unsafe {
        let index = PyOwned::from_new(ffi::PyNumber_Index(obj)).ok_or(Error::AlreadySet)?;
        let value = ffi::PyLong_AsLongLongAndOverflow(index.as_ptr(), &mut overflow);
        let is_u64_max = if file_position && overflow > 0 {
            let max = PyOwned::from_new(uint(u64::MAX)?).ok_or(Error::AlreadySet)?;
            match ffi::PyObject_RichCompareBool(index.as_ptr(), max.as_ptr(), ffi::Py_EQ) {
                -1 => return Err(Error::AlreadySet),
                r => r == 1,
            }
        } else {
            false
        };
        (index, value, is_u64_max)
    };
    let shown = || repr_of(index.as_ptr());
    match (overflow, rules.negative_offset) {
        (0, _) if value >= 0 => Ok(value),
        (0, NegativeOffset::FilePosition) if value == FILE_POSITION => Ok(FILE_POSITION),
        _ if is_u64_max => Ok(FILE_POSITION),
        (0, NegativeOffset::Refused) => Err(Error::Value(format!(
            "offset must not be negative (got {})",
            shown()
        ))),
        (_, NegativeOffset::FilePosition) => Err(Error::Overflow(format!(
            "offset {} does not fit loff_t (0 to 2**63 - 1); -1 or 2**64 - 1 means the \
             file position",
            shown()
        ))),
        (_, NegativeOffset::Refused) => Err(Error::Overflow(format!(
            "offset {} does not fit loff_t (0 to 2**63 - 1)",
            shown()
        ))),
    }
}

/// The keyword-only `flags` of `read`/`read_into`/`write` (omitted: 0), parsed with `L`
/// (so beyond 64 bits `OverflowError`, as every integer argument), as the kernel takes
/// them for `kind`: any flag we do not pass on is a `ValueError` naming it.
fn flags_arg(kind: IoKind, flags: i64) -> Result<i32> {
    check_rw_flags(kind, flags).map_err(Error::Value)
}

/// The memory an `O_DIRECT` descriptor transfers for this request (None for others): the
/// caller's (`caller`, an exported buffer's memory) in place where it is aligned enough,
/// else a bounce buffer; its refusals raised as caio users see them.
fn direct_memory(
    fd: u32,
    offset: i64,
    len: usize,
    caller: Option<*mut u8>,
) -> Result<Option<DirectMemory>> {
    direct_buffer(fd as i32, offset, len, caller.map(<*mut u8>::cast_const))
        .map_err(|err| direct_error(fd, offset, len, err, None))
}

/// An `O_DIRECT` refusal as caio users see it; `vectored`: the method of a vectored op
/// (each of its buffers used in place, so each checked), else None.
fn direct_error(
    fd: u32,
    offset: i64,
    len: usize,
    err: DirectError,
    vectored: Option<&str>,
) -> Error {
    match (err, vectored) {
        (DirectError::Misaligned { block }, None) => Error::Value(format!(
            "fd {fd} is open with O_DIRECT, which needs offset and size to be multiples of \
             {block} bytes (got offset={offset}, size={len})"
        )),
        (DirectError::Misaligned { block }, Some(_)) => Error::Value(format!(
            "fd {fd} is open with O_DIRECT, which needs the offset and each buffer's size \
             to be multiples of {block} bytes (got offset={offset})"
        )),
        (DirectError::MisalignedMemory { memory }, None) => Error::Value(format!(
            "fd {fd} is open with O_DIRECT, which needs the memory aligned to {memory} bytes"
        )),
        (DirectError::MisalignedMemory { memory }, Some(method)) => Error::Value(format!(
            "fd {fd} is open with O_DIRECT: {method}() uses each buffer in place, so each \
             non-empty one must start at a multiple of {memory} bytes (use \
             caio.aligned_buffer)"
        )),
        (DirectError::NoMemory, _) => {
            Error::Memory(format!("cannot allocate {len} aligned bytes for O_DIRECT"))
        }
    }
}

/// `read`'s arguments, converted.
struct ReadArgs {
    nbytes: u64,
    fd: u32,
    offset: i64,
    priority: i16,
    flags: i64,
}

/// The call every adapter makes, `read(nbytes, fd[, offset[, priority]])` with exact ints
/// in range (sizes and offsets not negative, a priority below 2**15), converted without
/// building an argument tuple: the values are those the format's conversions give for
/// them (`K`, `I` and `H` mask, `h` range-checks, an offset >= 0 is itself). None for any
/// other call, which [`read_args_parsed`] then reports on as before. `args` are live
/// objects (a call's positional arguments); GIL held.
fn read_args_fast(args: &[*mut PyObject]) -> Option<ReadArgs> {
    if !(2..=4).contains(&args.len()) {
        return None;
    }
    let mut values = [0i64; 4];
    for (value, &arg) in values.iter_mut().zip(args) {
        let mut overflow: c_int = 0;
        // SAFETY: a live object (see above); an exact int's conversion cannot raise, it
        // reports overflow in the flag.
        *value = unsafe {
            if ffi::PyLong_CheckExact(arg) == 0 {
                return None;
            }
            ffi::PyLong_AsLongLongAndOverflow(arg, &mut overflow)
        };
        if overflow != 0 || *value < 0 {
            return None;
        }
    }
    let [nbytes, fd, offset, priority] = values;
    Some(ReadArgs {
        nbytes: nbytes as u64,
        fd: u32::try_from(fd).ok()?,
        offset,
        priority: i16::try_from(priority).ok()?,
        flags: 0,
    })
}

/// Any call of `read`, parsed by `PyArg_ParseTupleAndKeywords` from a tuple and a dict
/// built from the vectorcall arguments: `args` (live objects, GIL held) are the
/// positional ones followed by the values of the names in `kwnames` (a tuple of strings,
/// or NULL).
fn read_args_parsed(
    rules: &Behaviour,
    args: &[*mut PyObject],
    nargs: usize,
    kwnames: *mut PyObject,
) -> Result<ReadArgs> {
    let (positional, values) = args.split_at(nargs);
    // SAFETY: live objects and a tuple of names, as above. PyTuple_SetItem steals the
    // reference it is given (a new one, taken just before); PyDict_SetItem takes its own.
    let (tuple, dict) = unsafe {
        let tuple = PyOwned::from_new(ffi::PyTuple_New(nargs as ffi::Py_ssize_t))
            .ok_or(Error::AlreadySet)?;
        for (i, &arg) in positional.iter().enumerate() {
            ffi::Py_IncRef(arg);
            ffi::PyTuple_SetItem(tuple.as_ptr(), i as ffi::Py_ssize_t, arg);
        }
        let dict = if kwnames.is_null() {
            None
        } else {
            let dict = PyOwned::from_new(ffi::PyDict_New()).ok_or(Error::AlreadySet)?;
            for (j, &value) in values.iter().enumerate() {
                let name = ffi::PyTuple_GetItem(kwnames, j as ffi::Py_ssize_t);
                if ffi::PyDict_SetItem(dict.as_ptr(), name, value) != 0 {
                    return Err(Error::AlreadySet);
                }
            }
            Some(dict)
        };
        (tuple, dict)
    };
    let kwargs = dict.as_ref().map_or(ptr::null_mut(), PyOwned::as_ptr);
    let (mut nbytes, mut fd, mut priority): (u64, u32, i16) = (0, 0, 0);
    let mut offset: *mut PyObject = ptr::null_mut();
    let mut flags: i64 = 0;
    parse_args!(
        tuple.as_ptr(),
        kwargs,
        rules.format(IoKind::Read),
        [c"nbytes", c"fd", c"offset", c"priority", c"flags"],
        &mut nbytes,
        &mut fd,
        &mut offset,
        &mut priority,
        &mut flags
    )?;
    // (`offset` is borrowed from `tuple` or `dict`, alive until the end of this function)
    let offset = offset_arg(rules, offset)?;
    Ok(ReadArgs {
        nbytes,
        fd,
        offset,
        priority,
        flags,
    })
}

/// `read(nbytes, fd, offset=0, priority=0, *, flags=0)`, a vectorcall classmethod (the
/// adapters build one per read).
pub(super) unsafe extern "C" fn op_read<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *const *mut PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let flavor = Flavor::from_u8(FLAVOR);
        let rules = flavor.behaviour();
        let nargs = nargs as usize;
        // SAFETY: the interpreter passes `nargs` positional arguments followed by one
        // value per name in `kwnames` (a tuple, or NULL), all alive for the call; GIL held.
        let args = unsafe {
            let nkw = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_Size(kwnames) as usize
            };
            if nargs + nkw == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(args, nargs + nkw)
            }
        };
        let fast = if kwnames.is_null() {
            read_args_fast(args)
        } else {
            None
        };
        let ReadArgs {
            nbytes,
            fd,
            offset,
            priority,
            flags,
        } = match fast {
            Some(parsed) => parsed,
            None => read_args_parsed(rules, args, nargs, kwnames)?,
        };
        let rw_flags = flags_arg(IoKind::Read, flags)?;
        if let Some(limit) = &rules.read_limit {
            if nbytes > limit.max {
                return Err(Error::Overflow(format!(
                    "nbytes exceeds the {} read limit of {} (got {nbytes}; negative sizes wrap)",
                    limit.name, limit.max
                )));
            }
        }
        if nbytes > isize::MAX as u64 {
            return Err(Error::Overflow(format!(
                "nbytes does not fit in Py_ssize_t (got {nbytes}; negative sizes wrap)"
            )));
        }
        // Uninitialised on purpose: the backend fills it and the completion cuts it to
        // what was read; Python never sees it before that. Allocation failure raises
        // MemoryError.
        // SAFETY: NULL data with a checked non-negative size; GIL held.
        let buffer = unsafe {
            PyOwned::from_new(ffi::PyBytes_FromStringAndSize(
                ptr::null(),
                nbytes as ffi::Py_ssize_t,
            ))
        }
        .ok_or(Error::AlreadySet)?;
        // A new bytes object is never aligned for O_DIRECT: bounced.
        let direct = direct_memory(fd, offset, nbytes as usize, None)?;
        let new = NewOp {
            flavor,
            kind: IoKind::Read,
            reads_into: false,
            fd,
            offset,
            nbytes: nbytes as usize,
            buffer: Some(buffer),
            export: None,
            vectored: None,
            direct,
            priority,
            rw_flags,
        };
        new_op(cls.cast(), new)
    })
}

/// The arguments `write`, `read_into`, `readv` and `writev` share:
/// `(object, fd, offset=0, priority=0, *, flags=0)`, the offset and flags checked.
struct BufferArgs {
    /// The first argument, borrowed from the call.
    object: *mut PyObject,
    fd: u32,
    offset: i64,
    priority: i16,
    rw_flags: i32,
}

/// Parses [`BufferArgs`] with `format` (the backend's, naming the method), the first
/// argument's keyword being `object_name`, the flags checked for `kind`.
fn buffer_args(
    args: *mut PyObject,
    kwargs: *mut PyObject,
    rules: &Behaviour,
    format: &CStr,
    object_name: &CStr,
    kind: IoKind,
) -> Result<BufferArgs> {
    let mut object: *mut PyObject = ptr::null_mut();
    let (mut fd, mut priority): (u32, i16) = (0, 0);
    let mut offset: *mut PyObject = ptr::null_mut();
    let mut flags: i64 = 0;
    parse_args!(
        args,
        kwargs,
        format,
        [object_name, c"fd", c"offset", c"priority", c"flags"],
        &mut object,
        &mut fd,
        &mut offset,
        &mut priority,
        &mut flags
    )?;
    Ok(BufferArgs {
        object,
        fd,
        offset: offset_arg(rules, offset)?,
        priority,
        rw_flags: flags_arg(kind, flags)?,
    })
}

pub(super) unsafe extern "C" fn op_write<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let flavor = Flavor::from_u8(FLAVOR);
        let rules = flavor.behaviour();
        let BufferArgs {
            object: payload,
            fd,
            offset,
            priority,
            rw_flags,
        } = buffer_args(
            args,
            kwargs,
            rules,
            rules.format(IoKind::Write),
            c"payload_bytes",
            IoKind::Write,
        )?;
        // Anything else than `bytes` is written from its own memory, exported for as long
        // as the kernel may read it.
        // SAFETY: `payload` is a live argument (parsed from the call's own arguments);
        // GIL held.
        let mut export = if unsafe { ffi::PyBytes_Check(payload) } != 0 {
            None
        } else {
            Some(Export::of(payload, || type_name(payload))?)
        };
        // SAFETY: as above.
        let payload = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(payload)) };
        let (data, len) = match &export {
            Some(export) => export.region(),
            None => super::bytes_data(payload.as_ptr()),
        };
        // O_DIRECT: an exported payload aligned for the device (`caio.aligned_buffer`) is
        // written in place; any other (a `bytes` object never is) is copied into aligned
        // memory (a bounce buffer) instead of being refused, and its export is then not
        // needed any more.
        let caller = export.as_ref().map(|_| data);
        let direct = direct_memory(fd, offset, len, caller)?;
        if let Some(DirectMemory::Bounce(direct)) = &direct {
            // SAFETY: both regions are `len` bytes long and distinct; GIL held.
            unsafe { ptr::copy_nonoverlapping(data, direct.as_mut_ptr(), len) };
            export = None;
        }
        let new = NewOp {
            flavor,
            kind: IoKind::Write,
            reads_into: false,
            fd,
            offset,
            nbytes: len,
            buffer: Some(payload),
            export,
            vectored: None,
            direct,
            priority,
            rw_flags,
        };
        new_op(cls.cast(), new)
    })
}

/// `read_into(buffer, fd, offset=0, priority=0, *, flags=0)`: a read straight into the caller's
/// writable buffer (its whole size), which the op exports until the completion is reaped.
pub(super) unsafe extern "C" fn op_read_into<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let flavor = Flavor::from_u8(FLAVOR);
        let rules = flavor.behaviour();
        let BufferArgs {
            object: target,
            fd,
            offset,
            priority,
            rw_flags,
        } = buffer_args(
            args,
            kwargs,
            rules,
            rules.read_into_format(),
            c"buffer",
            IoKind::Read,
        )?;
        let export = Export::writable(target, || type_name(target))?;
        let (data, len) = export.region();
        if let Some(limit) = &rules.read_limit {
            if len as u64 > limit.max {
                return Err(Error::Overflow(format!(
                    "the buffer exceeds the {} read limit of {} bytes (got {len})",
                    limit.name, limit.max
                )));
            }
        }
        // O_DIRECT: in place if the caller's memory is aligned for the device, else
        // through a bounce buffer copied in on completion.
        let direct = direct_memory(fd, offset, len, Some(data))?;
        // SAFETY: `target` is a live argument; GIL held.
        let target = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(target)) };
        let new = NewOp {
            flavor,
            kind: IoKind::Read,
            reads_into: true,
            fd,
            offset,
            nbytes: len,
            buffer: Some(target),
            export: Some(export),
            vectored: None,
            direct,
            priority,
            rw_flags,
        };
        new_op(cls.cast(), new)
    })
}

/// `readv(buffers, fd, offset=0, priority=0, *, flags=0)` (`kind` ReadV: the buffers are
/// filled in order, straight from the kernel) and `writev(...)` (WriteV): one request
/// over a sequence of buffers, each exported until the completion is reaped.
fn vectored_op(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    flavor: Flavor,
    kind: IoKind,
) -> Result<*mut PyObject> {
    let rules = flavor.behaviour();
    let read = kind == IoKind::ReadV;
    let BufferArgs {
        object: buffers,
        fd,
        offset,
        priority,
        rw_flags,
    } = buffer_args(args, kwargs, rules, rules.format(kind), c"buffers", kind)?;
    let method = if read { "readv" } else { "writev" };
    let (tuple, vectored) = Vectored::of(buffers, read, method, type_name)?;
    // The total never exceeds max_rw_count(), below every backend's read limit: no check.
    let total = vectored.total();
    // O_DIRECT: each buffer in place, or the request is refused (no bounce buffer).
    let direct = direct_segments(fd as i32, offset, vectored.segments())
        .map_err(|err| direct_error(fd, offset, total, err, Some(method)))?;
    let new = NewOp {
        flavor,
        kind,
        reads_into: false,
        fd,
        offset,
        nbytes: total,
        buffer: Some(tuple),
        export: None,
        vectored: Some(vectored),
        direct,
        priority,
        rw_flags,
    };
    new_op(cls.cast(), new)
}

/// `readv` (`WRITE` false) and `writev` (true), per backend.
pub(super) unsafe extern "C" fn op_vectored<const FLAVOR: u8, const WRITE: bool>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    let kind = if WRITE { IoKind::WriteV } else { IoKind::ReadV };
    entry(|| vectored_op(cls, args, kwargs, Flavor::from_u8(FLAVOR), kind))
}

fn sync_op(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    flavor: Flavor,
    kind: IoKind,
) -> Result<*mut PyObject> {
    let (mut fd, mut priority): (u32, i16) = (0, 0);
    parse_args!(
        args,
        kwargs,
        flavor.behaviour().format(kind),
        [c"fd", c"priority"],
        &mut fd,
        &mut priority
    )?;
    let new = NewOp {
        flavor,
        kind,
        reads_into: false,
        fd,
        offset: 0,
        nbytes: 0,
        buffer: None,
        export: None,
        vectored: None,
        direct: None,
        priority,
        rw_flags: 0,
    };
    new_op(cls.cast(), new)
}

pub(super) unsafe extern "C" fn op_fsync<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| sync_op(cls, args, kwargs, Flavor::from_u8(FLAVOR), IoKind::Fsync))
}

pub(super) unsafe extern "C" fn op_fdsync<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| sync_op(cls, args, kwargs, Flavor::from_u8(FLAVOR), IoKind::Fdsync))
}
