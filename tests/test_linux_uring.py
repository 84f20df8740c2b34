"""The io_uring backend: ``caio.linux_uring`` (raw Context/Operation) and
``caio.linux_uring_asyncio.AsyncioContext``.

Behaviour shared by every backend lives in test_raw_common.py / test_adapters.py /
test_bad_input.py, and the Context contract of the native backends (poll, process_events
limits and waits, the parked waiter, callbacks, claims, references) in
test_context_contract.py; this file covers what is specific to io_uring: staging vs
flushing, requests pending in the kernel (pipes), ring overflow, cancel and its sentinel
completions, and our extras (``Context.run_inline``, sqpoll=False default, RuntimeError
after ``close()``, punting of large requests).

aiofile on linux_uring_asyncio is covered by tests/test_aiofile.py (parametrised over
``caio.variants_asyncio``), so it is not repeated here.
"""

import asyncio
import errno
import gc
import os
import select
import sys
import threading
import time
import weakref
from collections import Counter

import pytest
from conftest import Calls, LoopRunner, pump_until, run_ops, run_python

try:
    from caio import linux_uring
    from caio.linux_uring import SQPOLL_ALLOWED, Context, Operation
    from caio.linux_uring_asyncio import AsyncioContext as UringAsyncioContext
except ImportError as exc:  # old kernel, seccomp, io_uring_disabled, ...
    pytest.skip(f"caio.linux_uring is not available: {exc}", allow_module_level=True)

MiB = 1024 * 1024
CURRENT_POSITION = 2**64 - 1  # offset -1: "current file position" (pipes)
ECANCELED = errno.ECANCELED


# --------------------------------------------------------------------------------------------
# helpers


def fill_pipe(w):
    """Fill the pipe behind ``w`` so that the next write blocks."""
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"\xff" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(w, True)


def wait_readable(fd, timeout=10.0):
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, f"fd {fd} did not become readable within {timeout}s"


def reset_eventfd(ctx):
    while True:
        try:
            ctx.poll()
        except BlockingIOError:
            return


@pytest.fixture
def pipe():
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


class CountingContext:
    """Stands in for an adapter's Context and counts calls of selected methods."""

    COUNTED = ("submit", "flush", "run_inline", "process_events")

    def __init__(self, inner):
        self.inner = inner
        self.counts = Counter()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name not in self.COUNTED:
            return attr

        def counted(*args, **kwargs):
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted


# --------------------------------------------------------------------------------------------
# module and Context construction


def test_module_exports():
    assert linux_uring.__name__ == "caio.linux_uring"
    assert isinstance(SQPOLL_ALLOWED, bool)
    assert set(linux_uring.__all__) >= {"SQPOLL_ALLOWED", "Context", "Operation"}


def test_context_max_requests():
    assert Context().max_requests == 32
    assert Context(0).max_requests == 32
    assert Context(max_requests=0).max_requests == 32
    assert Context(7).max_requests == 7
    assert Context(32218).max_requests == 32218  # 32219 entries fit the kernel's 32768
    with pytest.raises(SystemError):
        Context(65535)  # asks for 65536 entries: EINVAL from io_uring_setup


def test_context_bad_arguments():
    with pytest.raises(TypeError):
        Context("32")
    with pytest.raises(TypeError):
        Context(32.0)
    with pytest.raises(TypeError):
        Context(max_requests=32, bogus=1)


def test_sqpoll_property():
    assert Context().sqpoll == 0
    assert Context(sqpoll=False).sqpoll == 0
    ctx = Context(sqpoll=True)  # falls back on its own when SQPOLL is refused
    assert ctx.sqpoll in (0, 1)
    if SQPOLL_ALLOWED:
        assert ctx.sqpoll == 1
    assert Context(max_requests=8, sqpoll=1).sqpoll in (0, 1)


def test_sqpoll_context_round_trip(files):
    fd = files.open()
    ctx = Context(sqpoll=True)
    assert ctx.sqpoll in (0, 1)
    w = Operation.write(b"sqpoll says hi", fd, 0)
    assert run_ops(ctx, w) == [[14]]
    r = Operation.read(64, fd, 0)
    s = Operation.fdsync(fd)
    assert run_ops(ctx, r, s) == [[14], [0]]
    assert r.get_value() == b"sqpoll says hi"
    # the staged-op counts survive many rounds in SQPOLL mode
    ops = [Operation.read(2, fd, i) for i in range(12)]
    assert run_ops(ctx, *ops) == [[2]] * 12
    assert [op.get_value() for op in ops] == [b"sqpoll says hi"[i:i + 2] for i in range(12)]


