//! A completion applied to an op: its result fields, then `done`, then its callback.

use std::ptr;

use caio_backends::buffer::DirectMemory;
use caio_backends::{IoKind, IoRequest};
use caio_core::{Phase, RequestId};

use super::OpRef;
use crate::error::write_unraisable;
use crate::ffi::{self, PyOwned};

/// Reads no larger than this may run inline on the caller's thread when cached.
const INLINE_READ_MAX: usize = 64 * 1024;

/// Applies a completion to a claimed op and runs its callback, in caio's order: result
/// fields, drop the context, publish `done`, callback (exceptions go to
/// `sys.unraisablehook`), then release the reference the engine held (`op`).
///
/// `op` is one of our Operation objects, claimed (so in flight) and no longer touched by
/// any backend. `res` is bytes transferred or a negated errno. The GIL must be held.
pub(crate) fn deliver(op: PyOwned, res: i64) {
    // SAFETY: an Operation no backend touches any more, under the GIL (see above); the
    // reference lives until the end of this function.
    let (this, reported) = unsafe {
        let this = OpRef::of(&op);
        (this, finish_fields(this, res))
    };
    this.set_context(ptr::null_mut());
    this.state().finish();
    run_callback(this, reported);
    drop(op);
}

/// Records `res` in the op's fields (not yet published) and returns what `result` and the
/// callback report: `res` by the backend's convention, or a failure with `ENOMEM` if a
/// read's data could not be kept.
///
/// # Safety
/// `op` is claimed and no backend touches it any more. A read's buffer is a bytes object
/// only this op holds: Python is never handed it before the op is done (`get_value` and
/// `payload` build other objects until then, and `op_traverse` does not show it to the GC).
unsafe fn finish_fields(op: OpRef<'_>, mut res: i64) -> i64 {
    let fields = op.fields();
    let rules = op.behaviour();
    if fields.reads_into {
        settle_read_into(op, res);
    } else if fields.kind == IoKind::Read {
        // SAFETY: this function's contract.
        res = unsafe { settle_read_buffer(op, res) };
    }
    fields.request_id.set(RequestId::NONE.0);
    let reported = rules.reported(res);
    fields.result.set(reported);
    fields.error.set(if res < 0 { (-res) as i32 } else { 0 });
    match fields.kind {
        IoKind::Read => {
            if res >= 0 {
                fields.nbytes.set((res as usize).min(fields.requested));
            }
        }
        IoKind::Write | IoKind::WriteV | IoKind::ReadV => {
            // Reaped: the kernel is done with the memory (every buffer), the exporters may
            // change it again.
            drop(fields.direct.take());
            drop(fields.export.take());
            drop(fields.vectored.take());
            let is_read = fields.kind == IoKind::ReadV;
            if !is_read && rules.write_payload_dropped {
                drop(fields.buffer.take());
            }
            if res >= 0 && (is_read || rules.write_nbytes_is_written) {
                fields.nbytes.set((res as usize).min(fields.requested));
            }
        }
        IoKind::Fsync | IoKind::Fdsync => {}
    }
    reported
}

/// A read into the caller's buffer: copies the O_DIRECT bounce buffer in (if the kernel
/// did not use the caller's memory in place), then releases the export (the kernel is
/// done with the memory). The buffer holds what the kernel wrote (on failure: whatever it
/// wrote before failing, possibly nothing), the rest is untouched.
fn settle_read_into(op: OpRef<'_>, res: i64) {
    let fields = op.fields();
    let export = fields.export.take();
    if let (Some(export), Some(DirectMemory::Bounce(direct))) = (&export, fields.direct.take()) {
        let (base, len) = export.region();
        let got = (res.max(0) as usize).min(len).min(direct.len());
        // SAFETY: the kernel is done with the bounce buffer; the export is the caller's
        // writable memory of `len` bytes; the regions are distinct.
        unsafe { ptr::copy_nonoverlapping(direct.as_mut_ptr(), base, got) };
    }
    drop(export);
}

