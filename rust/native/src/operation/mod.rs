//! The Operation object: one read, write, readv, writev, fsync or fdsync, with the
//! buffers it owns.
//!
//! Life: built by a classmethod (`read`, `write`, ...), claimed once by a Context's
//! `submit`, completed by [`deliver`] on whichever thread the backend reports on.
//! While in flight the kernel or a worker writes into `buffer`, so nothing hands that
//! object to Python until the op is done: `get_value()`/`payload` raise meanwhile.
//!
//! - [`flavor`]: the one table of what differs between backends.
//! - [`new`]: the classmethods that build an op.
//! - [`complete`]: a completion applied to the op, then its callback.
//! - [`props`]: `get_value`, `set_callback`, the properties and `repr`.
//! - [`pytype`]: GC support, teardown, and the type itself.

mod complete;
mod export;
mod flavor;
mod new;
mod props;
mod pytype;

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use caio_backends::buffer::DirectMemory;
use caio_backends::{IoKind, IoRequest};
use caio_core::{OpState, Phase, RequestId};

use crate::error::repr_of;
use crate::ffi::{self, PyObject, PyOwned};

pub(crate) use complete::{deliver, run_inline};
pub(crate) use flavor::Flavor;
pub(crate) use pytype::create_type;

/// The instance layout shared by every backend's Operation type.
///
/// Fields set at construction are plain; every field that changes later is a `Cell` (or
/// an atomic), so the shared references [`OpRef`] hands out stay sound while Python code
/// run from a callback or a finaliser reaches the same op through another reference.
#[repr(C)]
struct OperationObject {
    /// The interpreter changes the refcount behind our back, hence the cell.
    ob_base: UnsafeCell<PyObject>,
    weakreflist: Cell<*mut PyObject>,
    state: OpState,
    flavor: Flavor,
    kind: IoKind,
    /// A read into the caller's buffer (`read_into`): `buffer` is the caller's object,
    /// `export` its memory, and `get_value()` the count.
    reads_into: bool,
    fd: u32,
    offset: i64,
    /// Requested size; for a completed read, the bytes actually read.
    nbytes: Cell<usize>,
    /// The size the op was built with (a completed read's buffer holds only what was read).
    requested: usize,
    /// What `result` shows: bytes transferred, 0, or the backend's failed value
    /// ([`flavor::FailedResult`]).
    result: Cell<i64>,
    /// errno of a failed op, else 0.
    error: Cell<i32>,
    /// Reads: the `bytes` object the data lands in, always an exact bytes object (never
    /// handed to Python before the op is done; not visited by the GC, see `op_traverse`).
    /// Writes: the caller's payload, until a backend drops it on completion. Else NULL.
    buffer: ObjectField,
    /// A done short read's `payload` (the whole requested size, zero tail included), built
    /// on first access and kept so that each access returns the same object, else NULL.
    whole_payload: ObjectField,
    callback: ObjectField,
    /// The Context this op is in flight on (a strong reference), else NULL.
    context: ObjectField,
    /// The request id while in flight (what a cancel targets), else `RequestId::NONE`.
    request_id: Cell<u64>,
    /// A write whose payload is not `bytes`: the export of its memory, held until the
    /// completion is reaped (the exporter cannot resize or free it meanwhile).
    export: Cell<Option<export::Export>>,
    /// A vectored op (`readv`/`writev`): its buffers' exports and the iovec array over
    /// them, held until the completion is reaped (`buffer` is then the tuple of buffers).
    vectored: Cell<Option<export::Vectored>>,
    /// For a file opened with `O_DIRECT` (else None): the caller's aligned memory is used
    /// in place, or a bounce buffer is what the kernel transfers (a write's payload is
    /// copied in; a read's data is copied out on completion).
    direct: Cell<Option<DirectMemory>>,
    priority: i16,
    /// A read's or write's `RWF_*` flags (checked at construction), else 0.
    rw_flags: i32,
}

impl OperationObject {
    /// The buffer's `(data, size)`: a read's destination, a write's payload while it has
    /// one, `(NULL, 0)` for a sync.
    fn buffer_data(&self) -> (*mut u8, usize) {
        let export = self.export.take();
        let region = export.as_ref().map(export::Export::region);
        self.export.set(export);
        match region {
            Some(region) => region,
            // A read into the caller's buffer whose export is released (done): not ours
            // to describe any more, and not a bytes object.
            None if self.reads_into => (ptr::null_mut(), 0),
            None => bytes_data(self.buffer.ptr()),
        }
    }

    /// A vectored op's `(iovec array, count)`, while it holds its buffers.
    fn vectored_region(&self) -> Option<(*mut u8, usize)> {
        let vectored = self.vectored.take();
        let region = vectored.as_ref().map(export::Vectored::request_region);
        self.vectored.set(vectored);
        region
    }

    /// The `O_DIRECT` bounce buffer as `(data, size)`, if the op has one.
    fn direct_region(&self) -> Option<(*mut u8, usize)> {
        let direct = self.direct.take();
        let region = match &direct {
            Some(DirectMemory::Bounce(d)) => Some((d.as_mut_ptr(), d.len())),
            _ => None,
        };
        self.direct.set(direct);
        region
    }

    /// Whether the descriptor is open with `O_DIRECT` (until a completion is applied).
    fn is_direct(&self) -> bool {
        let direct = self.direct.take();
        let is_direct = direct.is_some();
        self.direct.set(direct);
        is_direct
    }
}

/// A borrowed reference to an Operation of one of our types, valid for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct OpRef<'a> {
    obj: NonNull<OperationObject>,
    _borrow: PhantomData<&'a OperationObject>,
}

