"""Pure-Python backend: file operations run on a ``multiprocessing.pool.ThreadPool``.

Works wherever Python runs. Completion callbacks are invoked on the pool's
result-handler thread with the syscall result (bytes read or written, ``None`` for
fsync/fdsync) or ``None`` on failure; the failure itself is re-raised by
``Operation.get_value()``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import itertools
import operator
import os
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence, Sized
from enum import IntEnum, unique
from functools import partial
from multiprocessing.pool import ThreadPool
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, SupportsIndex, cast

from ._rwflags import check_rw_flags
from ._streams import is_stream
from .abstract import AbstractContext, AbstractOperation
from .errors import operation_error

if TYPE_CHECKING:
    from typing_extensions import Buffer

fdsync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
NATIVE_PREAD_PWRITE: bool = hasattr(os, "pread") and hasattr(os, "pwrite")
# Per-operation flags go to preadv2/pwritev2, which os.preadv/os.pwritev call on Linux.
_RW_FLAGS_SUPPORTED: bool = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


@unique
class OpCode(IntEnum):
    READ = 0
    WRITE = 1
    FSYNC = 2
    FDSYNC = 3
    READV = 4
    WRITEV = 5
    NOOP = -1


# (a frozenset: an int or an OpCode is looked up without building an OpCode)
_VECTORED_OPCODES = frozenset({OpCode.READV, OpCode.WRITEV})


@unique
class ContextState(IntEnum):
    OPEN = 0
    CLOSING = 1
    CLOSED = 2


# Bumped in a child after fork(): a Context compares it with the value it was created
# under, which costs less per operation than asking the OS for the pid.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _describe(obj: object) -> str:
    """repr() for error messages, without building huge strings for big buffers."""
    if isinstance(obj, (bytes, bytearray, memoryview, str)) and len(obj) > 64:
        return f"<{type(obj).__name__} of length {len(obj)}>"
    return repr(obj)


def _report_callback_error(exc: BaseException) -> None:
    args = threading.ExceptHookArgs(
        (type(exc), exc, exc.__traceback__, threading.current_thread()),
    )
    try:
        threading.excepthook(args)
    except BaseException:  # noqa: BLE001 - a failing hook must not stop delivery either
        with contextlib.suppress(BaseException):
            traceback.print_exc()


class Context(AbstractContext):
    """python aio context implementation.

    Runs every operation on a thread pool of ``pool_size`` threads and accepts at
    most ``max_requests`` operations in flight at once.
    """

    MAX_POOL_SIZE = 128

    def __init__(self, max_requests: int = 32, pool_size: int = 8) -> None:
        # First of all, so that __del__/close() on a half-built object is a no-op.
        self._state = ContextState.CLOSED

        if not 0 < pool_size < self.MAX_POOL_SIZE:
            raise ValueError(
                f"pool_size must be between 1 and {self.MAX_POOL_SIZE - 1}, "
                f"got {pool_size!r}",
            )
        if max_requests <= 0:
            raise ValueError(
                f"max_requests must be a positive integer, got {max_requests!r}",
            )

        self.__max_requests = max_requests
        self._in_progress = 0
        self._lock = threading.Lock()

        if not NATIVE_PREAD_PWRITE:
            # Without positional I/O a read/write is seek + read/write, which must
            # not interleave with another operation on the same descriptor.
            self._fd_locks: dict[int, threading.RLock] = {}
            self._fd_locks_guard = threading.Lock()

        self.pool = ThreadPool(pool_size)
        # The pool's threads do not survive fork(): a child must create its own Context.
        self._pid = os.getpid()
        self._fork_generation = _fork_generation
        self._state = ContextState.OPEN

    @property
    def max_requests(self) -> int:
        return self.__max_requests

    # --- submission ------------------------------------------------------------

    def submit(self, *aio_operations: Any) -> int:
        for operation in aio_operations:
            if not isinstance(operation, Operation):
                # ValueError (the C backends raise TypeError): part of the contract.
                raise ValueError(f"Invalid Operation {_describe(operation)}")  # noqa: TRY004

        accepted = 0
        for operation in aio_operations:
            if self._execute(operation):
                accepted += 1
        return accepted

    def _execute(self, operation: Operation) -> bool:
        """Claim ``operation`` and hand it to the pool.

        Returns False when the operation was claimed before (it is then left alone).
        """
        handler = self._OP_MAP[operation.opcode]

        with operation._lock, self._lock:
            if operation.in_progress:
                return False
            if self._state != ContextState.OPEN:
                raise RuntimeError("Context is closed")
            if self._fork_generation != _fork_generation and self._pid != os.getpid():
                raise RuntimeError(
                    f"this Context was created in process {self._pid}; a Context cannot "
                    "be used after fork(), create a new one in the child",
                )
            if self._in_progress >= self.__max_requests:
                raise RuntimeError("Maximum simultaneous requests have been reached")
            operation.in_progress = True
            operation.context = self
            self._in_progress += 1

        try:
            self.pool.apply_async(
                _run_unless_cancelled,
                (handler, self, operation),
                callback=partial(self._on_success, operation),
                error_callback=partial(self._on_error, operation),
            )
        except BaseException:
            self._rollback_claim(operation)
            raise
        return True

    def _rollback_claim(self, operation: Operation) -> None:
        """Undo a claim for an operation that never reached the pool."""
        with operation._lock, self._lock:
            operation.in_progress = False
            operation.context = None
            self._in_progress -= 1

    # --- completion (ThreadPool result-handler thread) ---------------------------

    # The operation's slot (``_in_progress``) is freed only here, once its task has really
    # ended, cancelled or not: until then the pool still holds it.

    def _on_success(self, operation: Operation, result: Any) -> None:
        with self._lock:
            self._in_progress -= 1
        operation.written = result
        operation.context = None
        self._invoke_callback(operation, result)

    def _on_error(self, operation: Operation, exc: BaseException) -> None:
        with self._lock:
            self._in_progress -= 1
        # A failed system call raises the same exception as on the native backends.
        operation.exception = operation_error(exc) if isinstance(exc, OSError) else exc
        # The traceback's frames (the worker's handlers) hold this Context and the op: let
        # go of their locals, so a failed op kept by the caller does not keep the pool.
        traceback.clear_frames(operation.exception.__traceback__)
        operation._release_views()  # a cancelled read_into/vectored op never ran its handler
        operation.written = 0
        operation.context = None
        self._invoke_callback(operation, None)

    def _invoke_callback(self, operation: Operation, result: Any) -> None:
        # One attribute read (as set_callback's one store) is atomic: no lock on this
        # thread, which runs every completion in turn.
        callback = operation.callback
        if callback is None:
            return
        try:
            callback(result)
        except BaseException as exc:  # noqa: BLE001
            # An exception escaping here would kill the pool's result-handler thread
            # and with it every later completion: report it like an uncaught
            # exception in a thread instead.
            _report_callback_error(exc)

    # --- handlers (pool worker threads) -------------------------------------------

    def _fd_lock(self, fd: int) -> threading.RLock:
        with self._fd_locks_guard:
            lock = self._fd_locks.get(fd)
            if lock is None:
                lock = self._fd_locks[fd] = threading.RLock()
            return lock

    # A descriptor without a file position (pipe, FIFO, socket) refuses pread/pwrite and
    # lseek with ESPIPE; at offset 0 the request then means "the next bytes", as io_uring
    # and kernel AIO treat it, and runs as a plain read/write.

    def _pread(self, fd: int, size: int, offset: int) -> bytes:
        if NATIVE_PREAD_PWRITE:
            # `_transfer` without its two partials: this is the path of every read.
            try:
                return os.pread(fd, size, offset)
            except OSError:
                _reraise_unless_stream_start(fd, offset)
            return os.read(fd, size)
        return self._transfer(
            fd, offset, partial(os.pread, fd, size, offset), partial(os.read, fd, size),
        )

    def _pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if NATIVE_PREAD_PWRITE:
            try:
                return os.pwrite(fd, data, offset)
            except OSError:
                _reraise_unless_stream_start(fd, offset)
            return os.write(fd, data)
        return self._transfer(
            fd, offset, partial(os.pwrite, fd, data, offset), partial(os.write, fd, data),
        )

    def _transfer(
        self, fd: int, offset: int, positional: Callable[[], Any], plain: Callable[[], Any],
    ) -> Any:
        """``positional`` (pread/pwrite) where the OS has it, else ``plain`` at ``offset``
        under the fd's lock; ``plain`` alone on a stream at offset 0."""
        try:
            if NATIVE_PREAD_PWRITE:
                return positional()
            with self._fd_lock(fd):
                os.lseek(fd, offset, os.SEEK_SET)
                return plain()
        except OSError:
            _reraise_unless_stream_start(fd, offset)
        return plain()

    def _preadv(self, fd: int, into: memoryview, offset: int, flags: int) -> int:
        # With flags, a stream's "next bytes" is preadv2's offset -1 (readv takes none).
        plain = partial(os.preadv, fd, [into], -1, flags) if flags else partial(os.readv, fd, [into])
        count: int = self._transfer(fd, offset, partial(os.preadv, fd, [into], offset, flags), plain)
        return count

    def _handle_read(self, operation: Operation) -> int:
        fd, offset, flags = operation._fileno, operation._offset, operation._rw_flags
        if operation._target is not None:  # read_into: its one view, released once run
            try:
                count = self._preadv(fd, operation._views[0], offset, flags)
            finally:
                operation._release_views()
            operation.buffer = count
            return count
        if flags:
            buffer = bytearray(operation._nbytes)
            with memoryview(buffer) as view:
                count = self._preadv(fd, view, offset, flags)
                data = bytes(view[:count])
        else:
            data = self._pread(fd, operation._nbytes, offset)
        operation.buffer = data
        return len(data)

    def _handle_write(self, operation: Operation) -> int:
        fd, data, offset, flags = (
            operation._fileno, operation.buffer, operation._offset, operation._rw_flags,
        )
        if flags:
            count: int = self._transfer(
                fd, offset,
                partial(os.pwritev, fd, [data], offset, flags),
                partial(os.pwritev, fd, [data], -1, flags),
            )
            return count
        return self._pwrite(fd, data, offset)

    def _handle_vectored(self, operation: Operation) -> int:
        fd, offset, flags = operation._fileno, operation._offset, operation._rw_flags
        views = operation._views
        # One preadv2/pwritev2 call (its result as it is, like the native backends'); a
        # stream's "next bytes" is offset -1 there.
        call = os.preadv if operation.opcode == OpCode.READV else os.pwritev
        try:
            count: int = self._transfer(
                fd, offset, partial(call, fd, views, offset, flags),
                partial(call, fd, views, -1, flags),
            )
        finally:
            operation._release_views()
        return count

    def _handle_fsync(self, operation: Operation) -> None:
        os.fsync(operation._fileno)

    def _handle_fdsync(self, operation: Operation) -> None:
        fdsync(operation._fileno)

    def _handle_noop(self, operation: Operation) -> None:
        return None

    _OP_MAP: MappingProxyType[OpCode, Callable[[Context, Operation], Any]] = MappingProxyType({
        OpCode.READ: _handle_read,
        OpCode.WRITE: _handle_write,
        OpCode.FSYNC: _handle_fsync,
        OpCode.FDSYNC: _handle_fdsync,
        OpCode.READV: _handle_vectored,
        OpCode.WRITEV: _handle_vectored,
        OpCode.NOOP: _handle_noop,
    })

    # --- the rest of the Context API ----------------------------------------------

    def cancel(self, *aio_operations: Any) -> int:
        """Cancel operations of this Context that no pool thread has started yet.

        A cancelled operation never runs: when the pool reaches it, it completes with
        ``OSError(ECANCELED)`` (its callback gets None, ``get_value()`` raises) and only
        then gives its place in ``max_requests`` back. A running one cannot be stopped and
        completes normally. Accepts anything, as caio does (other objects are ignored);
        returns how many operations were cancelled.
        """
        cancelled = 0
        for operation in aio_operations:
            if not isinstance(operation, Operation):
                continue
            with operation._lock:
                if operation.context is self and _take_run_token(operation):
                    cancelled += 1
        return cancelled

    def close(self) -> None:
        """Stop accepting operations. Already queued ones still run (no join)."""
        if self._state != ContextState.OPEN:
            return
        with self._lock:
            if self._state != ContextState.OPEN:
                return
            self._state = ContextState.CLOSING
            self.pool.close()
            self._state = ContextState.CLOSED

    def __del__(self) -> None:
        self.close()


