"""caio.python_aio internals: module constants and base classes, Context state, claims and
their rollback when the pool refuses work, the request limit, callback exceptions, NOOP
operations and what failed and sync operations report."""

import errno
import sys
import threading

import pytest
from conftest import Tracker, closed_fd, module_by_short_name, needs_python_aio

pytestmark = needs_python_aio

python_aio = module_by_short_name("python_aio")
if python_aio is not None:
    Context = python_aio.Context
    Operation = python_aio.Operation
    OpCode = python_aio.OpCode
    ContextState = python_aio.ContextState

WAIT = 10


def test_module_constants():
    assert Context.MAX_POOL_SIZE == 128
    assert [int(OpCode.READ), int(OpCode.WRITE), int(OpCode.FSYNC), int(OpCode.FDSYNC),
            int(OpCode.NOOP)] == [0, 1, 2, 3, -1]
    assert [int(ContextState.OPEN), int(ContextState.CLOSING), int(ContextState.CLOSED)] == [
        0, 1, 2]
    assert callable(python_aio.fdsync)
    assert isinstance(python_aio.NATIVE_PREAD_PWRITE, bool)
    assert "python" in Context.__doc__


def test_classes_derive_from_abstract_bases():
    import caio

    assert issubclass(Context, caio.AbstractContext)
    assert issubclass(Operation, caio.AbstractOperation)


def test_fresh_context_state():
    ctx = Context(max_requests=7, pool_size=2)
    try:
        assert ctx.max_requests == 7
        assert ctx._in_progress == 0
        assert ctx._state == ContextState.OPEN
        with pytest.raises(AttributeError):
            ctx.max_requests = 3
    finally:
        ctx.close()
    assert ctx._state == ContextState.CLOSED


def test_submit_same_op_twice_counts_once(files):
    fd = files.open(b"abc")
    ctx = Context()
    op = Operation.read(3, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op, op) == 1
    assert op.in_progress is True
    assert tracker.event.wait(WAIT)
    assert ctx.submit(op) == 0
    assert op.in_progress is True  # one-shot: never reset
    ctx.close()
    ctx.pool.join()
    assert tracker.count() == 1
    assert op.get_value() == b"abc"


def test_submit_after_close_raises(files):
    fd = files.open()
    ctx = Context()
    ctx.close()
    ctx.close()
    op = Operation.write(b"x", fd, 0)
    with pytest.raises(RuntimeError, match="Context is closed"):
        ctx.submit(op)
    assert op.in_progress is False


def test_submit_rejects_non_operations(files):
    ctx = Context()
    op = Operation.read(1, files.open(), 0)
    with pytest.raises(ValueError, match="Invalid Operation"):
        ctx.submit(op, "nope")
    assert op.in_progress is False
    ctx.close()