# --------------------------------------------------------------------------------------------
# submit / flush / process_events


def test_submit_flush_drain(files):
    fd = files.open(b"0123456789")
    ctx = Context()
    read = Operation.read(4, fd, 2)
    write = Operation.write(b"XY", fd, 10)
    fsync = Operation.fsync(fd)
    fdsync = Operation.fdsync(fd)
    ops = [read, write, fsync, fdsync]
    calls = [Calls() for _ in ops]
    for op, cb in zip(ops, calls):
        assert op.set_callback(cb) is True

    assert ctx.submit(*ops) == 4
    delivered = ctx.flush()  # inline completions only; not the number submitted
    assert 0 <= delivered <= 4
    deadline = time.monotonic() + 10
    while sum(len(cb.results) for cb in calls) < 4:
        assert time.monotonic() < deadline
        delivered += ctx.process_events(min_requests=1, timeout=1)
    assert delivered == 4  # flush and process_events count real completions
    assert ctx.process_events() == 0

    assert [cb.results for cb in calls] == [[4], [2], [0], [0]]
    # callbacks ran on the thread that flushed / processed events
    assert {t for cb in calls for t in cb.threads} == {threading.get_ident()}
    assert read.get_value() == b"2345"
    assert (read.result, read.error, read.nbytes) == (4, 0, 4)
    assert write.get_value() == 2
    assert (write.result, write.error) == (2, 0)
    assert fsync.get_value() is None and fdsync.get_value() is None
    for op in ops:
        assert op.context is None
    assert os.pread(fd, 20, 0) == b"0123456789XY"


def test_submit_makes_no_syscall(pipe):
    r, w = pipe
    os.set_blocking(r, False)
    ctx = Context(sqpoll=False)
    op = Operation.write(b"ping", w, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)

    assert ctx.submit(op, op) == 1  # the same op twice counts once
    assert op.context is ctx
    with pytest.raises(RuntimeError, match="in flight"):
        op.get_value()
    with pytest.raises(RuntimeError, match="in flight"):
        op.payload  # noqa: B018
    # staged only: the kernel has not seen the write, the pipe is still empty
    with pytest.raises(BlockingIOError):
        os.read(r, 16)
    assert ctx.process_events() == 0
    with pytest.raises(BlockingIOError):
        os.read(r, 16)
    assert calls.results == []
    assert op.context is ctx

    pump_until(ctx, lambda: calls.results)
    assert calls.results == [4]
    assert os.read(r, 16) == b"ping"
    assert ctx.submit(op) == 0  # completed: never accepted again
    assert ctx.submit(op, op) == 0
    assert ctx.flush() == 0  # ... so nothing was staged
    assert calls.results == [4]


def test_submit_without_operations_and_flush_without_staged():
    ctx = Context()
    assert ctx.submit() == 0
    assert ctx.flush() == 0
    assert ctx.process_events() == 0
    assert ctx.process_events(min_requests=0, timeout=5) == 0  # min 0: never waits


def test_process_events_blocks_until_a_completion_arrives(pipe):
    r, w = pipe
    ctx = Context()
    op = Operation.read(16, r, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)
    assert ctx.submit(op) == 1
    assert ctx.flush() == 0  # the pipe is empty: the read is pending in the kernel

    returned = []
    parking = threading.Event()

    def waiter():
        parking.set()
        returned.append(ctx.process_events(min_requests=1, timeout=-1))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert parking.wait(10)
    t.join(0.1)  # not synchronisation: nothing has completed, so it must still wait
    assert t.is_alive() and returned == []
    os.write(w, b"wake")
    t.join(10)
    assert not t.is_alive(), "process_events(timeout=-1) did not return after a completion"
    assert returned[0] >= 1
    assert calls.results == [4]
    assert calls.threads == [t.ident]
    assert op.get_value() == b"wake"


