//! The Operation object: one read, write, fsync or fdsync, with the buffer it owns.
//!
//! Life: built by a classmethod (`read`, `write`, ...), claimed once by a Context's
//! `submit`, completed by [`deliver`] on whichever thread the backend reports on.
//! While in flight the kernel or a worker writes into `buffer`, so nothing hands that
//! object to Python until the op is done: `get_value()`/`payload` raise meanwhile.

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};

use caio_backends::aio::{direct_io_alignment, is_direct};
use caio_backends::{AlignedBuf, IoKind, IoRequest};
use caio_core::{OpState, Phase};

use crate::args::parse_args;
use crate::error::{entry, repr_of, str_object, write_unraisable, Error, Result};
use crate::ffi::{self, PyObject, PyOwned, PyTypeObject};
use crate::values::{self, int, none, uint};

/// The instance layout shared by every backend's Operation type.
#[repr(C)]
pub(crate) struct OperationObject {
    ob_base: PyObject,
    weakreflist: *mut PyObject,
    pub(crate) state: OpState,
    flavor: Flavor,
    pub(crate) kind: IoKind,
    pub(crate) fd: u32,
    pub(crate) offset: i64,
    /// Requested size; for a completed read, the bytes actually read.
    pub(crate) nbytes: usize,
    /// The size the op was built with (a completed read's buffer holds only what was read).
    requested: usize,
    /// The syscall's return value: bytes transferred, 0, or -1 on failure.
    pub(crate) result: i64,
    /// errno of a failed op, else 0.
    pub(crate) error: i32,
    /// Reads: the `bytes` object the data lands in (never handed to Python before the op
    /// is done; not visited by the GC, see `op_traverse`). Writes: the caller's payload.
    buffer: *mut PyObject,
    /// A done short read's `payload` (the whole requested size, zero tail included), built
    /// on first access and kept so that each access returns the same object, else NULL.
    whole_payload: *mut PyObject,
    callback: *mut PyObject,
    /// The Context this op is in flight on (a strong reference), else NULL.
    pub(crate) context: *mut PyObject,
    /// The request id while in flight (what a cancel targets), else `RequestId::NONE`.
    pub(crate) request_id: u64,
    /// For a file opened with `O_DIRECT`: the aligned memory the kernel transfers
    /// (a write's payload is copied in; a read's data is copied out on completion).
    direct: Option<Box<AlignedBuf>>,
    pub(crate) priority: i16,
}

/// Which backend's conventions an Operation follows (caio's backends differ in details
/// that users can observe, and we keep each as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Flavor {
    /// thread_aio: offsets 0 ..= 2**63 - 1; `result` and the callback get -1 on failure;
    /// a write's payload is dropped on completion; a read's `payload` is a memoryview.
    Thread = 0,
    /// linux_uring: offsets 0 ..= 2**63 - 1 or -1 (= 2**64 - 1: the file position);
    /// `result` and the callback get the negated errno; reads up to 4 GiB - 1; a read's
    /// `payload` is a bytes object of the requested size.
    Uring = 1,
    /// linux_aio: offsets as thread_aio, signed priority (kept); the negated errno on
    /// failure; a write's `nbytes` becomes the bytes written; a read's `payload` is a
    /// memoryview.
    Aio = 2,
}

impl Flavor {
    const fn from_u8(v: u8) -> Self {
        match v {
            1 => Flavor::Uring,
            2 => Flavor::Aio,
            _ => Flavor::Thread,
        }
    }
}

/// Reads no larger than this may run inline on the caller's thread when cached.
pub(crate) const INLINE_READ_MAX: usize = 64 * 1024;

/// A borrowed pointer to an Operation of one of our types.
#[derive(Clone, Copy)]
pub(crate) struct OpPtr(NonNull<OperationObject>);

impl OpPtr {
    /// # Safety
    /// `obj` is a live instance of an Operation type built by [`create_type`].
    pub(crate) unsafe fn new(obj: *mut PyObject) -> Self {
        // SAFETY: non-NULL by the caller's contract (a live object).
        Self(unsafe { NonNull::new_unchecked(obj.cast()) })
    }

    fn raw(self) -> *mut OperationObject {
        self.0.as_ptr()
    }

    pub(crate) fn phase(self) -> Phase {
        // SAFETY: live object (constructor contract); `state` is an atomic.
        unsafe { (*self.raw()).state.phase() }
    }

    pub(crate) fn state(&self) -> &OpState {
        // SAFETY: live object for as long as this borrow of `self`; atomics are shareable.
        unsafe { &(*self.raw()).state }
    }

    pub(crate) fn set_request_id(self, id: u64) {
        // SAFETY: live object; plain field write under the GIL.
        unsafe { (*self.raw()).request_id = id }
    }

    pub(crate) fn request_id(self) -> u64 {
        // SAFETY: live object; plain field read under the GIL.
        unsafe { (*self.raw()).request_id }
    }