def test_apply_async_failure_rolls_back_claim(files, monkeypatch):
    fd = files.open(b"abc")
    ctx = Context(max_requests=4)
    first = Operation.read(3, fd, 0)
    second = Operation.read(3, fd, 0)
    tracker = Tracker(2)
    first.set_callback(tracker.callback(0))
    second.set_callback(tracker.callback(1))

    real_apply_async = ctx.pool.apply_async
    calls = []

    def flaky_apply_async(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("scheduling failed")
        return real_apply_async(*args, **kwargs)

    monkeypatch.setattr(ctx.pool, "apply_async", flaky_apply_async)
    with pytest.raises(OSError, match="scheduling failed"):
        ctx.submit(first, second)
    # first stays dispatched, second was rolled back completely
    assert first.in_progress is True
    assert second.in_progress is False
    monkeypatch.setattr(ctx.pool, "apply_async", real_apply_async)
    assert ctx.submit(second) == 1
    assert tracker.event.wait(WAIT)
    assert tracker.ordered() == [3, 3]
    ctx.close()
    ctx.pool.join()
    assert ctx._in_progress == 0


def test_pool_closed_underneath_rolls_back(files):
    fd = files.open()
    ctx = Context()
    ctx.pool.close()
    op = Operation.write(b"x", fd, 0)
    with pytest.raises(ValueError):  # "Pool not running"
        ctx.submit(op)
    assert op.in_progress is False
    assert ctx._in_progress == 0


def test_maximum_simultaneous_requests(files):
    fd = files.open(b"abc")
    ctx = Context(max_requests=1, pool_size=1)
    release = threading.Event()
    started = threading.Event()

    def block():
        started.set()
        release.wait(60)

    # park the only worker with a task of our own
    ctx.pool.apply_async(block)
    try:
        assert started.wait(WAIT)
        a = Operation.read(3, fd, 0)
        b = Operation.read(3, fd, 1)
        tracker = Tracker(2)
        a.set_callback(tracker.callback(0))
        b.set_callback(tracker.callback(1))
        assert ctx.submit(a) == 1
        with pytest.raises(RuntimeError, match="Maximum simultaneous requests"):
            ctx.submit(b)
        assert b.in_progress is False
        assert ctx._in_progress == 1
    finally:
        release.set()
    assert tracker.wait_count(1, WAIT)
    assert ctx.submit(b) == 1
    assert tracker.event.wait(WAIT)
    assert tracker.ordered() == [3, 2]
    ctx.close()


def test_callback_exception_goes_to_threading_excepthook(files, monkeypatch):
    fd = files.open(b"abc")
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args))
    ctx = Context(pool_size=1)
    first = Operation.read(3, fd, 0)
    second = Operation.read(3, fd, 0)

    def bad(result):
        raise KeyError("from callback")

    first.set_callback(bad)
    tracker = Tracker(1)
    second.set_callback(tracker.callback(0))
    assert ctx.submit(first) == 1
    assert ctx.submit(second) == 1
    assert tracker.event.wait(WAIT), "a raising callback stopped later completions"
    ctx.close()
    ctx.pool.join()
    assert len(seen) == 1
    args = seen[0]
    assert args.exc_type is KeyError
    assert isinstance(args.exc_value, KeyError)
    assert args.thread is not None and args.thread is not threading.main_thread()
    assert tracker.ordered() == [3]


def test_noop_operation_direct_construction():
    ctx = Context()
    op = Operation(0, None, None, OpCode.NOOP)
    done = threading.Event()
    results = []

    def cb(result):
        results.append(result)
        done.set()

    op.set_callback(cb)
    assert ctx.submit(op) == 1
    assert done.wait(WAIT)
    assert results == [None]
    assert op.get_value() is None
    ctx.close()


def test_failed_operation_callback_gets_none_and_get_value_reraises():
    ctx = Context()
    fd = closed_fd()
    op = Operation.read(4, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    assert tracker.event.wait(WAIT)
    assert tracker.ordered() == [None]
    with pytest.raises(OSError) as exc_info:
        op.get_value()
    assert exc_info.value.errno == errno.EBADF
    assert isinstance(op.exception, OSError)
    assert ctx.submit(op) == 0
    ctx.close()


def test_sync_callbacks_receive_none(files):
    fd = files.open(b"s")
    ctx = Context()
    ops = [Operation.fsync(fd), Operation.fdsync(fd)]
    tracker = Tracker(2)
    for i, op in enumerate(ops):
        op.set_callback(tracker.callback(i))
    assert ctx.submit(*ops) == 2
    assert tracker.event.wait(WAIT)
    assert tracker.ordered() == [None, None]
    ctx.close()


def test_read_payload_and_nbytes(files):
    fd = files.open(b"hello")
    ctx = Context()
    op = Operation.read(16, fd, 0)
    assert bytes(op.payload) == b""
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    assert tracker.event.wait(WAIT)
    assert bytes(op.payload) == b"hello"
    assert op.nbytes == 16  # the request, never updated
    ctx.close()


def test_half_built_context_is_safe_to_delete(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args))
    for bad in ({"pool_size": 0}, {"max_requests": 0}):
        with pytest.raises(ValueError):
            Context(**bad)
    import gc

    gc.collect()
    assert seen == []


def test_no_type_coercion_in_context():
    ctx = Context(1.5)
    ctx.close()
    with pytest.raises(TypeError):
        Context("x")
