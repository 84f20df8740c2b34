"""Raw Context/Operation behaviour shared by every backend, python_aio included: submit
counting, round trips, short reads, sync operations, properties, callbacks and reference
cycles, parametrised over ``caio.variants`` (thread_aio additionally in its eventfd delivery
mode). The contract of the native backends' Contexts is in test_context_contract.py."""

import errno
import gc
import os
import threading
import weakref

import pytest
from conftest import Tracker, closed_fd, wait_until


def test_submit_without_arguments_returns_zero(backend):
    ctx = backend.Context()
    assert ctx.submit() == 0


def test_submit_same_op_twice_counts_once(backend, files):
    fd = files.open()
    ctx = backend.Context()
    op = backend.write(b"once", fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op, op) == 1
    backend.wait_done(ctx, tracker)
    assert ctx.submit(op) == 0
    assert ctx.submit(op, op, op) == 0
    if backend.pumped:
        backend.pump(ctx, min_requests=0, timeout=0)
    backend.settle(ctx)
    assert tracker.count() == 1
    assert os.pread(fd, 10, 0) == b"once"


def test_resubmitting_completed_read_returns_zero(backend, files):
    fd = files.open(b"abcdef")
    ctx = backend.Context()
    op = backend.read(4, fd, 1)
    assert backend.run(ctx, op) == [4]
    assert op.get_value() == b"bcde"
    os.pwrite(fd, b"XXXXXX", 0)
    assert ctx.submit(op) == 0
    # the completed op keeps its earlier result
    assert op.get_value() == b"bcde"


def test_write_then_read_round_trip(backend, files):
    fd = files.open()
    ctx = backend.Context()
    payload = b"Hello, caio!"
    w = backend.write(payload, fd, 3)
    assert backend.run(ctx, w) == [len(payload)]
    assert w.get_value() == len(payload)
    if hasattr(w, "result"):
        assert w.result == len(payload)
    assert os.pread(fd, 100, 0) == b"\0\0\0" + payload

    r = backend.read(100, fd, 0)
    assert backend.run(ctx, r) == [len(payload) + 3]
    assert r.get_value() == b"\0\0\0" + payload
    # get_value returns equal data every time
    assert r.get_value() == b"\0\0\0" + payload


def test_short_read_at_eof(backend, files):
    fd = files.open(b"hello")
    ctx = backend.Context()
    op = backend.read(16, fd, 0)
    assert backend.run(ctx, op) == [5]
    assert op.get_value() == b"hello"
    if backend.native:
        assert op.nbytes == 5
        assert bytes(op.payload) == b"hello" + b"\0" * 11
    else:
        assert bytes(op.payload) == b"hello"
    eof = backend.read(16, fd, 5)
    assert backend.run(ctx, eof) == [0]
    assert eof.get_value() == b""
    # a fresh op asks for the full size again
    again = backend.read(16, fd, 0)
    assert again.nbytes == 16


def test_sync_operations(backend, files):
    fd = files.open(b"data")
    ctx = backend.Context()
    ops = [backend.Operation.fsync(fd), backend.Operation.fdsync(fd)]
    results = backend.run(ctx, *ops)
    expected = None if not backend.native else 0
    assert results == [expected, expected]
    for _ in range(200):
        for op in ops:
            assert op.get_value() is None


def test_properties_before_submit(backend, files):
    fd = files.open()
    r = backend.read(123, fd, 45)
    assert r.fileno == fd
    assert r.offset == 45
    assert r.nbytes == 123

    payload = b"payload-bytes"
    w = backend.write(payload, fd, 7)
    assert w.fileno == fd
    assert w.offset == 7
    assert w.nbytes == len(payload)
    assert bytes(w.payload) == payload

    for factory in (backend.Operation.fsync, backend.Operation.fdsync):
        op = factory(fd)
        assert op.fileno == fd
        assert op.offset == 0
        assert op.nbytes == 0
        assert not op.payload
        assert op.get_value() is None


def test_keyword_arguments(backend, files):
    fd = files.open(b"0123456789")
    ctx = backend.Context()
    r = backend.Operation.read(nbytes=4, fd=fd, offset=2, priority=0)
    w = backend.Operation.write(payload_bytes=b"ab", fd=fd, offset=8, priority=0)
    s = backend.Operation.fsync(fd=fd, priority=0)
    d = backend.Operation.fdsync(fd=fd, priority=0)
    backend.run(ctx, r)
    assert r.get_value() == b"2345"
    backend.run(ctx, w, s, d)
    assert os.pread(fd, 100, 0) == b"01234567ab"


def test_repr_is_str(backend, files):
    fd = files.open()
    ctx = backend.Context()
    assert isinstance(repr(ctx), str)
    for op in (backend.read(1, fd, 0), backend.write(b"x", fd, 0),
               backend.Operation.fsync(fd), backend.Operation.fdsync(fd)):
        assert isinstance(repr(op), str)


def test_set_callback(backend, files):
    fd = files.open()
    op = backend.read(1, fd, 0)
    assert op.set_callback(lambda result: None) is True
    for bad in (None, 1, "not callable", b"x"):
        with pytest.raises(ValueError):
            op.set_callback(bad)