    pub(crate) fn is_direct(self) -> bool {
        // SAFETY: live object; plain field read under the GIL.
        unsafe { (*self.raw()).direct.is_some() }
    }

    pub(crate) fn priority(self) -> i16 {
        // SAFETY: live object; plain field read under the GIL.
        unsafe { (*self.raw()).priority }
    }

    pub(crate) fn context(self) -> *mut PyObject {
        // SAFETY: live object; plain field read under the GIL.
        unsafe { (*self.raw()).context }
    }

    pub(crate) fn kind(self) -> IoKind {
        // SAFETY: live object; plain field read under the GIL.
        unsafe { (*self.raw()).kind }
    }

    /// The request a backend runs for this op. Its buffer pointer stays valid while the op
    /// is alive and holds `buffer` (which it does until it is done).
    pub(crate) fn request(self) -> IoRequest {
        // SAFETY: live object; GIL held by every caller; `buffer` is a bytes object or NULL.
        unsafe {
            let op = self.raw();
            let (buf, len) = if let Some(direct) = &(*op).direct {
                (direct.as_mut_ptr(), direct.len())
            } else if (*op).buffer.is_null() {
                (ptr::null_mut(), 0)
            } else {
                let b = (*op).buffer;
                (
                    ffi::PyBytes_AsString(b).cast::<u8>(),
                    ffi::PyBytes_Size(b) as usize,
                )
            };
            IoRequest {
                kind: (*op).kind,
                fd: (*op).fd as i32,
                offset: (*op).offset,
                buf,
                len,
            }
        }
    }

    /// Undoes a claim whose request never started: no Context, no request id, and the op
    /// can be submitted again.
    pub(crate) fn unclaim(self) {
        self.set_context(ptr::null_mut());
        self.set_request_id(caio_core::RequestId::NONE.0);
        self.state().rollback();
    }

    /// Sets (or clears, with NULL) the Context this op is in flight on.
    pub(crate) fn set_context(self, ctx: *mut PyObject) {
        // SAFETY: live object, GIL held; the old reference is released after the new one
        // is taken, so setting the same object twice is fine.
        unsafe {
            let op = self.raw();
            if !ctx.is_null() {
                ffi::Py_IncRef(ctx);
            }
            let old = std::mem::replace(&mut (*op).context, ctx);
            if !old.is_null() {
                ffi::Py_DecRef(old);
            }
        }
    }
}

/// Applies a completion to a claimed op and runs its callback, in caio's order: result
/// fields, drop the context, publish `done`, callback (exceptions go to
/// `sys.unraisablehook`), then release the reference the engine held (`op`).
///
/// `res` is bytes transferred or a negated errno. The GIL must be held.
pub(crate) fn deliver(op: PyOwned, res: i64) {
    // SAFETY: `op` is a strong reference to one of our Operation objects, claimed (so in
    // flight) and no longer touched by any backend; GIL held (caller's contract).
    unsafe {
        let ptr = OpPtr::new(op.as_ptr());
        let raw = ptr.raw();
        let res = finish_fields(raw, res);
        ptr.set_context(ptr::null_mut());
        (*raw).state.finish();
        run_callback(raw, res);
    }
    drop(op);
}