def test_eventfd_signals_completions(pipe):
    r, w = pipe
    ctx = Context()
    op = Operation.read(8, r, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)
    ctx.submit(op)
    ctx.flush()
    reset_eventfd(ctx)
    os.write(w, b"evt")
    wait_readable(ctx.fileno)  # what the asyncio adapter's add_reader relies on
    assert ctx.poll() >= 1
    assert ctx.process_events() == 1
    assert calls.results == [3]


@pytest.mark.parametrize("sqpoll", [False, True], ids=["plain", "sqpoll"])
def test_ring_full_keeps_earlier_ops_in_flight(files, sqpoll):
    data = bytes(range(64))
    fd = files.open(data)
    ctx = Context(max_requests=7, sqpoll=sqpoll)  # 8 entries after the +1 headroom
    ops = [Operation.read(1, fd, i) for i in range(64)]
    calls = [Calls() for _ in ops]
    for op, cb in zip(ops, calls):
        op.set_callback(cb)

    with pytest.raises(OverflowError, match="io_uring SQ ring full"):
        ctx.submit(*ops)
    staged = [op for op in ops if op.context is ctx]
    count = len(staged)
    assert 8 <= count < 64
    assert staged == ops[:count]  # a prefix of the call, in order
    for op in ops[count:]:
        assert op.context is None

    # the staged ops were published: they complete
    pump_until(ctx, lambda: all(cb.results for cb in calls[:count]))
    assert [cb.results for cb in calls[:count]] == [[1]] * count
    assert all(cb.results == [] for cb in calls[count:])
    assert ctx.submit(*ops[:count]) == 0  # completed ops are never accepted again

    # the overflowing op and the rest were never claimed: they can still be submitted
    rest = ops[count:]
    while rest:
        batch, rest = rest[:count], rest[count:]
        assert ctx.submit(*batch) == len(batch)
        pump_until(ctx, lambda batch=batch: all(op.context is None for op in batch))
    assert [cb.results for cb in calls] == [[1]] * 64
    assert b"".join(op.get_value() for op in ops) == data


# --------------------------------------------------------------------------------------------
# cancel


def test_cancel_blocked_pipe_read(pipe):
    r, w = pipe
    ctx = Context()
    op = Operation.read(16, r, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)
    assert ctx.submit(op) == 1
    assert ctx.flush() == 0
    assert op.context is ctx

    assert ctx.cancel(op) == 0
    pump_until(ctx, lambda: calls.results)
    assert calls.results == [-ECANCELED]
    assert op.error == ECANCELED
    assert op.result == -ECANCELED
    with pytest.raises(SystemError):
        op.get_value()
    assert op.context is None
    assert ctx.submit(op) == 0  # a cancelled op is never resubmitted
    assert ctx.process_events() == 0
    # the cancelled read consumed nothing
    os.write(w, b"still here")
    assert os.read(r, 64) == b"still here"
    assert calls.results == [-ECANCELED]


def test_cancel_of_finished_op(files):
    fd = files.open(b"done")
    ctx = Context()
    op = Operation.read(4, fd, 0)
    calls = Calls()
    op.set_callback(calls)
    assert ctx.submit(op) == 1
    pump_until(ctx, lambda: calls.results)
    reset_eventfd(ctx)

    assert ctx.cancel(op) == 0
    wait_readable(ctx.fileno)  # the cancel's own completion signals the eventfd
    assert ctx.poll() > 0
    assert ctx.process_events() == 0  # ... but is never counted
    assert ctx.process_events(min_requests=0, timeout=1) == 0
    assert calls.results == [4]  # and never calls a callback
    assert op.get_value() == b"done"
    assert op.error == 0


def test_cancel_sentinel_does_not_satisfy_min_requests(files, pipe):
    """A blocking wait counts real completions only, not the sentinel completion a cancel
    leaves behind."""
    r, w = pipe
    fd = files.open(b"done")
    ctx = Context()
    finished = Operation.read(4, fd, 0)
    assert run_ops(ctx, finished) == [[4]]

    pending = Operation.read(16, r, CURRENT_POSITION)
    calls = Calls()
    pending.set_callback(calls)
    assert ctx.submit(pending) == 1
    assert ctx.flush() == 0
    assert ctx.cancel(finished) == 0  # leaves a sentinel completion behind
    wait_readable(ctx.fileno)

    waiting = threading.Event()

    def writer():
        assert waiting.wait(10)
        os.write(w, b"real")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    waiting.set()
    assert ctx.process_events(min_requests=1, timeout=5) == 1
    t.join(10)
    assert calls.results == [4]
    assert pending.get_value() == b"real"


