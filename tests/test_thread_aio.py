"""caio.thread_aio specifics, in both completion-delivery modes:

* ``Context`` (``eventfd=False`` here): callbacks run on a pool worker thread holding the GIL;
* ``EventfdContext`` (``eventfd=True``): completions are queued and delivered by
  ``process_events()`` on the caller.

Making the pool busy deterministically (a file that blocks a worker until the test says so):

* default mode: the only worker (pool_size=1) is parked inside a callback waiting on a
  ``threading.Event`` (``CallbackBlocker``);
* eventfd mode: the only worker is parked in ``pread`` on ``/dev/kmsg`` positioned at its end,
  which blocks until a message is written to it (``KmsgBlocker``, skipped where /dev/kmsg is not
  usable).
"""

import errno
import gc
import json
import os
import select
import sys
import threading
import time
import weakref

import pytest
from conftest import Tracker, closed_fd, module_by_short_name, needs_thread_aio, run_python

pytestmark = needs_thread_aio

thread_aio = module_by_short_name("thread_aio")
if thread_aio is not None:
    Context = thread_aio.Context
    EventfdContext = thread_aio.EventfdContext
    Operation = thread_aio.Operation


def make_context(*args, eventfd=False, **kwargs):
    """The default Context, or an EventfdContext when ``eventfd``."""
    return (EventfdContext if eventfd else Context)(*args, **kwargs)

WAIT = 10  # seconds; hang guards only


@pytest.fixture(params=[False, True], ids=["default", "eventfd"])
def eventfd(request):
    return request.param


def deliver(ctx, eventfd, tracker, timeout=WAIT):
    """Wait for every op tracked by ``tracker``: pump in eventfd mode, else wait."""
    if not eventfd:
        assert tracker.event.wait(timeout), f"{tracker.count()} of {tracker.expected} arrived"
        return
    deadline = time.monotonic() + timeout
    while not tracker.event.is_set():
        assert time.monotonic() < deadline, f"{tracker.count()} of {tracker.expected} arrived"
        ctx.process_events(min_requests=1, timeout=1)


