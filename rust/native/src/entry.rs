//! What a driver carries for a Python Operation: the claim on it, with the strong
//! reference held on the kernel's behalf.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use caio_backends::{Entry, IoRequest};
use caio_core::RequestId;

use crate::ffi::{PyObject, PyOwned};
use crate::operation::{self, OpRef};

/// A claimed Operation in flight on one Context. Made by [`OpEntry::claim`], it either
/// completes ([`OpEntry::complete`], which delivers the result and runs the callback) or,
/// dropped, undoes the claim: the op gets no Context and no request id, and can be
/// submitted again. Both need the GIL; a driver never drops an entry it accepted (see
/// [`Entry`]), so a drop only happens to entries a driver refused.
pub(crate) struct OpEntry {
    op: ManuallyDrop<PyOwned>,
}

impl OpEntry {
    /// Claims `obj` for the Context `ctx` under a fresh request id (recorded in the op,
    /// where a cancel finds it); `None` if the op was claimed before (it is then left
    /// alone, as caio did).
    ///
    /// # Safety
    /// `obj` is a live instance of one of our Operation types and `ctx` a live Context;
    /// the GIL is held.
    pub(crate) unsafe fn claim(obj: *mut PyObject, ctx: *mut PyObject) -> Option<Self> {
        // SAFETY: see the function's contract.
        let op = unsafe { OpRef::new(obj) };
        if !op.state().try_claim() {
            return None;
        }
        op.set_context(ctx);
        op.set_request_id(RequestId::fresh().0);
        // SAFETY: live object (contract), GIL held.
        let held = unsafe { PyOwned::from_borrowed(NonNull::new_unchecked(obj)) };
        Some(Self {
            op: ManuallyDrop::new(held),
        })
    }

    fn op(&self) -> OpRef<'_> {
        // SAFETY: the entry holds a strong reference to one of our Operation objects; every
        // caller holds the GIL (see the `Entry` impl below).
        unsafe { OpRef::of(&self.op) }
    }

    /// The request id this entry was claimed under.
    pub(crate) fn id(&self) -> RequestId {
        RequestId(self.op().request_id())
    }

    /// The Operation object (for the garbage collector's traversal).
    pub(crate) fn as_ptr(&self) -> *mut PyObject {
        self.op.as_ptr()
    }

    /// Delivers `res` (bytes transferred or a negated errno): the op's fields, its
    /// callback, then the kernel's reference is released. GIL held.
    pub(crate) fn complete(self, res: i64) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; the reference moves on.
        let op = unsafe { ManuallyDrop::take(&mut this.op) };
        operation::deliver(op, res);
    }
}

impl Drop for OpEntry {
    fn drop(&mut self) {
        // Refused: the request never started. GIL held (type docs).
        self.op().unclaim();
        // SAFETY: dropped once, here.
        drop(unsafe { ManuallyDrop::take(&mut self.op) });
    }
}

// SAFETY: the op owns its buffer (a bytes object, or aligned memory for O_DIRECT) until
// it is delivered: the buffer never moves (the entry only points at it), Python cannot
// reach a read's buffer while the op is in flight (`get_value`/`payload` refuse, the GC is
// not shown it), a write's payload is immutable bytes, and the op itself stays alive
// because the entry holds a strong reference to it. An entry moves between threads
// without touching Python; `complete` and `drop` need the GIL (see the type's docs), and
// drivers ask `request`, `is_direct` and `priority` only in `dispatch`, which the bridge
// calls with the GIL held.
unsafe impl Entry for OpEntry {
    fn request(&self) -> IoRequest {
        self.op().request()
    }

    fn is_direct(&self) -> bool {
        self.op().is_direct()
    }

    fn priority(&self) -> i16 {
        self.op().priority()
    }
}