def _reraise_unless_stream_start(fd: int, offset: int) -> None:
    """In an ``except OSError``: re-raises it unless ``fd`` is a stream and ``offset`` 0
    (then the caller runs the plain read/write)."""
    if offset != 0 or not is_stream(fd):
        raise  # noqa: PLE0704 (the error being handled by the caller)


def _take_run_token(operation: Operation) -> bool:
    """Whether this caller took the operation's one run token: the pool thread that is to
    run it, or a cancel() before that (then it never runs). ``list.pop`` is atomic, so
    exactly one of them gets it, without a lock on the pool thread's path."""
    try:
        operation._run_token.pop()
    except IndexError:
        return False
    return True


def _run_unless_cancelled(
    handler: Callable[[Context, Operation], Any], context: Context, operation: Operation,
) -> Any:
    """Runs on a pool thread: the handler, unless the operation was cancelled first."""
    if not _take_run_token(operation):
        raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
    return handler(context, operation)


def _check_payload(payload: object) -> int:
    """The size in bytes of a write's payload: ``bytes`` or any object exporting one
    contiguous buffer (bytearray, memoryview, mmap, array); ``ValueError`` for anything
    else, as caio raised for non-bytes, and the exporter's ``BufferError`` for memory that
    is not contiguous."""
    if isinstance(payload, bytes):
        return len(payload)
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"payload_bytes argument must be a bytes-like object, got {_describe(payload)}",
        ) from None
    with view:
        if not view.c_contiguous:
            raise BufferError("payload_bytes must be one contiguous buffer")
        return view.nbytes