/// Leaves a read's buffer holding exactly the bytes the kernel wrote (none on failure):
/// the O_DIRECT bounce buffer is copied in, then the bytes object is cut to that length.
/// So Python only ever sees defined bytes, and the unused part of a generous bound is
/// neither zero-filled here, on the thread that delivers completions, nor kept: its
/// untouched pages go back to the OS. Returns `res`, or `-ENOMEM` if the memory for the
/// cut was lacking (the buffer is then empty: the data is lost).
///
/// # Safety
/// As for [`finish_fields`].
unsafe fn settle_read_buffer(op: OpRef<'_>, res: i64) -> i64 {
    let fields = op.fields();
    let Some(buffer) = fields.buffer.take() else {
        return res;
    };
    let (base, len) = super::bytes_data(buffer.as_ptr());
    let got = (res.max(0) as usize).min(len);
    // SAFETY: the kernel is done with both the bounce buffer and `buffer`, the op's bytes
    // object, which nobody else should hold (the function's contract); GIL held
    // (`OpRef`'s contract).
    unsafe {
        if let Some(DirectMemory::Bounce(direct)) = fields.direct.take() {
            // Both regions are at least `got` bytes long, and distinct.
            ptr::copy_nonoverlapping(direct.as_mut_ptr(), base, got);
        }
        if got == len {
            fields.buffer.replace(Some(buffer));
            return res;
        }
        if ffi::Py_REFCNT(buffer.as_ptr()) != 1 {
            // Unreachable by the contract; should a reference ever leak out, the bytes
            // cannot be resized under its holder, so only the tail is defined.
            ptr::write_bytes(base.add(got), 0, len - got);
            fields.buffer.replace(Some(buffer));
            return res;
        }
        let mut raw = buffer.into_ptr();
        if ffi::_PyBytes_Resize(&mut raw, got as ffi::Py_ssize_t) == 0 {
            fields.buffer.replace(PyOwned::from_new(raw));
            return res;
        }
        // The resize freed the buffer and raised MemoryError. No exception can surface
        // here: the op fails with ENOMEM instead, over an empty buffer.
        ffi::PyErr_Clear();
        let empty = ffi::PyBytes_FromStringAndSize(ptr::null(), 0);
        fields.buffer.replace(PyOwned::from_new(empty));
        -(libc::ENOMEM as i64)
    }
}

/// Calls the op's callback, if it has one, with `reported`; what it raises goes to
/// `sys.unraisablehook`.
fn run_callback(op: OpRef<'_>, reported: i64) {
    // A new reference, so a callback replacing itself (`set_callback`) cannot free it
    // mid-call.
    let Some(cb) = op.fields().callback.cloned() else {
        return;
    };
    // SAFETY: GIL held (`OpRef`'s contract); `cb` is a live object we hold and `value` a
    // new reference we own.
    unsafe {
        let Some(value) = PyOwned::from_new(ffi::PyLong_FromLongLong(reported)) else {
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
/// page cache (`preadv2(RWF_NOWAIT)`), or an unclaimed write that `write` runs (it
/// returns `None` for one it leaves to the backend), completing it (callback included).
/// A vectored read never runs here (`read_nowait` takes one byte range): the backend runs
/// it. Returns whether it completed; `false` leaves the op untouched for a normal submit.
/// GIL held: no one can claim the op between the I/O and `complete_inline`'s claim, so a
/// write that ran is never submitted again.
///
/// Only a linux_uring op can have a negative offset, and only -1 (see
/// [`NegativeOffset::FilePosition`](super::flavor::NegativeOffset::FilePosition)): there
/// `preadv2`'s "current position" is what io_uring does with it too.
pub(crate) fn run_inline(op: OpRef<'_>, write: impl FnOnce(&IoRequest) -> Option<i64>) -> bool {
    if op.phase() != Phase::New || op.is_direct() {
        return false;
    }
    if matches!(op.kind(), IoKind::Write | IoKind::WriteV) {
        return match write(&op.request()) {
            Some(res) => complete_inline(op, res),
            None => false,
        };
    }
    if op.kind() != IoKind::Read {
        return false;
    }
    // `read_nowait` is itself an RWF_NOWAIT read, so that flag changes nothing here
    // (the normal path reports its EAGAIN); any other would be dropped.
    if op.rw_flags() & !libc::RWF_NOWAIT != 0 {
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
fn complete_inline(op: OpRef<'_>, res: i64) -> bool {
    if !op.state().try_claim() {
        return false;
    }
    // SAFETY: we hold the claim and no backend ever had the op.
    let reported = unsafe { finish_fields(op, res) };
    op.state().finish();
    run_callback(op, reported);
    true
}