class CallbackBlocker:
    """Parks the only worker of a pool_size=1 default-mode Context inside a callback."""

    def __init__(self, ctx, fd):
        self.started = threading.Event()
        self.release = threading.Event()
        self.op = Operation.fsync(fd)
        self.op.set_callback(self._callback)
        assert ctx.submit(self.op) == 1
        assert self.started.wait(WAIT), "blocker callback did not start"

    def _callback(self, result):
        self.started.set()
        self.release.wait(60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release.set()


class KmsgBlocker:
    """Keeps a worker busy in pread(/dev/kmsg) until ``unblock()`` writes a kernel message."""

    def __init__(self):
        try:
            self.rfd = os.open("/dev/kmsg", os.O_RDONLY)
        except OSError as e:
            pytest.skip(f"/dev/kmsg is not readable: {e}")
        try:
            self.wfd = os.open("/dev/kmsg", os.O_WRONLY)
        except OSError as e:
            os.close(self.rfd)
            pytest.skip(f"/dev/kmsg is not writable: {e}")
        os.lseek(self.rfd, 0, os.SEEK_END)
        self.op = Operation.read(8192, self.rfd, 0)
        self.released = False

    def unblock(self):
        if not self.released:
            self.released = True
            os.write(self.wfd, b"caio test suite: releasing a blocked worker\n")

    def close(self):
        os.close(self.rfd)
        os.close(self.wfd)


# ---------------------------------------------------------------------------------------------
# construction


def test_context_defaults_and_properties(eventfd):
    ctx = make_context(eventfd=eventfd)
    assert ctx.max_requests == 512
    assert ctx.pool_size == 8
    assert isinstance(repr(ctx), str)
    ctx.close()
    ctx = make_context(max_requests=0, pool_size=0, eventfd=eventfd)
    assert ctx.max_requests == 512
    assert ctx.pool_size == 8
    ctx.close()
    ctx = make_context(16, 2, eventfd=eventfd)
    assert (ctx.max_requests, ctx.pool_size) == (16, 2)
    with pytest.raises(AttributeError):
        ctx.max_requests = 3
    ctx.close()


def test_docstring_names_backend():
    assert "thread" in Context.__doc__


@pytest.mark.parametrize("max_requests", [65535, -1, 131071])
def test_max_requests_too_large(max_requests):
    with pytest.raises(ValueError):
        Context(max_requests=max_requests)


@pytest.mark.parametrize("pool_size", [129, 200, 255])
def test_pool_size_too_large(pool_size):
    with pytest.raises(ValueError):
        Context(pool_size=pool_size)


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        Context(sqpoll=True)
    with pytest.raises(TypeError):
        Context(max_requests="8")
    with pytest.raises(TypeError):
        Context(pool_size=1.5)


def test_fileno_only_in_eventfd_mode():
    ctx = Context()
    with pytest.raises(AttributeError):
        _ = ctx.fileno
    ctx.close()
    ctx = EventfdContext()
    assert isinstance(ctx.fileno, int) and ctx.fileno >= 0
    os.fstat(ctx.fileno)
    ctx.close()


def test_cancel_returns_zero(files):
    ctx = Context()
    op = Operation.read(1, files.open(b"x"), 0)
    assert ctx.cancel() == 0
    assert ctx.cancel(op) == 0
    assert ctx.cancel(1, "x", None) == 0
    ctx.close()


# ---------------------------------------------------------------------------------------------
# queue full


def test_queue_full_rolls_back_and_stays_retryable_default_mode(files):
    fd = files.open()
    ctx = Context(max_requests=2, pool_size=1)
    a, b, c = (Operation.write(bytes([65 + i]), fd, i) for i in range(3))
    tracker = Tracker(3)
    for i, op in enumerate((a, b, c)):
        op.set_callback(tracker.callback(i))
    del op
    c_refs = sys.getrefcount(c)

    with CallbackBlocker(ctx, fd):
        # the worker is busy and the queue is empty: room for exactly two queued tasks
        with pytest.raises(RuntimeError, match="queue full"):
            ctx.submit(a, b, c)
        # a and b were dispatched (claimed, now in flight); c was rolled back
        assert ctx.submit(a, b) == 0
        for op in (a, b):
            with pytest.raises(RuntimeError):
                op.get_value()
        del op
        with pytest.raises(RuntimeError, match="queue full"):
            ctx.submit(c)
        assert sys.getrefcount(c) == c_refs
        assert c.get_value() == 0
        assert bytes(c.payload) == b"C"
        assert tracker.count() == 0

    # the worker is free again: once a and b finished, c is accepted
    assert tracker.wait_count(2, WAIT)
    assert ctx.submit(c) == 1
    assert tracker.event.wait(WAIT)
    ctx.close()
    assert tracker.ordered() == [1, 1, 1]
    assert os.pread(fd, 3, 0) == b"ABC"
    assert sys.getrefcount(c) == c_refs


def test_queue_full_rolls_back_and_stays_retryable_eventfd_mode(files):
    fd = files.open(b"0123456789")
    ctx = EventfdContext(max_requests=1, pool_size=1)
    blocker = KmsgBlocker()
    a = Operation.read(4, fd, 0)
    b = Operation.read(4, fd, 4)
    tracker = Tracker(3)
    blocker.op.set_callback(tracker.callback(0))
    a.set_callback(tracker.callback(1))
    b.set_callback(tracker.callback(2))
    try:
        assert ctx.submit(blocker.op) == 1
        # ``a`` fits only once the worker has taken the blocker off the queue; until then
        # every attempt is refused and rolled back (which is itself the retry contract)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if ctx.submit(a) == 1:
                    break
            except RuntimeError as e:
                assert "queue full" in str(e)
            assert time.monotonic() < deadline, "worker never picked up the blocker"
            time.sleep(0.001)
        # the worker is parked in pread(/dev/kmsg) and ``a`` fills the queue
        with pytest.raises(RuntimeError, match="queue full"):
            ctx.submit(b)
        assert b.get_value() == bytes(4)
        with pytest.raises(RuntimeError):
            a.get_value()
    finally:
        blocker.unblock()
    try:
        deadline = time.monotonic() + WAIT
        while tracker.count() < 2:
            assert time.monotonic() < deadline
            ctx.process_events(min_requests=1, timeout=1)
        assert ctx.submit(b) == 1
        deliver(ctx, True, tracker)
        assert a.get_value() == b"0123"
        assert b.get_value() == b"4567"
        assert tracker.ordered()[1:] == [4, 4]
    finally:
        ctx.close()
        blocker.close()


# ---------------------------------------------------------------------------------------------
# references, in-flight gating, lifetime


def test_in_flight_gating_and_refcount_default_mode(files):
    fd = files.open(b"abcdef")
    ctx = Context(pool_size=1)
    r = Operation.read(6, fd, 0)
    w = Operation.write(b"XY", fd, 10)
    tracker = Tracker(2)
    r.set_callback(tracker.callback(0))
    w.set_callback(tracker.callback(1))
    before = (sys.getrefcount(r), sys.getrefcount(w))
    with CallbackBlocker(ctx, fd):
        assert ctx.submit(r, w) == 2
        assert (sys.getrefcount(r), sys.getrefcount(w)) == (before[0] + 1, before[1] + 1)
        for op in (r, w):
            with pytest.raises(RuntimeError, match="in flight"):
                op.get_value()
            with pytest.raises(RuntimeError, match="in flight"):
                _ = op.payload
        del op
    assert tracker.event.wait(WAIT)
    ctx.close()
    assert (sys.getrefcount(r), sys.getrefcount(w)) == before
    assert r.get_value() == b"abcdef"
    assert w.get_value() == 2


def test_in_flight_until_process_events_eventfd_mode(files):
    fd = files.open(b"abcdef")
    ctx = EventfdContext()
    r = Operation.read(6, fd, 0)
    tracker = Tracker(1)
    r.set_callback(tracker.callback(0))
    before = sys.getrefcount(r)
    assert ctx.submit(r) == 1
    assert sys.getrefcount(r) == before + 1
    # the worker may have finished, but nothing is applied before process_events()
    select.select([ctx.fileno], [], [], WAIT)
    with pytest.raises(RuntimeError, match="in flight"):
        r.get_value()
    with pytest.raises(RuntimeError, match="in flight"):
        _ = r.payload
    assert tracker.count() == 0
    deliver(ctx, True, tracker)
    assert sys.getrefcount(r) == before
    assert r.get_value() == b"abcdef"
    ctx.close()


def test_dropped_op_still_completes_default_mode(files):
    fd = files.open(b"payload!")
    ctx = Context(pool_size=1)
    tracker = Tracker(2)
    refs = []
    with CallbackBlocker(ctx, fd):
        for i in range(2):
            op = Operation.read(8, fd, 0) if i == 0 else Operation.write(b"!!", fd, 8)
            op.set_callback(tracker.callback(i))
            refs.append(weakref.ref(op))
            assert ctx.submit(op) == 1
            del op
        gc.collect()
        assert all(ref() is not None for ref in refs)  # kept alive while queued
    assert tracker.event.wait(WAIT)
    ctx.close()
    gc.collect()
    assert tracker.ordered() == [8, 2]
    assert all(ref() is None for ref in refs)
    assert os.pread(fd, 100, 0) == b"payload!!!"


def test_dropped_op_still_completes_eventfd_mode(files):
    fd = files.open(b"payload!")
    ctx = EventfdContext()
    tracker = Tracker(1)
    op = Operation.read(8, fd, 0)
    op.set_callback(tracker.callback(0))
    ref = weakref.ref(op)
    assert ctx.submit(op) == 1
    del op
    gc.collect()
    assert ref() is not None
    deliver(ctx, True, tracker)
    gc.collect()
    assert ref() is None
    assert tracker.ordered() == [8]
    ctx.close()


def test_context_kept_alive_by_in_flight_ops_default_mode(files):
    fd = files.open()
    ctx = Context(pool_size=1)
    ref = weakref.ref(ctx)
    tracker = Tracker(1)
    op = Operation.write(b"k", fd, 0)
    op.set_callback(tracker.callback(0))
    blocker = CallbackBlocker(ctx, fd)
    try:
        assert ctx.submit(op) == 1
        del ctx
        gc.collect()
        assert ref() is not None
    finally:
        blocker.release.set()
    assert tracker.event.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while ref() is not None:  # released by the worker right after the callback
        assert time.monotonic() < deadline, "context leaked"
        gc.collect()
        time.sleep(0.001)


# ---------------------------------------------------------------------------------------------
# callbacks


def test_callback_thread(eventfd, files):
    fd = files.open(b"t")
    ctx = make_context(eventfd=eventfd)
    tracker = Tracker(1)
    op = Operation.read(1, fd, 0)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    deliver(ctx, eventfd, tracker)
    (_, result, ident), = tracker.calls
    assert result == 1
    if eventfd:
        assert ident == threading.get_ident()
    else:
        assert ident != threading.get_ident()
    ctx.close()


def test_callback_runs_exactly_once(eventfd, files):
    fd = files.open(b"once")
    ctx = make_context(eventfd=eventfd)
    ops = [Operation.read(4, fd, 0) for _ in range(20)]
    tracker = Tracker(20)
    for i, op in enumerate(ops):
        op.set_callback(tracker.callback(i))
    assert ctx.submit(*ops, *ops) == 20
    deliver(ctx, eventfd, tracker)
    assert ctx.submit(*ops) == 0
    ctx.close()
    assert tracker.count() == 20
    assert all(tracker.count(i) == 1 for i in range(20))


def test_callback_exception_goes_to_unraisablehook(eventfd, files, monkeypatch):
    fd = files.open(b"abc")
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda args: seen.append(args.exc_value))
    ctx = make_context(pool_size=1, eventfd=eventfd)
    tracker = Tracker(1)

    def bad(result):
        raise ZeroDivisionError("boom from callback")

    first = Operation.read(3, fd, 0)
    first.set_callback(bad)
    second = Operation.read(3, fd, 0)
    second.set_callback(tracker.callback(0))
    assert ctx.submit(first) == 1
    assert ctx.submit(second) == 1
    if eventfd:
        delivered = 0
        deadline = time.monotonic() + WAIT
        while delivered < 2:
            assert time.monotonic() < deadline
            delivered += ctx.process_events(min_requests=1, timeout=1)
        assert delivered == 2
    else:
        # pool_size=1: the first op's callback (and its hook call) ran before the second's
        assert tracker.event.wait(WAIT)
    ctx.close()
    assert tracker.ordered() == [3]
    assert len(seen) == 1
    assert isinstance(seen[0], ZeroDivisionError)
    assert first.get_value() == b"abc"


