//! Building heap types with `PyType_FromSpec`.

use std::ffi::CStr;
use std::os::raw::{c_int, c_uint, c_ulong, c_void};
use std::ptr;

use crate::error::{Error, Result};
use crate::ffi::{self, PyTypeObject};

/// Leaks a table the interpreter keeps pointers into for the life of the process
/// (method, getset, member and slot tables of types built once per process).
pub(crate) fn leak<T>(items: Vec<T>) -> *mut T {
    Box::leak(items.into_boxed_slice()).as_mut_ptr()
}

/// A method taking `(self, args, kwargs)`.
pub(crate) fn method_kw(
    name: &'static CStr,
    meth: ffi::PyCFunctionWithKeywords,
    flags: c_int,
    doc: &'static CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionWithKeywords: meth,
        },
        ml_flags: flags | ffi::METH_VARARGS | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }
}

/// A vectorcall method taking `(self, args, nargs, kwnames)`.
pub(crate) fn method_fast_kw(
    name: &'static CStr,
    meth: ffi::PyCFunctionFastWithKeywords,
    flags: c_int,
    doc: &'static CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: meth,
        },
        ml_flags: flags | ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }
}

/// A method taking `(self, arg)`: `METH_NOARGS`, `METH_O` or `METH_VARARGS`.
pub(crate) fn method(
    name: &'static CStr,
    meth: ffi::PyCFunction,
    flags: c_int,
    doc: &'static CStr,
) -> ffi::PyMethodDef {
    ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: meth },
        ml_flags: flags,
        ml_doc: doc.as_ptr(),
    }
}

/// A read-only property.
pub(crate) fn getset(
    name: &'static CStr,
    get: ffi::getter,
    doc: &'static CStr,
) -> ffi::PyGetSetDef {
    ffi::PyGetSetDef {
        name: name.as_ptr(),
        get: Some(get),
        set: None,
        doc: doc.as_ptr(),
        closure: ptr::null_mut(),
    }
}

/// The terminator of a getset table.
pub(crate) fn getset_end() -> ffi::PyGetSetDef {
    ffi::PyGetSetDef {
        name: ptr::null(),
        get: None,
        set: None,
        doc: ptr::null(),
        closure: ptr::null_mut(),
    }
}

/// Collects the pieces of a `PyType_Spec`.
pub(crate) struct TypeBuilder {
    name: &'static CStr,
    basicsize: usize,
    weaklistoffset: usize,
    flags: c_ulong,
    slots: Vec<ffi::PyType_Slot>,
}

impl TypeBuilder {
    /// `weaklistoffset` is where the instance keeps its weak-reference list.
    pub(crate) fn new(name: &'static CStr, basicsize: usize, weaklistoffset: usize) -> Self {
        Self {
            name,
            basicsize,
            weaklistoffset,
            flags: ffi::Py_TPFLAGS_DEFAULT,
            slots: Vec::new(),
        }
    }

    pub(crate) fn flags(mut self, flags: c_ulong) -> Self {
        self.flags = flags;
        self
    }

    pub(crate) fn slot(mut self, slot: c_int, pfunc: *mut c_void) -> Self {
        self.slots.push(ffi::PyType_Slot { slot, pfunc });
        self
    }

    /// Creates the type (a new reference).
    pub(crate) fn build(mut self) -> Result<*mut PyTypeObject> {
        let members = leak(vec![
            ffi::PyMemberDef {
                name: c"__weaklistoffset__".as_ptr(),
                type_code: ffi::Py_T_PYSSIZET,
                offset: self.weaklistoffset as ffi::Py_ssize_t,
                flags: ffi::Py_READONLY,
                doc: ptr::null(),
            },
            ffi::PyMemberDef::default(),
        ]);
        self.slots.push(ffi::PyType_Slot {
            slot: ffi::Py_tp_members,
            pfunc: members.cast(),
        });
        self.slots.push(ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        });
        let spec = Box::leak(Box::new(ffi::PyType_Spec {
            name: self.name.as_ptr(),
            basicsize: self.basicsize as c_int,
            itemsize: 0,
            flags: self.flags as c_uint,
            slots: leak(self.slots),
        }));
        // SAFETY: the spec and every table it points to are leaked, so they outlive the
        // type; GIL held during module exec.
        let ty = unsafe { ffi::PyType_FromSpec(spec) };
        if ty.is_null() {
            Err(Error::AlreadySet)
        } else {
            Ok(ty.cast())
        }
    }
}