/// Records `res` in the op's fields (not yet published) and returns the result to report:
/// `res`, or `-ENOMEM` if a read's data could not be kept.
///
/// # Safety
/// `raw` is a live, claimed op no backend touches any more; GIL held. A read's buffer is a
/// bytes object only this op holds: Python is never handed it before the op is done
/// (`get_value`/`payload` build other objects until then, and `op_traverse` does not show
/// it to the GC).
unsafe fn finish_fields(raw: *mut OperationObject, mut res: i64) -> i64 {
    // SAFETY: see the function's contract.
    unsafe {
        if (*raw).kind == IoKind::Read {
            // The buffer is left holding exactly the bytes the kernel wrote (none on
            // failure): the O_DIRECT bounce buffer is copied in, then the bytes object is
            // cut to that length. So Python only ever sees defined bytes, and the unused
            // part of a generous bound is neither zero-filled here, on the thread that
            // delivers completions, nor kept: its untouched pages go back to the OS.
            let len = ffi::PyBytes_Size((*raw).buffer) as usize;
            let got = (res.max(0) as usize).min(len);
            if let Some(direct) = (*raw).direct.take() {
                let base = ffi::PyBytes_AsString((*raw).buffer).cast::<u8>();
                ptr::copy_nonoverlapping(direct.as_mut_ptr(), base, got);
            }
            let buffer = ptr::addr_of_mut!((*raw).buffer);
            if got < len && ffi::Py_REFCNT(*buffer) != 1 {
                // Unreachable by the contract above; should a reference ever leak out, the
                // bytes cannot be resized under its holder, so only the tail is defined.
                let base = ffi::PyBytes_AsString(*buffer).cast::<u8>();
                ptr::write_bytes(base.add(got), 0, len - got);
            } else if got < len && ffi::_PyBytes_Resize(buffer, got as ffi::Py_ssize_t) != 0 {
                // The resize freed the buffer and raised MemoryError. No exception can
                // surface here: the op fails with ENOMEM instead, over an empty buffer.
                ffi::PyErr_Clear();
                *buffer = ffi::PyBytes_FromStringAndSize(ptr::null(), 0);
                res = -(libc::ENOMEM as i64);
            }
        }
        let flavor = (*raw).flavor;
        (*raw).request_id = caio_core::RequestId::NONE.0;
        if res >= 0 {
            (*raw).result = res;
            (*raw).error = 0;
        } else {
            (*raw).result = if flavor == Flavor::Thread { -1 } else { res };
            (*raw).error = (-res) as i32;
        }
        match (*raw).kind {
            IoKind::Read => {
                if res >= 0 {
                    (*raw).nbytes = (res as usize).min((*raw).requested);
                }
            }
            IoKind::Write => {
                drop((*raw).direct.take());
                if flavor == Flavor::Thread {
                    // caio's thread backend drops the payload once a write completes.
                    let payload = std::mem::replace(&mut (*raw).buffer, ptr::null_mut());
                    drop(PyOwned::from_new(payload));
                } else if flavor == Flavor::Aio && res >= 0 {
                    (*raw).nbytes = res as usize;
                }
            }
            IoKind::Fsync | IoKind::Fdsync => {}
        }
        res
    }
}

/// # Safety
/// `raw` is a live op, done; GIL held.
unsafe fn run_callback(raw: *mut OperationObject, res: i64) {
    // SAFETY: see the function's contract. The callback is taken as a new reference first
    // so a callback replacing itself (`set_callback`) cannot free it mid-call.
    unsafe {
        let Some(cb) = NonNull::new((*raw).callback).map(|p| PyOwned::from_borrowed(p)) else {
            return;
        };
        let arg = if res >= 0 || (*raw).flavor != Flavor::Thread {
            res
        } else {
            -1
        };
        let Some(value) = PyOwned::from_new(ffi::PyLong_FromLongLong(arg)) else {
            write_unraisable(cb.as_ptr());
            return;
        };
        match PyOwned::from_new(ffi::PyObject_CallOneArg(cb.as_ptr(), value.as_ptr())) {
            Some(ret) => drop(ret),
            None => write_unraisable(cb.as_ptr()),
        }
    }
}

/// Runs `op` on the calling thread if it is an unclaimed small read whose data is in the
/// page cache (`preadv2(RWF_NOWAIT)`), completing it (callback included). Returns whether
/// it completed; `false` leaves the op untouched for a normal submit. GIL held.
///
/// Only a linux_uring op can have a negative offset, and only -1 ([`offset_arg`]): there
/// `preadv2`'s "current position" is what io_uring does with it too.
pub(crate) fn run_inline(op: OpPtr) -> bool {
    // SAFETY: live op; plain field read under the GIL.
    let direct = unsafe { (*op.raw()).direct.is_some() };
    if op.kind() != IoKind::Read || op.phase() != Phase::New || direct {
        return false;
    }
    let request = op.request();
    if request.len > INLINE_READ_MAX {
        return false;
    }
    // SAFETY: an unclaimed op's buffer is ours alone: no backend has it and Python cannot
    // see it before the op is done; the GIL keeps anyone from claiming it meanwhile.
    match unsafe { request.read_nowait() } {
        Some(res) => complete_inline(op, res),
        None => false,
    }
}

/// Completes an op that ran inline (never dispatched): claims it, applies `res`, runs the
/// callback. Returns `false` if someone claimed it first.
fn complete_inline(op: OpPtr, res: i64) -> bool {
    if !op.state().try_claim() {
        return false;
    }
    // SAFETY: we hold the claim, nothing else touches the op; GIL held by the caller.
    unsafe {
        let res = finish_fields(op.raw(), res);
        op.state().finish();
        run_callback(op.raw(), res);
    }
    true
}

// ---- construction ---------------------------------------------------------------------

/// What a new Operation is made of.
struct NewOp {
    flavor: Flavor,
    kind: IoKind,
    fd: u32,
    offset: i64,
    nbytes: usize,
    /// A read's destination or a write's payload (a new reference), None for syncs.
    buffer: Option<PyOwned>,
    direct: Option<Box<AlignedBuf>>,
    priority: i16,
}