impl<'a> OpRef<'a> {
    /// # Safety
    /// `obj` is a live instance of an Operation type built by [`create_type`], alive for
    /// all of `'a`, and the reference is used on a thread holding the GIL.
    pub(crate) unsafe fn new(obj: *mut PyObject) -> Self {
        Self {
            // SAFETY: non-NULL by the caller's contract (a live object).
            obj: unsafe { NonNull::new_unchecked(obj.cast()) },
            _borrow: PhantomData,
        }
    }

    /// The op behind a strong reference, borrowed for as long as that reference is.
    ///
    /// # Safety
    /// `op` refers to an instance of an Operation type built by [`create_type`]; GIL held.
    pub(crate) unsafe fn of(op: &'a PyOwned) -> Self {
        // SAFETY: a strong reference keeps the object alive for `'a`; the type and the GIL
        // by the caller's contract.
        unsafe { Self::new(op.as_ptr()) }
    }

    /// Every field access goes through here: sound for all of `'a` by `new`'s contract
    /// (the object lives that long; what changes after construction is a `Cell`, an
    /// atomic, or the interpreter's header in an `UnsafeCell`, and the GIL serialises it).
    fn fields(self) -> &'a OperationObject {
        // SAFETY: see above.
        unsafe { self.obj.as_ref() }
    }

    fn behaviour(self) -> &'static flavor::Behaviour {
        self.fields().flavor.behaviour()
    }

    pub(crate) fn phase(self) -> Phase {
        self.fields().state.phase()
    }

    pub(crate) fn state(&self) -> &OpState {
        &self.fields().state
    }

    pub(crate) fn set_request_id(self, id: u64) {
        self.fields().request_id.set(id)
    }

    pub(crate) fn request_id(self) -> u64 {
        self.fields().request_id.get()
    }

    pub(crate) fn is_direct(self) -> bool {
        self.fields().is_direct()
    }

    pub(crate) fn priority(self) -> i16 {
        self.fields().priority
    }

    pub(crate) fn rw_flags(self) -> i32 {
        self.fields().rw_flags
    }

    pub(crate) fn context(self) -> *mut PyObject {
        self.fields().context.ptr()
    }

    pub(crate) fn kind(self) -> IoKind {
        self.fields().kind
    }

    /// The request a backend runs for this op. Its buffer pointer stays valid while the op
    /// is alive and holds `buffer` (which it does until it is done).
    pub(crate) fn request(self) -> IoRequest {
        let op = self.fields();
        let (buf, len) = op
            .vectored_region()
            .or_else(|| op.direct_region())
            .unwrap_or_else(|| op.buffer_data());
        IoRequest {
            kind: op.kind,
            fd: op.fd as i32,
            offset: op.offset,
            buf,
            len,
            rw_flags: op.rw_flags,
        }
    }

    /// Undoes a claim whose request never started: no Context, no request id, and the op
    /// can be submitted again.
    pub(crate) fn unclaim(self) {
        self.set_context(ptr::null_mut());
        self.set_request_id(RequestId::NONE.0);
        self.state().rollback();
    }

    /// Sets (or clears, with NULL) the Context this op is in flight on. `ctx` is NULL or a
    /// live object: callers pass the Context they run in.
    pub(crate) fn set_context(self, ctx: *mut PyObject) {
        // SAFETY: a live object (see above); GIL held (`OpRef`'s contract).
        let new = NonNull::new(ctx).map(|ctx| unsafe { PyOwned::from_borrowed(ctx) });
        // The new reference is taken before the old one is released (whose finaliser may
        // run code), so setting the same object twice is fine.
        drop(self.fields().context.replace(new));
    }
}

/// A field that holds a strong reference, or nothing (NULL in C's eyes: same layout).
#[repr(transparent)]
struct ObjectField(Cell<Option<PyOwned>>);

impl ObjectField {
    fn new(value: Option<PyOwned>) -> Self {
        Self(Cell::new(value))
    }

    /// The object, borrowed from the field, or NULL.
    fn ptr(&self) -> *mut PyObject {
        let value = self.0.take();
        let ptr = value.as_ref().map_or(ptr::null_mut(), PyOwned::as_ptr);
        self.0.set(value);
        ptr
    }

    /// A new strong reference to the object.
    fn cloned(&self) -> Option<PyOwned> {
        let value = self.0.take();
        let copy = value.clone();
        self.0.set(value);
        copy
    }

    /// Stores `value` and hands back what was there, for the caller to release when
    /// nothing refers to the field any more (a release may run arbitrary code).
    fn replace(&self, value: Option<PyOwned>) -> Option<PyOwned> {
        self.0.replace(value)
    }

    fn take(&self) -> Option<PyOwned> {
        self.0.take()
    }
}

/// A bytes object's `(data, size)`; `(NULL, 0)` for NULL.
fn bytes_data(obj: *mut PyObject) -> (*mut u8, usize) {
    if obj.is_null() {
        return (ptr::null_mut(), 0);
    }
    // SAFETY: every caller passes a live bytes object the op holds (a read's buffer, a
    // write's payload: checked by `write`), under the GIL (`OpRef`'s contract). Neither
    // call touches the data, which the kernel may be writing.
    unsafe {
        (
            ffi::PyBytes_AsString(obj).cast::<u8>(),
            ffi::PyBytes_Size(obj) as usize,
        )
    }
}

/// The name of `obj`'s type, as `repr(type(obj))`.
fn type_name(obj: *mut PyObject) -> String {
    // SAFETY: live object; `ob_type` is always set; GIL held.
    let ty = unsafe { (*obj).ob_type };
    repr_of(ty.cast())
}