def test_cancel_through_another_context_leaves_the_op_alone(pipe):
    r, w = pipe
    owner = Context()
    other = Context()
    op = Operation.read(16, r, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)
    assert owner.submit(op) == 1
    assert owner.flush() == 0

    assert other.cancel(op) == 0
    wait_readable(other.fileno)  # other's cancel completed (as a sentinel)
    assert other.process_events() == 0
    assert owner.process_events() == 0
    assert op.context is owner
    assert calls.results == []

    os.write(w, b"untouched")
    pump_until(owner, lambda: calls.results)
    assert calls.results == [9]
    assert op.get_value() == b"untouched"
    assert op.error == 0


# --------------------------------------------------------------------------------------------
# callbacks on other threads


def test_submit_on_one_thread_drain_on_another(files):
    fd = files.open(b"cross-thread")
    ctx = Context()  # never SINGLE_ISSUER: any thread may use the ring
    op = Operation.read(5, fd, 6)
    calls = Calls()
    op.set_callback(calls)

    submitted = []
    t = threading.Thread(target=lambda: submitted.append(ctx.submit(op)))
    t.start()
    t.join(10)
    assert submitted == [1]
    assert op.context is ctx

    def drain():
        pump_until(ctx, lambda: calls.results)

    t = threading.Thread(target=drain)
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert calls.results == [5]
    assert calls.threads == [t.ident]
    assert op.get_value() == b"threa"

    # and the other way round: a thread submits and flushes, this thread processes events
    op2 = Operation.read(5, fd, 0)
    calls2 = Calls()
    op2.set_callback(calls2)
    flushed = []
    t = threading.Thread(target=lambda: flushed.append((ctx.submit(op2), ctx.flush())))
    t.start()
    t.join(10)
    assert flushed and flushed[0][0] == 1
    pump_until(ctx, lambda: calls2.results)
    assert calls2.results == [5]
    assert op2.get_value() == b"cross"


# --------------------------------------------------------------------------------------------
# references, op.context and GC while a request is pending in the kernel


def test_op_context_keeps_the_context_alive(pipe):
    r, w = pipe
    ctx = Context()
    ref = weakref.ref(ctx)
    op = Operation.read(8, r, CURRENT_POSITION)
    calls = Calls()
    op.set_callback(calls)
    assert op.context is None
    assert ctx.submit(op) == 1
    assert op.context is ctx
    assert ctx.flush() == 0
    del ctx
    gc.collect()
    assert ref() is not None
    assert op.context is ref()
    assert op.context.max_requests == 32

    os.write(w, b"alive")
    pump_until(op.context, lambda: calls.results)
    assert calls.results == [5]
    assert op.context is None
    gc.collect()
    assert ref() is None


def test_pipe_blocked_write_lets_the_context_go(pipe):
    r, w = pipe
    fill_pipe(w)
    ctx = Context()
    ref = weakref.ref(ctx)
    payload = b"w" * 4096
    op = Operation.write(payload, w, -1)
    assert op.offset == CURRENT_POSITION
    calls = Calls()
    op.set_callback(calls)
    assert ctx.submit(op) == 1
    assert ctx.flush() == 0  # the pipe is full: the write waits in the kernel
    assert op.context is ctx

    os.set_blocking(r, False)
    drained = 0
    while not calls.results:
        try:
            drained += len(os.read(r, 65536))
        except BlockingIOError:
            pass
        ctx.process_events(min_requests=1, timeout=1)
    assert calls.results == [4096]
    assert drained >= 4096
    assert op.context is None
    assert op.payload is payload
    del ctx
    gc.collect()
    assert ref() is None