/// Allocates an instance of `cls` (one of our Operation types) with the given fields.
fn new_op(cls: *mut PyTypeObject, new: NewOp) -> Result<*mut PyObject> {
    let NewOp {
        flavor,
        kind,
        fd,
        offset,
        nbytes,
        buffer,
        direct,
        priority,
    } = new;
    // SAFETY: `cls` is our heap type (the classmethods receive it from the interpreter);
    // GenericAlloc zero-fills and GC-tracks; every field is then written before use.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(cls, 0);
        if obj.is_null() {
            return Err(Error::AlreadySet);
        }
        let op = obj.cast::<OperationObject>();
        ptr::addr_of_mut!((*op).state).write(OpState::new());
        ptr::addr_of_mut!((*op).kind).write(kind);
        ptr::addr_of_mut!((*op).flavor).write(flavor);
        (*op).request_id = caio_core::RequestId::NONE.0;
        ptr::addr_of_mut!((*op).direct).write(direct);
        (*op).priority = priority;
        (*op).fd = fd;
        (*op).offset = offset;
        (*op).nbytes = nbytes;
        (*op).requested = nbytes;
        (*op).buffer = buffer.map_or(ptr::null_mut(), PyOwned::into_ptr);
        (*op).whole_payload = ptr::null_mut();
        Ok(obj)
    }
}

/// Argument formats as each caio backend parsed them: `priority` masked u16 (`H`) or
/// range-checked i16 (`h`, linux_aio, which keeps it). `offset` is taken as an object and
/// converted by [`offset_arg`].
fn format(flavor: Flavor, kind: IoKind) -> &'static CStr {
    match (flavor, kind) {
        (Flavor::Aio, IoKind::Read) => c"KI|Oh:read",
        (_, IoKind::Read) => c"KI|OH:read",
        (Flavor::Aio, IoKind::Write) => c"OI|Oh:write",
        (_, IoKind::Write) => c"OI|OH:write",
        (Flavor::Aio, IoKind::Fsync) => c"I|h:fsync",
        (Flavor::Aio, IoKind::Fdsync) => c"I|h:fdsync",
        (_, IoKind::Fsync) => c"I|H:fsync",
        (_, IoKind::Fdsync) => c"I|H:fdsync",
    }
}

/// io_uring's "use the file position" offset (for pipes and other streams): `-1` as an
/// `loff_t`, also accepted as `2**64 - 1`, which is what caio's unsigned parsing made of it.
const FILE_POSITION: i64 = -1;

/// The `offset` of `read`/`write` (omitted: 0). Every backend takes an `loff_t`,
/// 0 ..= 2**63 - 1; above it `OverflowError`, as caio's range-checked parsing gave (its
/// uring backend masked to 64 bits instead, so `2**64 + 5` wrote at offset 5).
///
/// Below 0: linux_uring keeps [`FILE_POSITION`] and refuses anything else with
/// `OverflowError` (its offset is unsigned, with that one alias). The other backends are
/// positional and refuse every negative offset with `ValueError` (the type kernel AIO's
/// refusal had in caio), so none reaches a call that reads -1 as "the current position"
/// (`preadv2`).
fn offset_arg(flavor: Flavor, obj: *mut PyObject) -> Result<i64> {
    if obj.is_null() {
        return Ok(0);
    }
    let mut overflow: c_int = 0;
    // SAFETY: `obj` is a live argument and `index` a new int reference we own; GIL held.
    // For an int, PyLong_AsLongLongAndOverflow reports overflow in the flag, never raises.
    let (index, value, is_u64_max) = unsafe {
        let index = PyOwned::from_new(ffi::PyNumber_Index(obj)).ok_or(Error::AlreadySet)?;
        let value = ffi::PyLong_AsLongLongAndOverflow(index.as_ptr(), &mut overflow);
        let is_u64_max = if flavor == Flavor::Uring && overflow > 0 {
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
    match (overflow, flavor) {
        (0, _) if value >= 0 => Ok(value),
        (0, Flavor::Uring) if value == FILE_POSITION => Ok(FILE_POSITION),
        _ if is_u64_max => Ok(FILE_POSITION),
        (0, Flavor::Thread | Flavor::Aio) => Err(Error::Value(format!(
            "offset must not be negative (got {})",
            shown()
        ))),
        (_, Flavor::Uring) => Err(Error::Overflow(format!(
            "offset {} does not fit loff_t (0 to 2**63 - 1); -1 or 2**64 - 1 means the \
             file position",
            shown()
        ))),
        _ => Err(Error::Overflow(format!(
            "offset {} does not fit loff_t (0 to 2**63 - 1)",
            shown()
        ))),
    }
}

/// For a descriptor opened with `O_DIRECT`: checks the request's alignment and allocates
/// the aligned memory the kernel will transfer. `None` for ordinary descriptors.
fn direct_buffer(fd: u32, offset: i64, len: usize) -> Result<Option<Box<AlignedBuf>>> {
    if !is_direct(fd as i32) {
        return Ok(None);
    }
    // A page-aligned request on a page-aligned buffer suits every device with blocks of
    // up to a page, so the statx lookup is only paid for requests that may not fit.
    let (mem_align, block) = if offset >= 0 && offset % PAGE == 0 && len as i64 % PAGE == 0 {
        (PAGE as usize, PAGE as usize)
    } else {
        direct_io_alignment(fd as i32)
    };
    if offset < 0 || offset as u64 % block as u64 != 0 || len % block != 0 {
        return Err(Error::Value(format!(
            "fd {fd} is open with O_DIRECT, which needs offset and size to be multiples of \
             {block} bytes (got offset={offset}, size={len})"
        )));
    }
    // Page-aligned at least: a transfer that straddles fewer pages needs fewer DMA segments.
    AlignedBuf::new(len, mem_align.max(block).max(PAGE as usize))
        .map(|b| Some(Box::new(b)))
        .ok_or_else(|| Error::Memory(format!("cannot allocate {len} aligned bytes for O_DIRECT")))
}

const PAGE: i64 = 4096;

unsafe extern "C" fn op_read<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let flavor = Flavor::from_u8(FLAVOR);
        let (mut nbytes, mut fd, mut priority): (u64, u32, i16) = (0, 0, 0);
        let mut offset: *mut PyObject = ptr::null_mut();
        parse_args!(
            args,
            kwargs,
            format(flavor, IoKind::Read),
            [c"nbytes", c"fd", c"offset", c"priority"],
            &mut nbytes,
            &mut fd,
            &mut offset,
            &mut priority
        )?;
        let offset = offset_arg(flavor, offset)?;
        if flavor == Flavor::Uring && nbytes > u32::MAX as u64 {
            return Err(Error::Overflow(format!(
                "nbytes exceeds the io_uring read limit of 4294967295 (got {nbytes}; negative sizes wrap)"
            )));
        }
        if nbytes > isize::MAX as u64 {
            return Err(Error::Overflow(format!(
                "nbytes does not fit in Py_ssize_t (got {nbytes}; negative sizes wrap)"
            )));
        }
        // Uninitialised on purpose: the backend fills it and `finish_fields` cuts it to
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
        let direct = direct_buffer(fd, offset, nbytes as usize)?;
        let nbytes = nbytes as usize;
        let new = NewOp {
            flavor,
            kind: IoKind::Read,
            fd,
            offset,
            nbytes,
            buffer: Some(buffer),
            direct,
            priority,
        };
        new_op(cls.cast(), new)
    })
}