def test_set_callback_replacement_releases_old(backend, files):
    fd = files.open(b"z")
    ctx = backend.Context()
    op = backend.read(1, fd, 0)

    class Callback:
        def __init__(self):
            self.calls = []

        def __call__(self, result):
            self.calls.append(result)

    first = Callback()
    ref = weakref.ref(first)
    op.set_callback(first)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    del first
    gc.collect()
    assert ref() is None
    assert ctx.submit(op) == 1
    backend.wait_done(ctx, tracker)
    assert tracker.ordered() == [1]


def test_operation_cannot_be_instantiated_directly(native_backend):
    with pytest.raises(TypeError):
        native_backend.Operation()


def make_self_referencing_op(factory):
    """op -> callback -> closure cell -> op: only the cyclic GC can free it."""
    op = factory()
    op.set_callback(lambda result: op)
    return weakref.ref(op)


def test_operation_reference_cycle_is_collected(backend, files):
    fd = files.open()
    for factory in (
        lambda: backend.read(10, fd, 0),
        lambda: backend.write(b"data", fd, 0),
        lambda: backend.Operation.fsync(fd),
    ):
        gc.collect()
        gc.disable()
        try:
            ref = make_self_referencing_op(factory)
            assert ref() is not None  # kept alive by the cycle alone
        finally:
            gc.enable()
        gc.collect()
        assert ref() is None


def test_operation_and_context_support_weakrefs(backend, files):
    fd = files.open()
    ctx = backend.Context()
    op = backend.read(1, fd, 0)
    assert weakref.ref(ctx)() is ctx
    assert weakref.ref(op)() is op


def test_last_reference_dropped_while_in_flight(backend, files):
    data = os.urandom(8192)
    fd = files.open(data)
    ctx = backend.Context()
    tracker = Tracker(3)
    refs = []
    for i in range(3):
        op = backend.read(8192, fd, 0) if i != 1 else backend.write(b"w", fd, 9000)
        op.set_callback(tracker.callback(i))
        refs.append(weakref.ref(op))
        assert ctx.submit(op) == 1
        del op
    backend.wait_done(ctx, tracker)
    assert tracker.ordered() == [8192, 1, 8192]
    backend.settle(ctx)  # joins the workers of thread-based backends
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None], "operation leaked after completion"


def test_many_ops_in_one_submit(backend, files):
    fd = files.open()
    ctx = backend.Context(max_requests=128)
    ops = [backend.write(bytes([i % 251]) * 16, fd, i * 16) for i in range(100)]
    assert backend.run(ctx, *ops) == [16] * 100
    assert os.pread(fd, 1600, 0) == b"".join(bytes([i % 251]) * 16 for i in range(100))


def test_failed_operation(backend, files):
    ctx = backend.Context()
    fd = closed_fd()
    op = backend.read(4, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    try:
        submitted = ctx.submit(op)
    except (ValueError, OSError):
        # linux_aio rejects a bad descriptor eagerly at io_submit
        assert backend.short == "linux_aio"
        return
    assert submitted == 1
    backend.wait_done(ctx, tracker)
    with pytest.raises((SystemError, OSError)) as exc_info:
        op.get_value()
    if isinstance(exc_info.value, OSError) and exc_info.value.errno is not None:
        assert exc_info.value.errno == errno.EBADF
    if hasattr(op, "error"):
        assert op.error != 0
    # a failed op is never resubmitted
    assert ctx.submit(op) == 0
    assert tracker.count() == 1


def test_callback_can_read_value_inside_callback(backend, files):
    fd = files.open(b"inside")
    ctx = backend.Context()
    op = backend.read(6, fd, 0)
    seen = []
    done = threading.Event()

    def cb(result):
        seen.append(op.get_value())
        done.set()

    op.set_callback(cb)
    assert ctx.submit(op) == 1
    tracker = Tracker(0)
    tracker.event = done
    backend.wait_done(ctx, tracker)
    assert seen == [b"inside"]
    op.set_callback(lambda r: None)  # break the op -> cb -> op cycle


# ---------------------------------------------------------------------------------------------
# contexts with close(): thread_aio and python_aio


def closable(backend):
    if not hasattr(backend.module.Context, "close"):
        pytest.skip(f"{backend.name} has no close()")


def test_close_is_idempotent_and_submit_after_close_raises(backend, files):
    closable(backend)
    fd = files.open()
    ctx = backend.Context()
    assert backend.run(ctx, backend.write(b"ok", fd, 0)) == [2]
    ctx.close()
    ctx.close()
    op = backend.write(b"no", fd, 0)
    with pytest.raises(RuntimeError):
        ctx.submit(op)
    ctx.close()
    assert os.pread(fd, 10, 0) == b"ok"


def test_dropping_context_with_queued_ops_completes_them(backend, files):
    closable(backend)
    if backend.pumped:
        pytest.skip("completions of a pumped context are delivered by process_events()")
    fd = files.open()
    ctx = backend.Context(max_requests=128, pool_size=1)
    ctx_ref = weakref.ref(ctx)
    tracker = Tracker(64)
    ops = []
    for i in range(64):
        op = backend.write(bytes([65 + i % 26]), fd, i)
        op.set_callback(tracker.callback(i))
        ops.append(op)
    assert ctx.submit(*ops) == 64
    del ctx
    gc.collect()
    assert tracker.event.wait(10), f"only {tracker.count()} of 64 callbacks fired"
    assert tracker.ordered() == [1] * 64
    assert os.pread(fd, 64, 0) == bytes(65 + i % 26 for i in range(64))
    wait_until(lambda: ctx_ref() is None, message="context leaked after its ops completed")
