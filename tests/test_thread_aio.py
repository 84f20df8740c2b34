"""caio.thread_aio specifics (what every native backend shares is in
test_context_contract.py), in both completion-delivery modes:

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

import os
import sys
import threading
import time

import pytest
from conftest import CallbackBlocker, Tracker, module_by_short_name, needs_thread_aio

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

    with CallbackBlocker(ctx, Operation, fd):
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
# eventfd mode: run_inline


def test_run_inline_after_close_raises_runtime_error(files):
    fd = files.open(b"abc")
    ctx = EventfdContext()
    ctx.close()
    op = Operation.read(3, fd, 0)
    with pytest.raises(RuntimeError):
        ctx.run_inline(op)
    assert op.context is None
    assert op.get_value() == bytes(3)