unsafe extern "C" fn op_write<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| {
        let flavor = Flavor::from_u8(FLAVOR);
        let mut payload: *mut PyObject = ptr::null_mut();
        let (mut fd, mut priority): (u32, i16) = (0, 0);
        let mut offset: *mut PyObject = ptr::null_mut();
        parse_args!(
            args,
            kwargs,
            format(flavor, IoKind::Write),
            [c"payload_bytes", c"fd", c"offset", c"priority"],
            &mut payload,
            &mut fd,
            &mut offset,
            &mut priority
        )?;
        let offset = offset_arg(flavor, offset)?;
        // SAFETY: `payload` is a borrowed, live argument; GIL held.
        if unsafe { ffi::PyBytes_Check(payload) } == 0 {
            return Err(Error::Value(format!(
                "payload_bytes argument must be bytes, not {}",
                type_name(payload)
            )));
        }
        // SAFETY: live argument, so non-NULL; GIL held.
        let payload = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(payload)) };
        // SAFETY: `payload` is a bytes object.
        let len = unsafe { ffi::PyBytes_Size(payload.as_ptr()) } as usize;
        // O_DIRECT: `bytes` data is never suitably aligned, so the payload is copied into
        // aligned memory (a bounce buffer) instead of being refused.
        let direct = direct_buffer(fd, offset, len)?;
        if let Some(direct) = &direct {
            // SAFETY: both regions are `len` bytes long and distinct; GIL held.
            unsafe {
                ptr::copy_nonoverlapping(
                    ffi::PyBytes_AsString(payload.as_ptr()).cast::<u8>(),
                    direct.as_mut_ptr(),
                    len,
                )
            };
        }
        let new = NewOp {
            flavor,
            kind: IoKind::Write,
            fd,
            offset,
            nbytes: len,
            buffer: Some(payload),
            direct,
            priority,
        };
        new_op(cls.cast(), new)
    })
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
        format(flavor, kind),
        [c"fd", c"priority"],
        &mut fd,
        &mut priority
    )?;
    let new = NewOp {
        flavor,
        kind,
        fd,
        offset: 0,
        nbytes: 0,
        buffer: None,
        direct: None,
        priority,
    };
    new_op(cls.cast(), new)
}

unsafe extern "C" fn op_fsync<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| sync_op(cls, args, kwargs, Flavor::from_u8(FLAVOR), IoKind::Fsync))
}