def test_set_callback_keyword(files):
    op = Operation.read(1, files.open(b"x"), 0)
    assert op.set_callback(callback=lambda r: None) is True
    with pytest.raises(ValueError):
        op.set_callback(callback=42)


# ---------------------------------------------------------------------------------------------
# payload and values


def test_write_payload_released_after_completion(eventfd, files):
    fd = files.open()
    ctx = make_context(eventfd=eventfd)
    payload = b"payload-" + os.urandom(8)
    refs = sys.getrefcount(payload)
    op = Operation.write(payload, fd, 0)
    assert op.payload is payload
    assert sys.getrefcount(payload) == refs + 1
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    deliver(ctx, eventfd, tracker)
    ctx.close()
    assert op.payload is None
    assert sys.getrefcount(payload) == refs
    assert op.get_value() == len(payload)
    assert op.result == len(payload)
    assert os.pread(fd, 100, 0) == payload


def test_read_payload_is_readonly_view_with_zero_tail(eventfd, files):
    fd = files.open(b"AB")
    ctx = make_context(eventfd=eventfd)
    op = Operation.read(256, fd, 0)
    before = op.payload
    assert isinstance(before, memoryview)
    assert bytes(before) == bytes(256)
    del before
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    deliver(ctx, eventfd, tracker)
    view = op.payload
    assert isinstance(view, memoryview)
    assert view.readonly
    assert len(view) == 256
    assert bytes(view) == b"AB" + b"\0" * 254
    with pytest.raises(TypeError):
        view[0] = 1
    assert op.get_value() == b"AB"
    assert op.nbytes == 2
    assert op.result == 2
    assert op.error == 0
    ctx.close()


