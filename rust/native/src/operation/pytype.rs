//! The Operation type: its GC support and teardown, and the type built per backend.

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr;

use caio_backends::IoKind;

use super::flavor::Flavor;
use super::new::{op_fdsync, op_fsync, op_read, op_read_into, op_vectored, op_write};
use super::props::{get_property, op_get_value, op_repr, op_set_callback, Property};
use super::{OpRef, OperationObject};
use crate::error::Result;
use crate::ffi::{self, PyObject, PyTypeObject};

unsafe extern "C" fn op_traverse(
    slf: *mut PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the collector calls this with a live instance of our type and its visitor;
    // we visit only objects the op holds strong references to, and (heap types must) its
    // type. The engine's reference to an in-flight op is visited by the Context
    // (context.rs), never released by the GC (no Context tp_clear), so an op whose buffer
    // the kernel may still write is never freed, whatever the collector concludes.
    unsafe {
        let fields = OpRef::new(slf).fields();
        // A read's buffer is an exact bytes object (never GC-tracked, so in no cycle) that
        // the kernel or a worker may be writing: visiting it would hand it to Python
        // (`gc.get_referents`). Every other buffer is the caller's own object (a write's
        // payload, a read_into's target, a vectored op's tuple), which may refer back to
        // the op (a subclass with a `__dict__`), so it is visited, as is each export's
        // exporter (a strong reference too). Safe while in flight: op_clear never releases
        // the buffer or an export, so the memory stays alive and unresized until reaped.
        let buffer = if matches!(fields.kind, IoKind::Read) && !fields.reads_into {
            ptr::null_mut()
        } else {
            fields.buffer.ptr()
        };
        let ty = (*slf).ob_type.cast();
        let visit_one = |referent: *mut PyObject| {
            if referent.is_null() {
                0
            } else {
                visit(referent, arg)
            }
        };
        for referent in [fields.callback.ptr(), buffer, fields.context.ptr(), ty] {
            let r = visit_one(referent);
            if r != 0 {
                return r;
            }
        }
        let export = fields.export.take();
        let r = export
            .as_ref()
            .map_or(0, |export| visit_one(export.owner()));
        fields.export.set(export);
        if r != 0 {
            return r;
        }
        let vectored = fields.vectored.take();
        let r = vectored.as_ref().map_or(0, |vectored| {
            vectored
                .owners()
                .map(visit_one)
                .find(|&r| r != 0)
                .unwrap_or(0)
        });
        fields.vectored.set(vectored);
        r
    }
}

unsafe extern "C" fn op_clear(slf: *mut PyObject) -> c_int {
    // SAFETY: the collector calls this with a live instance of our type; GIL held.
    let op = unsafe { OpRef::new(slf) };
    // Only the callback goes: the buffer and the Context stay, so even an in-flight op the
    // collector found unreachable (the engine still holds it) keeps its buffer until its
    // completion.
    drop(op.fields().callback.take());
    0
}

/// Releases everything the op holds. Only for an op being freed: it is not in flight (the
/// engine owns a reference to an op in flight), so no kernel transfer uses this memory.
fn release_fields(op: OpRef<'_>) {
    let fields = op.fields();
    drop(fields.direct.take());
    drop(fields.export.take());
    drop(fields.vectored.take());
    for field in [
        &fields.callback,
        &fields.buffer,
        &fields.whole_payload,
        &fields.context,
    ] {
        drop(field.take());
    }
}

unsafe extern "C" fn op_dealloc(slf: *mut PyObject) {
    // SAFETY: called once by the interpreter when the refcount hits zero, with the GIL;
    // the op is used only before it is freed with the type's own `tp_free`.
    unsafe {
        let ty = (*slf).ob_type;
        ffi::PyObject_GC_UnTrack(slf.cast());
        let op = OpRef::new(slf);
        if !op.fields().weakreflist.get().is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        release_fields(op);
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(slf.cast());
        ffi::Py_DecRef(ty.cast());
    }
}

/// Builds an Operation heap type named `name` (e.g. `c"caio.thread_aio.Operation"`).
pub(crate) fn create_type(
    name: &'static CStr,
    doc: &'static CStr,
    flavor: Flavor,
) -> Result<*mut PyTypeObject> {
    match flavor {
        Flavor::Thread => create_type_of::<{ Flavor::Thread as u8 }>(name, doc),
        Flavor::Uring => create_type_of::<{ Flavor::Uring as u8 }>(name, doc),
        Flavor::Aio => create_type_of::<{ Flavor::Aio as u8 }>(name, doc),
    }
}

fn create_type_of<const FLAVOR: u8>(
    name: &'static CStr,
    doc: &'static CStr,
) -> Result<*mut PyTypeObject> {
    use crate::types::{getset, leak, method, method_fast_kw, method_kw, TypeBuilder};
    let methods = leak(vec![
        method_fast_kw(
            c"read",
            op_read::<FLAVOR>,
            ffi::METH_CLASS,
            c"read(nbytes, fd, offset=0, priority=0) -> Operation",
        ),
        method_kw(
            c"read_into",
            op_read_into::<FLAVOR>,
            ffi::METH_CLASS,
            c"read_into(buffer, fd, offset=0, priority=0) -> Operation: read into a writable buffer (its whole size), no copy; get_value() is the number of bytes read.",
        ),
        method_kw(
            c"write",
            op_write::<FLAVOR>,
            ffi::METH_CLASS,
            c"write(payload_bytes, fd, offset=0, priority=0) -> Operation",
        ),
        method_kw(
            c"readv",
            op_vectored::<FLAVOR, false>,
            ffi::METH_CLASS,
            c"readv(buffers, fd, offset=0, priority=0, *, flags=0) -> Operation: one read into a sequence of writable buffers, filled in order, no copy; get_value() is the number of bytes read.",
        ),
        method_kw(
            c"writev",
            op_vectored::<FLAVOR, true>,
            ffi::METH_CLASS,
            c"writev(buffers, fd, offset=0, priority=0, *, flags=0) -> Operation: one write from a sequence of buffers, in order, no copy; get_value() is the number of bytes written.",
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
        getset(
            c"fileno",
            get_property::<{ Property::Fileno as u8 }>,
            c"The file descriptor.",
        ),
        getset(
            c"offset",
            get_property::<{ Property::Offset as u8 }>,
            c"The file offset.",
        ),
        getset(
            c"nbytes",
            get_property::<{ Property::Nbytes as u8 }>,
            c"Requested size; for a completed read, bytes read.",
        ),
        getset(
            c"result",
            get_property::<{ Property::Result as u8 }>,
            c"The syscall's return value (-1 on failure).",
        ),
        getset(
            c"error",
            get_property::<{ Property::Error as u8 }>,
            c"errno of a failed operation, else 0.",
        ),
        getset(
            c"priority",
            get_property::<{ Property::Priority as u8 }>,
            c"The I/O priority given at construction (kept for linux_aio's aio_reqprio).",
        ),
        getset(
            c"context",
            get_property::<{ Property::Context as u8 }>,
            c"The Context this operation is in flight on, else None.",
        ),
        getset(
            c"payload",
            get_property::<{ Property::Payload as u8 }>,
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