unsafe extern "C" fn op_fdsync<const FLAVOR: u8>(
    cls: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    entry(|| sync_op(cls, args, kwargs, Flavor::from_u8(FLAVOR), IoKind::Fdsync))
}

fn type_name(obj: *mut PyObject) -> String {
    // SAFETY: live object; `ob_type` is always set; GIL held.
    let ty = unsafe { (*obj).ob_type };
    repr_of(ty.cast())
}

// ---- methods and properties -------------------------------------------------------------

/// `len` zero bytes from `bytes(len)`, which allocates with calloc: a large buffer is
/// fresh zero pages from the OS, so nothing proportional to `len` runs or stays committed
/// until someone writes (or reads) those pages.
fn zeroed_bytes(len: usize) -> Result<*mut PyObject> {
    let size = uint(len as u64)?;
    // SAFETY: `size` is a new int reference we own; calling the bytes type with an int is
    // `bytes(n)`; GIL held.
    unsafe {
        let obj = ffi::PyObject_CallOneArg(ptr::addr_of_mut!(ffi::PyBytes_Type).cast(), size);
        ffi::Py_DecRef(size);
        if obj.is_null() {
            Err(Error::AlreadySet)
        } else {
            Ok(obj)
        }
    }
}

fn ensure_not_in_flight(op: OpPtr, what: &str) -> Result<()> {
    if op.phase() == Phase::InFlight {
        Err(Error::Runtime(format!(
            "{what} is not available while the operation is in flight"
        )))
    } else {
        Ok(())
    }
}

unsafe extern "C" fn op_get_value(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is an instance of our type (method of it).
        let op = unsafe { OpPtr::new(slf) };
        ensure_not_in_flight(op, "get_value()")?;
        let raw = op.raw();
        // SAFETY: the op is not in flight, so no backend touches it; GIL held.
        unsafe {
            let done = op.phase() == Phase::Done;
            if done && (*raw).error != 0 {
                return Err(Error::Errno((*raw).error));
            }
            match (*raw).kind {
                IoKind::Read if !done => zeroed_bytes((*raw).nbytes),
                IoKind::Read => {
                    let buf = (*raw).buffer;
                    let got = (*raw).result as usize;
                    if got == ffi::PyBytes_Size(buf) as usize {
                        ffi::Py_IncRef(buf);
                        Ok(buf)
                    } else {
                        let obj = ffi::PyBytes_FromStringAndSize(
                            ffi::PyBytes_AsString(buf),
                            got as ffi::Py_ssize_t,
                        );
                        if obj.is_null() {
                            Err(Error::AlreadySet)
                        } else {
                            Ok(obj)
                        }
                    }
                }
                IoKind::Write => int((*raw).result),
                IoKind::Fsync | IoKind::Fdsync => Ok(none()),
            }
        }
    })
}

unsafe extern "C" fn op_set_callback(
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
        // SAFETY: live argument; GIL held.
        if unsafe { ffi::PyCallable_Check(callback) } == 0 {
            return Err(Error::Value(format!(
                "object {} is not callable",
                repr_of(callback)
            )));
        }
        // SAFETY: `slf` is our instance; the new reference is taken before the old one is
        // released (whose finaliser may run arbitrary code).
        unsafe {
            let raw = OpPtr::new(slf).raw();
            ffi::Py_IncRef(callback);
            let old = std::mem::replace(&mut (*raw).callback, callback);
            drop(PyOwned::from_new(old));
            Ok(values::boolean(true))
        }
    })
}

unsafe extern "C" fn get_fileno(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| uint(unsafe { (*OpPtr::new(slf).raw()).fd } as u64))
}

unsafe extern "C" fn get_offset(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| uint(unsafe { (*OpPtr::new(slf).raw()).offset } as u64))
}

unsafe extern "C" fn get_nbytes(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| uint(unsafe { (*OpPtr::new(slf).raw()).nbytes } as u64))
}

unsafe extern "C" fn get_result(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance; result is written before `done` is published.
    entry(|| int(unsafe { (*OpPtr::new(slf).raw()).result }))
}

unsafe extern "C" fn get_error(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| int(unsafe { (*OpPtr::new(slf).raw()).error } as i64))
}