def test_failed_read_reports_errno(eventfd, files):
    ctx = make_context(eventfd=eventfd)
    fd = closed_fd()
    op = Operation.read(4, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    deliver(ctx, eventfd, tracker)
    ctx.close()
    assert tracker.ordered() == [-1]
    assert op.result == -1
    assert op.error == errno.EBADF
    with pytest.raises((SystemError, OSError)) as exc_info:
        op.get_value()
    if isinstance(exc_info.value, OSError):
        assert exc_info.value.errno == errno.EBADF


def test_get_value_never_submitted(files):
    fd = files.open()
    assert Operation.read(5, fd, 0).get_value() == bytes(5)
    assert Operation.write(b"abc", fd, 0).get_value() == 0
    assert Operation.fsync(fd).get_value() is None
    assert Operation.fdsync(fd).get_value() is None


def test_properties_are_read_only(files):
    op = Operation.read(5, files.open(), 0)
    for name in ("fileno", "offset", "nbytes", "result", "error", "payload"):
        with pytest.raises(AttributeError):
            setattr(op, name, 1)


# ---------------------------------------------------------------------------------------------
# close


def test_close_idempotent_and_submit_after_close(eventfd, files):
    fd = files.open()
    ctx = make_context(eventfd=eventfd)
    ctx.close()
    ctx.close()
    op = Operation.write(b"x", fd, 0)
    with pytest.raises(RuntimeError):
        ctx.submit(op)
    # the refused op was not claimed: another context takes it
    other = make_context(eventfd=eventfd)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert other.submit(op) == 1
    deliver(other, eventfd, tracker)
    other.close()
    assert os.pread(fd, 1, 0) == b"x"


def test_close_delivers_remaining_completions_eventfd_mode(files):
    fd = files.open(b"abc")
    ctx = EventfdContext()
    ops = [Operation.read(3, fd, 0) for _ in range(5)]
    tracker = Tracker(5)
    for i, op in enumerate(ops):
        op.set_callback(tracker.callback(i))
    assert ctx.submit(*ops) == 5
    ctx.close()
    assert tracker.count() == 5
    assert {ident for _, _, ident in tracker.calls} == {threading.get_ident()}
    assert all(op.get_value() == b"abc" for op in ops)


def test_close_waits_for_queued_tasks_default_mode(files):
    fd = files.open()
    ctx = Context(max_requests=64, pool_size=2)
    ops = [Operation.write(b"q", fd, i) for i in range(50)]
    tracker = Tracker(50)
    for i, op in enumerate(ops):
        op.set_callback(tracker.callback(i))
    assert ctx.submit(*ops) == 50
    ctx.close()
    assert tracker.count() == 50
    assert os.pread(fd, 100, 0) == b"q" * 50


# ---------------------------------------------------------------------------------------------
# eventfd mode: poll / process_events / run_inline


def test_poll_without_pending_raises_blocking_io_error():
    ctx = EventfdContext()
    with pytest.raises(BlockingIOError):
        ctx.poll()
    ctx.close()


def test_poll_counts_signals_then_resets(files):
    fd = files.open(b"p")
    ctx = EventfdContext()
    op = Operation.read(1, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    readable, _, _ = select.select([ctx.fileno], [], [], WAIT)
    assert readable == [ctx.fileno]
    assert ctx.poll() >= 1
    with pytest.raises(BlockingIOError):
        ctx.poll()
    # the completion is still queued: poll() only consumed the signal
    assert ctx.process_events() == 1
    assert tracker.ordered() == [1]
    assert ctx.process_events() == 0
    ctx.close()


def test_process_events_max_and_min(files):
    fd = files.open(b"12345")
    ctx = EventfdContext()
    ops = [Operation.read(1, fd, i) for i in range(5)]
    tracker = Tracker(5)
    for i, op in enumerate(ops):
        op.set_callback(tracker.callback(i))
    assert ctx.submit(*ops) == 5
    assert ctx.process_events(max_requests=1, min_requests=1, timeout=WAIT) == 1
    assert tracker.count() == 1
    assert ctx.process_events(max_requests=10, min_requests=4, timeout=WAIT) == 4
    assert tracker.count() == 5
    assert ctx.process_events() == 0
    assert ctx.process_events(max_requests=10, min_requests=0, timeout=0) == 0
    assert sorted(r for _, r, _ in tracker.calls) == [1] * 5
    assert [op.get_value() for op in ops] == [b"1", b"2", b"3", b"4", b"5"]
    ctx.close()


def test_process_events_min_greater_than_max():
    ctx = EventfdContext()
    with pytest.raises(ValueError):
        ctx.process_events(max_requests=1, min_requests=2)
    with pytest.raises(ValueError):
        ctx.process_events(max_requests=3, min_requests=4, timeout=0)
    ctx.close()


def test_process_events_reentrant_from_callback(files):
    fd = files.open(b"r")
    ctx = EventfdContext()
    ops = [Operation.read(1, fd, 0) for _ in range(6)]
    tracker = Tracker(6)
    nested = []

    def make_cb(i):
        record = tracker.callback(i)

        def cb(result):
            record(result)
            nested.append(ctx.process_events(max_requests=1))

        return cb

    for i, op in enumerate(ops):
        op.set_callback(make_cb(i))
    assert ctx.submit(*ops) == 6
    deliver(ctx, True, tracker)
    ctx.process_events()
    assert all(tracker.count(i) == 1 for i in range(6))
    assert tracker.count() == 6
    for op in ops:
        op.set_callback(lambda r: None)  # break cycles through ctx
    ctx.close()


PROCESS_EVENTS_TIMEOUT_PROBE = r"""
import json, threading, time
from caio.thread_aio import EventfdContext
ctx = EventfdContext()
ticks = 0
stop = threading.Event()
def side():
    global ticks
    while not stop.wait(0.01):
        ticks += 1
t = threading.Thread(target=side)
t.start()
started = time.monotonic()
n = ctx.process_events(min_requests=1, timeout=1)
elapsed = time.monotonic() - started
stop.set()
t.join()
ctx.close()
print(json.dumps({"n": n, "elapsed": elapsed, "ticks": ticks}))
"""


def test_process_events_timeout_returns_zero_and_releases_gil():
    proc = run_python(PROCESS_EVENTS_TIMEOUT_PROBE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 0
    assert result["elapsed"] < 5  # hang guard
    assert result["elapsed"] > 0.5  # it did wait (for about a second)
    assert result["ticks"] >= 3, "another Python thread could not run during the wait"


PROCESS_EVENTS_FOREVER_PROBE = r"""
import os, sys, threading
from caio.thread_aio import EventfdContext, Operation
fd = os.open(sys.executable, os.O_RDONLY)
ctx = EventfdContext()
got = []
op = Operation.fsync(fd)
op.set_callback(got.append)
assert ctx.submit(op) == 1
n = ctx.process_events(min_requests=1, timeout=-1)
print(n, got)
"""


def test_process_events_negative_timeout_waits_for_completion():
    proc = run_python(PROCESS_EVENTS_FOREVER_PROBE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "[0]"]


def test_run_inline_small_cached_read(files):
    data = os.urandom(4096)
    fd = files.open(data)
    assert os.pread(fd, 4096, 0) == data  # make sure the pages are cached
    ctx = EventfdContext()
    op = Operation.read(4096, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.run_inline(op) is True
    # done right away, the callback ran inside run_inline on this thread
    assert tracker.ordered() == [4096]
    assert tracker.calls[0][2] == threading.get_ident()
    assert op.get_value() == data
    assert op.result == 4096
    assert ctx.submit(op) == 0
    assert ctx.run_inline(op) is False
    assert ctx.process_events() == 0
    assert tracker.count() == 1
    ctx.close()


def test_run_inline_short_read_at_eof(files):
    fd = files.open(b"tiny")
    os.pread(fd, 4, 0)
    ctx = EventfdContext()
    op = Operation.read(100, fd, 0)
    assert ctx.run_inline(op) is True
    assert op.get_value() == b"tiny"
    ctx.close()


def test_run_inline_large_read_is_left_untouched(files):
    size = 1024 * 1024
    data = os.urandom(size)
    fd = files.open(data)
    ctx = EventfdContext()
    op = Operation.read(size, fd, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.run_inline(op) is False
    assert tracker.count() == 0
    assert op.get_value() == bytes(size)  # still never submitted
    assert ctx.submit(op) == 1
    deliver(ctx, True, tracker)
    assert op.get_value() == data
    ctx.close()


def test_run_inline_errors(files):
    fd = files.open(b"abc")
    ctx = EventfdContext()
    with pytest.raises(TypeError):
        ctx.run_inline("not an operation")
    # only reads qualify
    w = Operation.write(b"x", fd, 0)
    assert ctx.run_inline(w) is False
    assert ctx.submit(w) == 1
    # an op that was already claimed is left alone
    r = Operation.read(3, fd, 0)
    tracker = Tracker(2)
    w.set_callback(tracker.callback(0))
    r.set_callback(tracker.callback(1))
    assert ctx.submit(r) == 1
    assert ctx.run_inline(r) is False
    deliver(ctx, True, tracker)
    assert tracker.count(1) == 1
    ctx.close()
    with pytest.raises(RuntimeError):
        ctx.run_inline(Operation.read(3, fd, 0))