def test_in_flight_op_without_python_references_survives_gc(pipe):
    r, w = pipe
    ctx = Context()
    calls = Calls()
    op = Operation.read(16, r, CURRENT_POSITION)
    op.set_callback(calls)
    assert ctx.submit(op) == 1
    assert ctx.flush() == 0
    ref = weakref.ref(op)
    del op
    gc.collect()
    assert ref() is not None  # the engine's reference keeps it (invisible to GC)

    os.write(w, b"survivor")
    pump_until(ctx, lambda: calls.results)
    assert calls.results == [8]
    gc.collect()
    assert ref() is None  # released once delivered
    assert ctx.process_events() == 0
    assert calls.results == [8]


def test_abandoned_context_runs_each_callback_at_most_once():
    code = r"""
import gc, os
from caio.linux_uring import Context, Operation

r, w = os.pipe()
ctx = Context()
staged = Operation.read(4, r, -1)
staged.set_callback(lambda res: os.write(1, b"CALLBACK staged %d\n" % res))
ctx.submit(staged)
kernel = Context()
pending = Operation.read(4, r, -1)
pending.set_callback(lambda res: os.write(1, b"CALLBACK pending %d\n" % res))
kernel.submit(pending)
kernel.flush()
del ctx, staged, kernel, pending
gc.collect()
os.write(w, b"late")
gc.collect()
os.write(1, b"END\n")  # (one write each: the callback may run on another thread)
"""
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    # The dropped Contexts are drained in the background (README, Lifetimes): the 4 bytes
    # complete one of the two reads, whose callback runs once; the other read is still in
    # flight at exit, and nothing runs during interpreter finalization.
    assert proc.stdout.count("CALLBACK") <= 1, proc.stdout
    assert "CALLBACK" not in proc.stdout.replace("CALLBACK staged 4", "").replace(
        "CALLBACK pending 4", ""), proc.stdout
    assert "END" in proc.stdout


# --------------------------------------------------------------------------------------------
# bad input


def test_str_arguments_raise_type_error(files):
    fd = files.open()
    calls = [
        lambda: Operation.read("1", fd),
        lambda: Operation.read(1, str(fd)),
        lambda: Operation.read(1, fd, "0"),
        lambda: Operation.write(b"x", str(fd)),
        lambda: Operation.write(b"x", fd, "0"),
        lambda: Operation.fsync(str(fd)),
        lambda: Operation.fdsync(str(fd)),
        lambda: Operation.read(1.0, fd),
        lambda: Operation.read(1, fd, None),
    ]
    for make in calls:
        with pytest.raises(TypeError):
            make()


@pytest.mark.parametrize(
    "make_payload",
    [
        lambda: "abc",
        lambda: [97, 98, 99],
        lambda: None,
    ],
    ids=["str", "list", "None"],
)
def test_payload_without_the_buffer_protocol_raises_value_error(files, make_payload):
    fd = files.open()
    payload = make_payload()
    before = sys.getrefcount(payload)
    for _ in range(10):
        with pytest.raises(ValueError, match="bytes"):
            Operation.write(payload, fd, 0)
    if payload is not None:  # None's count moves with everything else the interpreter does
        assert sys.getrefcount(payload) == before


def test_bytes_subclass_payload_is_accepted(files):
    class Payload(bytes):
        pass

    fd = files.open()
    ctx = Context()
    op = Operation.write(Payload(b"sub"), fd, 0)
    assert run_ops(ctx, op) == [[3]]
    assert os.pread(fd, 8, 0) == b"sub"


def test_nbytes_beyond_the_io_uring_limit():
    with pytest.raises(OverflowError):
        Operation.read(2**32, 0)
    with pytest.raises(OverflowError):
        Operation.read(2**63, 0)


def test_offset_and_fd_are_unsigned(files):
    fd = files.open()
    assert Operation.read(1, fd, -1).offset == CURRENT_POSITION
    assert Operation.write(b"x", fd, CURRENT_POSITION).offset == CURRENT_POSITION
    assert Operation.fsync(fd).offset == 0


def test_failed_constructions_do_not_leak(files):
    fd = files.open()
    attempts = [
        lambda: Operation.read("1", fd),
        lambda: Operation.write("x", fd, 0),
        lambda: Operation.write(b"x", "fd"),
        lambda: Operation.fsync(None),
        lambda: Operation.read(2**32, fd),
        lambda: Context("x"),
    ]
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(500):
        for attempt in attempts:
            try:
                attempt()
            except (TypeError, ValueError, OverflowError):
                pass
            else:
                raise AssertionError("construction should have failed")
    gc.collect()
    assert len(gc.get_objects()) - before < 100