unsafe extern "C" fn get_payload(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance.
        let op = unsafe { OpPtr::new(slf) };
        ensure_not_in_flight(op, "payload")?;
        // SAFETY: not in flight, so no backend touches the buffer; GIL held.
        unsafe {
            let raw = op.raw();
            match (*raw).kind {
                IoKind::Read => {
                    let buf = (*raw).buffer;
                    let kept = ffi::PyBytes_Size(buf) as usize;
                    let done = op.phase() == Phase::Done;
                    let view_of = if done && kept == (*raw).requested {
                        ffi::Py_IncRef(buf);
                        PyOwned::from_new(buf).ok_or(Error::AlreadySet)?
                    } else if done && !(*raw).whole_payload.is_null() {
                        let whole = (*raw).whole_payload;
                        ffi::Py_IncRef(whole);
                        PyOwned::from_new(whole).ok_or(Error::AlreadySet)?
                    } else {
                        // caio's payload is the whole requested buffer: the data read (none
                        // if never run: the buffer is uninitialised) and a zero tail, built
                        // only for a caller who asks for it, from calloc'd pages, so the
                        // unused part of the bound costs neither time nor memory.
                        let whole = PyOwned::from_new(zeroed_bytes((*raw).requested)?)
                            .ok_or(Error::AlreadySet)?;
                        if done {
                            let dst = ffi::PyBytes_AsString(whole.as_ptr());
                            ptr::copy_nonoverlapping(ffi::PyBytes_AsString(buf), dst, kept);
                            // Kept: a done op's payload no longer changes, and caio's is
                            // one object (uring) or views of one buffer.
                            ffi::Py_IncRef(whole.as_ptr());
                            (*raw).whole_payload = whole.as_ptr();
                        }
                        whole
                    };
                    if (*raw).flavor == Flavor::Uring {
                        // io_uring's payload is the whole buffer as bytes (caio hands out
                        // its buffer object), zero tail included.
                        return Ok(view_of.into_ptr());
                    }
                    // The view holds a reference to the bytes: it stays valid after the
                    // op is gone (unlike caio's C views).
                    let view = ffi::PyMemoryView_FromObject(view_of.as_ptr());
                    if view.is_null() {
                        Err(Error::AlreadySet)
                    } else {
                        Ok(view)
                    }
                }
                IoKind::Write if !(*raw).buffer.is_null() => {
                    ffi::Py_IncRef((*raw).buffer);
                    Ok((*raw).buffer)
                }
                _ => Ok(none()),
            }
        }
    })
}

unsafe extern "C" fn get_priority(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance.
    entry(|| int(unsafe { (*OpPtr::new(slf).raw()).priority } as i64))
}

unsafe extern "C" fn get_context(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
    // SAFETY: `slf` is our instance; `context` is NULL or a live object we hold.
    entry(|| unsafe {
        let ctx = OpPtr::new(slf).context();
        if ctx.is_null() {
            Ok(none())
        } else {
            ffi::Py_IncRef(ctx);
            Ok(ctx)
        }
    })
}

unsafe extern "C" fn op_repr(slf: *mut PyObject) -> *mut PyObject {
    entry(|| {
        // SAFETY: `slf` is our instance; plain field reads under the GIL.
        let text = unsafe {
            let op = OpPtr::new(slf);
            let raw = op.raw();
            let mode = match (*raw).kind {
                IoKind::Read => "read",
                IoKind::Write => "write",
                IoKind::Fsync => "fsync",
                IoKind::Fdsync => "fdsync",
            };
            let state = match op.phase() {
                Phase::New => "new",
                Phase::InFlight => "in flight",
                Phase::Done => "done",
            };
            format!(
                "<{} at {:p}: mode=\"{mode}\", fd={}, offset={}, nbytes={}, result={}, state={state}>",
                type_name(slf).trim_start_matches("<class '").trim_end_matches("'>"),
                slf,
                (*raw).fd,
                (*raw).offset,
                (*raw).nbytes,
                (*raw).result,
            )
        };
        str_object(&text).map(PyOwned::into_ptr)
    })
}

// ---- GC and teardown ---------------------------------------------------------------------

unsafe extern "C" fn op_traverse(
    slf: *mut PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `slf` is our instance; visiting our own strong references. The engine's
    // reference to an in-flight op is visited by the Context (context.rs), never released
    // by the GC (no Context tp_clear), so an op whose buffer the kernel may still write is
    // never freed, whatever the collector concludes.
    unsafe {
        let raw = OpPtr::new(slf).raw();
        // A read's buffer is an exact bytes object (never GC-tracked, so in no cycle) that
        // the kernel or a worker may be writing: visiting it would hand it to Python
        // (`gc.get_referents`). A write's payload is the caller's own object, possibly a
        // bytes subclass with a `__dict__` that refers back to the op, so it is visited.
        let payload = if (*raw).kind == IoKind::Write {
            (*raw).buffer
        } else {
            ptr::null_mut()
        };
        for field in [(*raw).callback, payload, (*raw).context] {
            if !field.is_null() {
                let r = visit(field, arg);
                if r != 0 {
                    return r;
                }
            }
        }
        // Heap types must visit their type.
        visit((*slf).ob_type.cast(), arg)
    }
}