def _io_limits() -> tuple[int, int]:
    """``(IOV_MAX, MAX_RW_COUNT)``: the most buffers one readv/writev takes, and the most
    bytes one read or write system call moves on Linux (what a readv/writev may total).
    The native backends' own values where they are built, else the same computation."""
    try:
        from ._native import io_limits
    except ImportError:  # a pure-Python install
        pass
    else:
        return io_limits()

    def sysconf(name: str) -> int:
        try:
            return os.sysconf(name)
        except (AttributeError, ValueError, OSError):
            return -1

    iov_max = sysconf("SC_IOV_MAX")
    page = sysconf("SC_PAGESIZE")
    if page <= 0 or page & (page - 1):
        page = 4096
    # 1024: UIO_MAXIOV, what Linux has always had; INT_MAX rounded down to a page.
    return (iov_max if iov_max > 0 else 1024), 0x7FFFFFFF & ~(page - 1)


_IOV_MAX, _MAX_RW_COUNT = _io_limits()


def _vectored_views(
    buffers: object, method: str, *, writable: bool,
) -> tuple[tuple[Any, ...], list[memoryview]]:
    """The buffers of the sequence ``buffers`` and views of each, checked as the native
    backends check them (``TypeError``, ``BufferError``, ``ValueError``); none is left exported
    when one is refused."""
    try:
        memoryview(buffers)  # type: ignore[arg-type]
    except TypeError:
        is_buffer = False
    else:
        is_buffer = True
    if is_buffer or isinstance(buffers, dict) or not hasattr(type(buffers), "__getitem__"):
        raise TypeError(
            f"{method}() takes a sequence of bytes-like objects, not {type(buffers)!r}",
        )
    # Refused from its length alone when it has one, and never more than IOV_MAX + 1 items
    # taken (a __getitem__ that never ends, a length that lies), as the native backends do.
    try:
        size: int | None = len(cast("Sized", buffers))
    except TypeError:
        size = None
    if size is not None and size > _IOV_MAX:
        raise ValueError(f"{method}() takes at most {_IOV_MAX} buffers (IOV_MAX), got {size}")
    items: tuple[Any, ...] = tuple(
        itertools.islice(cast("Iterable[Any]", buffers), _IOV_MAX + 1),
    )
    if not items:
        raise ValueError(f"{method}() needs at least one buffer")
    if len(items) > _IOV_MAX:
        raise ValueError(f"{method}() takes at most {_IOV_MAX} buffers (IOV_MAX), got more")
    views: list[memoryview] = []
    try:
        for index, item in enumerate(items):
            try:
                view = memoryview(item)
            except TypeError:
                what = "a writable" if writable else "a"
                raise TypeError(
                    f"{method}() needs {what} bytes-like object at index {index}, "
                    f"not {type(item)!r}",
                ) from None
            views.append(view)
            if writable and view.readonly:
                raise BufferError(f"{method}() needs writable buffers (index {index})")
            if not view.c_contiguous:
                raise BufferError(f"{method}() needs contiguous buffers (index {index})")
        total = sum(view.nbytes for view in views)
        if total > _MAX_RW_COUNT:
            raise ValueError(
                f"{method}() buffers total {total} bytes, more than one request moves "
                f"({_MAX_RW_COUNT} bytes)",
            )
    except BaseException:
        for view in views:
            view.release()
        raise
    return items, views


