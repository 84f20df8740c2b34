//! The CPython C-API surface we use, and owned references on top of it.
//!
//! Everything that touches a `PyObject*` goes through this module or the type modules
//! beside it; the core and the backends never see one.

mod compat;
mod owned;

pub(crate) use compat::is_finalizing;
pub(crate) use owned::PyOwned;
pub(crate) use pyo3_ffi::{
    freefunc, getter, visitproc, PyArg_ParseTupleAndKeywords, PyBUF_SIMPLE, PyBUF_WRITABLE,
    PyBuffer_Release, PyBytes_AsString, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_Size,
    PyBytes_Type, PyCFunction, PyCFunctionWithKeywords, PyCFunction_New, PyCallable_Check,
    PyErr_CheckSignals, PyErr_Fetch, PyErr_Occurred, PyErr_SetObject, PyErr_SetString,
    PyErr_WriteUnraisable, PyEval_RestoreThread, PyEval_SaveThread, PyExc_AttributeError,
    PyExc_BlockingIOError, PyExc_MemoryError, PyExc_NotImplementedError, PyExc_OSError,
    PyExc_OverflowError, PyExc_RuntimeError, PyExc_SystemError, PyExc_TypeError, PyExc_ValueError,
    PyGILState_Ensure, PyGILState_Release, PyGILState_STATE, PyGetSetDef, PyLong_FromLongLong,
    PyLong_FromUnsignedLongLong, PyMemberDef, PyMemoryView_FromObject, PyMethodDef,
    PyMethodDefPointer, PyModuleDef, PyModuleDef_HEAD_INIT, PyModuleDef_Init, PyModuleDef_Slot,
    PyModule_AddObjectRef, PyObject, PyObject_CallObject, PyObject_CallOneArg,
    PyObject_CheckBuffer, PyObject_ClearWeakRefs, PyObject_GC_UnTrack, PyObject_GetBuffer,
    PyObject_Repr, PySequence_Check, PySequence_Tuple, PyTuple_GetItem, PyTuple_New,
    PyTuple_SetItem, PyTuple_Size, PyTypeObject, PyType_FromSpec, PyType_GenericAlloc,
    PyType_GetSlot, PyType_Slot, PyType_Spec, PyUnicode_AsUTF8AndSize, PyUnicode_FromStringAndSize,
    Py_DecRef, Py_False, Py_IncRef, Py_None, Py_READONLY, Py_TPFLAGS_DEFAULT,
    Py_TPFLAGS_DISALLOW_INSTANTIATION, Py_TPFLAGS_HAVE_GC, Py_TYPE, Py_T_PYSSIZET, Py_True,
    Py_buffer, Py_mod_exec, Py_ssize_t, Py_tp_clear, Py_tp_dealloc, Py_tp_doc, Py_tp_free,
    Py_tp_getset, Py_tp_members, Py_tp_methods, Py_tp_new, Py_tp_repr, Py_tp_traverse, METH_CLASS,
    METH_KEYWORDS, METH_NOARGS, METH_O, METH_VARARGS,
};

// Used by the error mapping and the read buffers.
pub(crate) use pyo3_ffi::{
    _PyBytes_Resize, PyErr_Clear, PyImport_ImportModule, PyObject_GetAttrString, Py_REFCNT,
};

// Vectorcall methods (`Operation.read`), and the arguments they convert themselves.
pub(crate) use pyo3_ffi::{
    PyCFunctionFastWithKeywords, PyDict_New, PyDict_SetItem, PyLong_CheckExact, METH_FASTCALL,
};

// Integer conversions that no PyArg_Parse format expresses (operation offsets).
pub(crate) use pyo3_ffi::{
    PyLong_AsLongLong, PyLong_AsLongLongAndOverflow, PyNumber_Index, PyObject_HasAttrString,
    PyObject_RichCompareBool, Py_EQ, Py_tp_finalize,
};

// A vectored op takes at most IOV_MAX + 1 items of a sequence, whatever its length.
pub(crate) use pyo3_ffi::{
    PyErr_ExceptionMatches, PyIter_Next, PyList_CheckExact, PyObject_GetIter, PySequence_Size,
    PyTuple_CheckExact,
};

// `caio.direct_alignment(fd)` takes an fd or an object with `fileno()`.
pub(crate) use pyo3_ffi::PyObject_AsFileDescriptor;

#[cfg(Py_3_13)]
pub(crate) use pyo3_ffi::{Py_MOD_GIL_USED, Py_mod_gil};
#[cfg(Py_3_12)]
pub(crate) use pyo3_ffi::{
    Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED, Py_mod_multiple_interpreters,
};