unsafe extern "C" fn op_clear(slf: *mut PyObject) -> c_int {
    // SAFETY: `slf` is our instance; GIL held. Only the callback is cleared: the buffer and
    // the Context stay, so even an in-flight op the collector found unreachable (the engine
    // still holds it) keeps its buffer until its completion.
    unsafe {
        let raw = OpPtr::new(slf).raw();
        let cb = std::mem::replace(&mut (*raw).callback, ptr::null_mut());
        drop(PyOwned::from_new(cb));
    }
    0
}

unsafe extern "C" fn op_dealloc(slf: *mut PyObject) {
    // SAFETY: called once by the interpreter when the refcount hits zero. An in-flight op
    // cannot get here (the engine owns a reference), so its buffer is free to go.
    unsafe {
        let ty = (*slf).ob_type;
        ffi::PyObject_GC_UnTrack(slf.cast());
        let raw = OpPtr::new(slf).raw();
        if !(*raw).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        // An op being freed is not in flight, so no kernel transfer uses this memory.
        drop((*raw).direct.take());
        for field in [
            ptr::addr_of_mut!((*raw).callback),
            ptr::addr_of_mut!((*raw).buffer),
            ptr::addr_of_mut!((*raw).whole_payload),
            ptr::addr_of_mut!((*raw).context),
        ] {
            drop(PyOwned::from_new(std::mem::replace(
                &mut *field,
                ptr::null_mut(),
            )));
        }
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(slf.cast());
        ffi::Py_DecRef(ty.cast());
    }
}

// ---- the type ---------------------------------------------------------------------------

/// Builds an Operation heap type named `name` (e.g. `c"caio.thread_aio.Operation"`).
pub(crate) fn create_type(
    name: &'static CStr,
    doc: &'static CStr,
    flavor: Flavor,
) -> Result<*mut PyTypeObject> {
    match flavor {
        Flavor::Thread => create_type_of::<0>(name, doc),
        Flavor::Uring => create_type_of::<1>(name, doc),
        Flavor::Aio => create_type_of::<2>(name, doc),
    }
}

fn create_type_of<const FLAVOR: u8>(
    name: &'static CStr,
    doc: &'static CStr,
) -> Result<*mut PyTypeObject> {
    use crate::types::{getset, leak, method, method_kw, TypeBuilder};
    let methods = leak(vec![
        method_kw(
            c"read",
            op_read::<FLAVOR>,
            ffi::METH_CLASS,
            c"read(nbytes, fd, offset=0, priority=0) -> Operation",
        ),
        method_kw(
            c"write",
            op_write::<FLAVOR>,
            ffi::METH_CLASS,
            c"write(payload_bytes, fd, offset=0, priority=0) -> Operation",
        ),
        method_kw(
            c"fsync",
            op_fsync::<FLAVOR>,
            ffi::METH_CLASS,
            c"fsync(fd, priority=0) -> Operation",
        ),
        method_kw(
            c"fdsync",
            op_fdsync::<FLAVOR>,
            ffi::METH_CLASS,
            c"fdsync(fd, priority=0) -> Operation",
        ),
        method(
            c"get_value",
            op_get_value,
            ffi::METH_NOARGS,
            c"The result: bytes read, bytes written, or None.",
        ),
        method_kw(
            c"set_callback",
            op_set_callback,
            0,
            c"set_callback(callback) -> True: called once with the result when the op completes.",
        ),
        ffi::PyMethodDef::zeroed(),
    ]);
    let getsets = leak(vec![
        getset(c"fileno", get_fileno, c"The file descriptor."),
        getset(c"offset", get_offset, c"The file offset."),
        getset(
            c"nbytes",
            get_nbytes,
            c"Requested size; for a completed read, bytes read.",
        ),
        getset(
            c"result",
            get_result,
            c"The syscall's return value (-1 on failure).",
        ),
        getset(c"error", get_error, c"errno of a failed operation, else 0."),
        getset(
            c"priority",
            get_priority,
            c"The I/O priority given at construction (kept for linux_aio's aio_reqprio).",
        ),
        getset(
            c"context",
            get_context,
            c"The Context this operation is in flight on, else None.",
        ),
        getset(
            c"payload",
            get_payload,
            c"The read buffer (memoryview) or the write payload.",
        ),
        crate::types::getset_end(),
    ]);
    TypeBuilder::new(
        name,
        std::mem::size_of::<OperationObject>(),
        std::mem::offset_of!(OperationObject, weakreflist),
    )
    .flags(
        ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION,
    )
    .slot(ffi::Py_tp_doc, doc.as_ptr() as _)
    .slot(ffi::Py_tp_dealloc, op_dealloc as *mut c_void)
    .slot(ffi::Py_tp_traverse, op_traverse as *mut c_void)
    .slot(ffi::Py_tp_clear, op_clear as *mut c_void)
    .slot(ffi::Py_tp_repr, op_repr as *mut c_void)
    .slot(ffi::Py_tp_methods, methods.cast())
    .slot(ffi::Py_tp_getset, getsets.cast())
    .build()
}