def _rw_flags(opcode: OpCode, flags: SupportsIndex) -> int:
    """An operation's checked ``RWF_*`` flags (see ``caio._rwflags``)."""
    if opcode not in (OpCode.READ, OpCode.WRITE, OpCode.READV, OpCode.WRITEV):
        if operator.index(flags):
            raise ValueError(f"flags apply to reads and writes only, not to {opcode.name}")
        return 0
    value = check_rw_flags(flags, write=opcode in (OpCode.WRITE, OpCode.WRITEV))
    if value and not _RW_FLAGS_SUPPORTED:
        raise ValueError("flags need preadv2/pwritev2, which this system does not have")
    return value


class Operation(AbstractOperation):
    """One request for the python_aio backend.

    Can also be constructed directly:
    ``Operation(fd, nbytes, offset, opcode, payload=None, priority=None, flags=0)``.
    """

    def __init__(
        self,
        fd: SupportsIndex,
        nbytes: SupportsIndex | None,
        offset: SupportsIndex | None,
        opcode: int,
        payload: Buffer | None = None,
        priority: SupportsIndex | None = None,
        flags: SupportsIndex = 0,
    ) -> None:
        if opcode in _VECTORED_OPCODES:
            # Without buffers it would complete with 0, having done nothing.
            raise ValueError("use Operation.readv() or Operation.writev() for vectored I/O")
        self._setup(fd, nbytes, offset, opcode, payload, priority, flags)

    def _setup(
        self,
        fd: SupportsIndex,
        nbytes: SupportsIndex | None,
        offset: SupportsIndex | None,
        opcode: int,
        payload: Buffer | None,
        priority: SupportsIndex | None,
        flags: SupportsIndex,
    ) -> None:
        self._lock = threading.Lock()
        self.callback: Callable[[Any], Any] | None = None
        self.in_progress = False
        # The Context this operation is in flight on, else None (as on the native
        # backends); cancel() targets only those.
        self.context: Context | None = None
        # Taken by whichever comes first: the pool thread running it, or cancel().
        self._run_token = [True]
        self.exception: BaseException | None = None
        self.written: Any = 0

        self.opcode = opcode if type(opcode) is OpCode else OpCode(opcode)
        self._fileno = operator.index(fd)
        self._nbytes = 0 if nbytes is None else operator.index(nbytes)
        self._offset = 0 if offset is None else operator.index(offset)
        self._priority = 0 if priority is None else operator.index(priority)
        self._rw_flags = 0 if flags.__class__ is int and not flags else _rw_flags(self.opcode, flags)

        self.buffer: Any = b""
        # The caller's buffer of a read_into, or the buffers of a vectored op (the
        # payload), and until the op has run, views of them (exports: a bytearray cannot
        # be resized meanwhile; released before the callback, as the native backends do).
        self._target: object = None
        self._views: list[memoryview] = []
        if self.opcode == OpCode.WRITE:
            _check_payload(payload)
            self.buffer = payload

    @classmethod
    def read(
        cls, nbytes: int, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """Create an operation reading ``nbytes`` from ``fd`` at ``offset``; ``flags``:
        ``caio.RWF_NOWAIT`` or 0."""
        return cls(fd, nbytes, offset, OpCode.READ, priority=priority, flags=flags)

    @classmethod
    def write(
        cls, payload_bytes: Buffer, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """Create an operation writing ``payload_bytes`` to ``fd`` at ``offset``;
        ``flags``: a combination of ``caio.RWF_DSYNC``, ``RWF_SYNC``, ``RWF_NOWAIT``."""
        return cls(
            fd, _check_payload(payload_bytes), offset, OpCode.WRITE,
            payload=payload_bytes, priority=priority, flags=flags,
        )

    @classmethod
    def read_into(
        cls, buffer: Buffer, fd: int, offset: int = 0, priority: int = 0, *, flags: int = 0,
    ) -> Operation:
        """Create an operation reading into ``buffer`` (a writable bytes-like object, its
        whole size) from ``fd`` at ``offset``; ``get_value()`` is the number of bytes read."""
        try:
            view = memoryview(buffer)
        except TypeError:
            raise TypeError(
                f"read_into() needs a writable bytes-like object, not {_describe(buffer)}",
            ) from None
        if view.readonly:
            raise BufferError("read_into() needs a writable buffer")
        if not view.c_contiguous:
            raise BufferError("read_into() needs one contiguous buffer")
        operation = cls(fd, view.nbytes, offset, OpCode.READ, priority=priority, flags=flags)
        operation._views = [view.cast("B")]
        operation._target = buffer
        return operation

    @classmethod
    def _vectored(
        cls, opcode: OpCode, buffers: Sequence[Buffer], fd: int, offset: int, priority: int,
        flags: int,
    ) -> Operation:
        # fd, offset and flags are checked before the buffers, as the native backends do.
        operation = cls.__new__(cls)
        operation._setup(fd, 0, offset, opcode, None, priority, flags)
        method = "readv" if opcode == OpCode.READV else "writev"
        items, views = _vectored_views(buffers, method, writable=opcode == OpCode.READV)
        operation._nbytes = sum(view.nbytes for view in views)
        operation._views = views
        operation._target = items
        return operation

    @classmethod
    def readv(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0, *,
        flags: int = 0,
    ) -> Operation:
        """Create one read into the writable buffers of ``buffers``, filled in order, at
        ``offset``; ``get_value()`` is the number of bytes read."""
        return cls._vectored(OpCode.READV, buffers, fd, offset, priority, flags)

    @classmethod
    def writev(
        cls, buffers: Sequence[Buffer], fd: int, offset: int = 0, priority: int = 0, *,
        flags: int = 0,
    ) -> Operation:
        """Create one write of the buffers of ``buffers``, in order, at ``offset``;
        ``get_value()`` is the number of bytes written."""
        return cls._vectored(OpCode.WRITEV, buffers, fd, offset, priority, flags)

    def _release_views(self) -> None:
        views, self._views = self._views, []
        for view in views:
            view.release()

    @classmethod
    def fsync(cls, fd: int, priority: int = 0) -> Operation:
        """Create an fsync operation."""
        return cls(fd, None, None, OpCode.FSYNC, priority=priority)

    @classmethod
    def fdsync(cls, fd: int, priority: int = 0) -> Operation:
        """Create an fdatasync operation (fsync where fdatasync does not exist)."""
        return cls(fd, None, None, OpCode.FDSYNC, priority=priority)

    def get_value(self) -> bytes | int | None:
        """bytes for a read, bytes written for a write, None for the rest.

        A failed operation raises ``caio.OperationError`` (an ``OSError`` with the errno,
        also a ``SystemError``, as on the native backends). Not gated while in flight.
        """
        if self.exception is not None:
            # A new exception each time, as the native backends raise: the one raised
            # carries the caller's traceback (its frames hold this op), so storing it on
            # the op would make a cycle that keeps the op, its Context and pool alive.
            raise copy.copy(self.exception)
        if self.opcode in (OpCode.WRITE, OpCode.READV, OpCode.WRITEV):
            return self.written
        if self.opcode == OpCode.READ:
            return self.buffer
        return None

    @property
    def fileno(self) -> int:
        return self._fileno

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def payload(self) -> Any:
        if self._target is not None:
            return self._target
        return memoryview(self.buffer)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def set_callback(self, callback: Callable[[Any], Any]) -> bool:
        if not callable(callback):
            raise ValueError(f"callback must be callable, got {callback!r}")  # noqa: TRY004
        self.callback = callback
        return True


__all__ = (
    "NATIVE_PREAD_PWRITE",
    "Context",
    "ContextState",
    "OpCode",
    "Operation",
    "fdsync",
)