# --------------------------------------------------------------------------------------------
# Context.run_inline (our extra)


def test_run_inline_declines_a_read_that_would_block(pipe):
    r, w = pipe
    ctx = Context()
    blocked = Operation.read(4, r, CURRENT_POSITION)  # would block
    blocked_calls = Calls()
    blocked.set_callback(blocked_calls)
    assert ctx.run_inline(blocked) is False
    assert blocked_calls.results == []
    assert blocked.context is None
    # it still runs normally afterwards
    assert ctx.submit(blocked) == 1
    assert ctx.run_inline(blocked) is False  # in flight
    os.write(w, b"pipe")
    pump_until(ctx, lambda: blocked_calls.results)
    assert blocked_calls.results == [4]
    assert blocked.get_value() == b"pipe"


def test_run_inline_short_read_at_current_position(files):
    fd = files.open(b"0123456789")
    os.lseek(fd, 0, os.SEEK_SET)
    ctx = Context()
    op = Operation.read(16, fd, CURRENT_POSITION)
    if ctx.run_inline(op):
        assert op.get_value() == b"0123456789"  # actual: b"01234567899"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    else:  # declined: nothing may have moved
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0


def test_run_inline_short_pipe_read_keeps_the_data(pipe):
    r, w = pipe
    os.write(w, b"after")
    ctx = Context()
    op = Operation.read(16, r, CURRENT_POSITION)
    if ctx.run_inline(op):
        assert op.get_value() == b"after"
    else:  # declined, so the op is untouched and the data still in the pipe
        os.set_blocking(r, False)
        assert os.read(r, 16) == b"after"  # actual: BlockingIOError, the bytes are gone


def test_adapter_short_pipe_read(pipe):
    """upstream caio returns the 5 available bytes; the inline path loses them and the ring
    read then waits forever (hang guard: 2 s)."""
    r, w = pipe
    os.write(w, b"after")

    async def body():
        async with UringAsyncioContext() as ctx:
            return await ctx.read(16, r, CURRENT_POSITION)

    assert LoopRunner(asyncio.new_event_loop).run(body, timeout=2) == b"after"


# --------------------------------------------------------------------------------------------
# asyncio adapter (caio's behaviour and our extras)


def test_adapter_sqpoll_deferred_round_trip(loop_runner, files):
    fd = files.open()
    parts = [bytes([65 + i]) * 1000 for i in range(20)]

    async def body():
        ctx = UringAsyncioContext(max_requests=8, sqpoll=True, deferred=True)
        try:
            assert ctx.context.sqpoll in (0, 1)
            assert ctx.deferred is True
            assert ctx.context.max_requests == 8
            assert await ctx.write(b"hello uring", fd, 0) == 11
            assert await ctx.read(64, fd, 0) == b"hello uring"
            written = await asyncio.gather(
                *(ctx.write(p, fd, i * 1000) for i, p in enumerate(parts))
            )
            assert written == [1000] * 20
            await ctx.fdsync(fd)
            assert await ctx.read(20 * 1000, fd, 0) == b"".join(parts)
            assert await ctx.read(100 * 1024, fd, 0) == b"".join(parts)  # punted size
        finally:
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 20 * 1000, 0) == b"".join(parts)


def test_adapter_defaults_and_closed_context(loop_runner, files):
    fd = files.open(b"data")

    async def body():
        ctx = UringAsyncioContext()
        # Not as caio (on when allowed): the polling thread costs more than it saves
        # (README, Performance).
        assert ctx.context.sqpoll == 0
        assert ctx.deferred is False
        assert ctx.context.max_requests == 512
        assert await ctx.read(4, fd, 0) == b"data"
        with pytest.raises(ValueError, match="Operation object expected"):
            await ctx.submit(object())
        ctx.close()
        ctx.close()  # idempotent
        with pytest.raises(RuntimeError):
            await ctx.read(4, fd, 0)
        with pytest.raises(RuntimeError):
            await ctx.write(b"x", fd, 0)
        with pytest.raises(RuntimeError):
            await ctx.fsync(fd)

        explicit = UringAsyncioContext(max_requests=4, sqpoll=True)
        try:
            assert explicit.context.sqpoll == int(SQPOLL_ALLOWED)  # what was negotiated
            assert await explicit.read(4, fd, 0) == b"data"
        finally:
            explicit.close()

    loop_runner.run(body)
    assert os.pread(fd, 8, 0) == b"data"


def test_adapter_small_cached_read_skips_the_ring(loop_runner, files):
    fd = files.open(b"s" * (200 * 1024))

    async def body():
        ctx = UringAsyncioContext()
        counting = CountingContext(ctx.context)
        ctx.context = counting
        try:
            assert await ctx.read(100, fd, 0) == b"s" * 100
            assert counting.counts["run_inline"] == 1
            assert counting.counts["submit"] == 0
            assert counting.counts["flush"] == 0
            assert await ctx.read(128 * 1024, fd, 0) == b"s" * (128 * 1024)
            assert counting.counts["submit"] == 1  # too big for the inline path
        finally:
            ctx.close()

    loop_runner.run(body)


def test_adapter_deferred_batches_flushes(loop_runner, files):
    fd = files.open()
    size = 68 * 1024  # over the inline-write limit: these reach the ring
    parts = [bytes([i]) * size for i in range(64)]

    async def body():
        # deferred batching applies without SQPOLL (with it, each submit flushes)
        ctx = UringAsyncioContext(deferred=True, sqpoll=False)
        counting = CountingContext(ctx.context)
        ctx.context = counting
        try:
            written = await asyncio.gather(
                *(ctx.write(p, fd, i * size) for i, p in enumerate(parts))
            )
            assert written == [size] * 64
            assert counting.counts["submit"] == 64
            assert counting.counts["flush"] == 1  # one flush for the whole loop iteration
            await ctx.fdsync(fd)
            assert await ctx.read(64 * size, fd, 0) == b"".join(parts)
            chunks = await asyncio.gather(*(ctx.read(size, fd, i * size) for i in range(64)))
            assert chunks == parts
        finally:
            ctx.close()

    loop_runner.run(body)
    assert os.pread(fd, 64 * size, 0) == b"".join(parts)


def test_adapter_cancellation_of_a_blocked_read(loop_runner, pipe):
    r, w = pipe

    async def body():
        async with UringAsyncioContext() as ctx:
            op = Operation.read(16, r, CURRENT_POSITION)
            task = asyncio.ensure_future(ctx.submit(op))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not task.done()
            assert op.context is ctx.context
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the kernel's -ECANCELED arrives through the eventfd reader (hang guard:
            # the runner's timeout)
            while op.context is not None:
                await asyncio.sleep(0.001)
            assert op.error == ECANCELED
            os.write(w, b"after the cancel")  # 16 bytes: nothing was taken by the cancelled op
            assert await ctx.read(16, r, CURRENT_POSITION) == b"after the cancel"

    loop_runner.run(body)


def test_adapter_256mib_read_completes(files):
    size = 256 * MiB
    fd = files.open()
    for i in range(size // MiB):
        os.pwrite(fd, bytes([i % 251]) * MiB, i * MiB)  # written, so in the page cache

    async def body():
        loop = asyncio.get_running_loop()
        stop = False
        stall = 0.0
        ticks = 0

        async def ticker():
            nonlocal stall, ticks
            last = loop.time()
            while not stop:
                await asyncio.sleep(0.001)
                now = loop.time()
                stall = max(stall, now - last)
                last = now
                ticks += 1

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        async with UringAsyncioContext() as ctx:
            started = time.monotonic()
            data = await ctx.read(size, fd, 0)
            elapsed = time.monotonic() - started
        stop = True
        await task
        print(
            f"256 MiB read: {elapsed * 1000:.0f} ms, {ticks} ticks, "
            f"largest loop stall {stall * 1000:.1f} ms"
        )
        return data

    data = LoopRunner(asyncio.new_event_loop).run(body)
    assert len(data) == size
    for i in (0, 1, 128, 255):
        assert data[i * MiB] == i % 251
        assert data[(i + 1) * MiB - 1] == i % 251
