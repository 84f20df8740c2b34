"""Cancelled operations give their queue places back only when they are really over
(issue 9, item 13).

* Raw thread_aio: ``cancel(op)`` takes an op no worker has started out of the pool's queue; it
  completes with ECANCELED (never runs) and its queue place is free at once. A running op
  cannot be interrupted and completes normally. ``cancel`` returns how many it took out.
* Raw python_aio: ``cancel(op)`` marks an op no pool thread has started; it never runs, and
  completes with ``OSError(ECANCELED)`` when the pool reaches it, which is also when its place
  in ``max_requests`` is freed.
* The asyncio adapters: a cancelled task ends with CancelledError at once, but its semaphore
  slot goes back only when the backend is done with the op, so an uncancelled task never
  meets a backend "queue full" error.

Workers are kept busy deterministically by reads of ``/dev/kmsg`` positioned at its end, which
block until a kernel message is written (tests skip where /dev/kmsg is not usable), or, in
thread_aio's default mode, by a callback that waits on an Event (it runs on the worker).
"""

import asyncio
import errno
import os
import platform
import threading
import time
import uuid

import pytest
from conftest import (
    Calls,
    Tracker,
    module_by_short_name,
    needs_python_aio,
    needs_thread_aio,
    short_name,
)

import caio

WAIT = 10  # seconds; hang guards only

thread_aio = module_by_short_name("thread_aio")
python_aio = module_by_short_name("python_aio")


class Kmsg:
    """Read descriptors on /dev/kmsg positioned at its end: a read blocks until
    ``release()`` writes a kernel message (any other message also wakes it)."""

    def __init__(self):
        self.fds = []
        self.marker = f"caio test suite: releasing blocked workers {uuid.uuid4()}".encode()
        try:
            self.wfd = os.open("/dev/kmsg", os.O_WRONLY)
        except OSError as e:
            pytest.skip(f"/dev/kmsg is not writable: {e}")

    def blocking_fd(self):
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY)
        except OSError as e:
            pytest.skip(f"/dev/kmsg is not readable: {e}")
        os.lseek(fd, 0, os.SEEK_END)
        self.fds.append(fd)
        return fd

    def release(self):
        os.write(self.wfd, self.marker + b"\n")

    def close(self):
        for fd in self.fds:
            os.close(fd)
        os.close(self.wfd)


@pytest.fixture
def kmsg():
    k = Kmsg()
    try:
        yield k
    finally:
        k.close()


PREAD64 = {"x86_64": "17", "aarch64": "67"}.get(platform.machine())


def blocked_in_pread(fd):
    """Whether a thread of this process sleeps in pread() on ``fd`` (/proc/<tid>/syscall)."""
    if PREAD64 is None:
        pytest.skip(f"pread64's syscall number is unknown on {platform.machine()}")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if fields[:2] == [PREAD64, hex(fd)]:
            return True
    return False


def submit_when_room(ctx, op, deadline):
    """Submit ``op`` into a queue that is full until a worker picks up what it holds."""
    while True:
        try:
            assert ctx.submit(op) == 1
            return
        except RuntimeError as e:
            assert "queue full" in str(e)
        assert time.monotonic() < deadline, "the worker never picked up its request"
        time.sleep(0.001)


# ---------------------------------------------------------------------------------------------
# raw thread_aio


@needs_thread_aio
def test_thread_aio_cancel_takes_a_queued_op_out_default_mode(files):
    fd = files.open()
    ctx = thread_aio.Context(max_requests=1, pool_size=1)
    started, release = threading.Event(), threading.Event()
    blocker = thread_aio.Operation.fsync(fd)
    blocker.set_callback(lambda _: (started.set(), release.wait(60)))
    queued = thread_aio.Operation.write(b"Q" * 4096, fd, 0)
    later = thread_aio.Operation.write(b"L", fd, 8192)
    calls, later_done = Calls(), Tracker(1)
    queued.set_callback(calls)
    later.set_callback(later_done.callback(0))
    try:
        assert ctx.submit(blocker) == 1
        assert started.wait(WAIT)  # the only worker is parked in the blocker's callback
        assert ctx.submit(queued) == 1
        with pytest.raises(RuntimeError, match="queue full"):
            ctx.submit(later)

        assert ctx.cancel(blocker) == 0, "a running request cannot be interrupted"
        assert ctx.cancel(queued) == 1
        # Completed right away, on this thread, as cancelled.
        assert calls.results == [-1]
        assert calls.threads == [threading.get_ident()]
        assert queued.error == errno.ECANCELED
        assert queued.context is None
        with pytest.raises((SystemError, OSError)):
            queued.get_value()
        assert ctx.cancel(queued) == 0, "at most once"
        assert ctx.submit(queued) == 0, "never resubmitted"
        assert ctx.cancel(1, "x", None, later) == 0  # anything is accepted, as in caio

        assert ctx.submit(later) == 1, "the cancelled op's queue place is free again"
    finally:
        release.set()
    assert later_done.event.wait(WAIT)
    ctx.close()
    assert calls.results == [-1], "the cancelled op completed exactly once"
    assert os.pread(fd, 8193, 0) == bytes(8192) + b"L", "the cancelled write never ran"


@needs_thread_aio
def test_thread_aio_cancel_takes_a_queued_op_out_eventfd_mode(files, kmsg):
    fd = files.open()
    ctx = thread_aio.EventfdContext(max_requests=1, pool_size=1)
    blocker = thread_aio.Operation.read(8192, kmsg.blocking_fd(), 0)
    queued = thread_aio.Operation.write(b"Q" * 4096, fd, 0)
    later = thread_aio.Operation.write(b"L", fd, 8192)
    calls = Calls()
    queued.set_callback(calls)
    try:
        assert ctx.submit(blocker) == 1
        deadline = time.monotonic() + WAIT
        submit_when_room(ctx, queued, deadline)  # the worker is parked in pread(/dev/kmsg)
        with pytest.raises(RuntimeError, match="queue full"):
            ctx.submit(later)
        assert ctx.cancel(queued) == 1
        assert ctx.submit(later) == 1, "the cancelled op's queue place is free at once"
        assert calls.results == [], "eventfd mode: delivered by process_events()"
        assert ctx.process_events(min_requests=1, timeout=WAIT) == 1
        assert calls.results == [-1]
        assert queued.error == errno.ECANCELED
    finally:
        kmsg.release()
    delivered = 0
    while delivered < 2:
        assert time.monotonic() < deadline + WAIT, "blocker and later never completed"
        delivered += ctx.process_events(min_requests=1, timeout=1)
    ctx.close()
    assert calls.results == [-1]
    assert later.get_value() == 1
    assert os.pread(fd, 8193, 0) == bytes(8192) + b"L", "the cancelled write never ran"


# ---------------------------------------------------------------------------------------------
# raw python_aio


@needs_python_aio
def test_python_aio_cancelled_op_never_runs_and_holds_its_slot_until_it_ends(files, kmsg):
    fd = files.open()
    ctx = python_aio.Context(max_requests=2, pool_size=1)
    blocker = python_aio.Operation.read(8192, kmsg.blocking_fd(), 0)
    queued = python_aio.Operation.write(b"Q" * 4096, fd, 0)
    later = python_aio.Operation.write(b"L", fd, 8192)
    done = Tracker(2)
    blocker.set_callback(done.callback(0))
    queued.set_callback(done.callback(1))
    try:
        assert ctx.submit(blocker, queued) == 2
        assert queued.context is ctx
        assert ctx.cancel(queued) == 1
        assert ctx.cancel(queued) == 0, "at most once"
        assert ctx.cancel(1, "x", None) == 0  # anything is accepted, as in caio
        # Its pool task has not ended: its place is still taken.
        assert ctx._in_progress == 2
        with pytest.raises(RuntimeError, match="Maximum simultaneous"):
            ctx.submit(later)
    finally:
        kmsg.release()
    assert done.event.wait(WAIT)
    assert done.ordered()[1] is None  # failed ops' callbacks get None
    with pytest.raises(OSError) as info:
        queued.get_value()
    assert info.value.errno == errno.ECANCELED
    assert queued.context is None
    later_done = Tracker(1)
    later.set_callback(later_done.callback(0))
    assert ctx.submit(later) == 1
    assert later_done.event.wait(WAIT)
    assert ctx.cancel(later) == 0, "a completed op is not cancelled"
    ctx.close()
    ctx.pool.join()
    assert ctx._in_progress == 0
    assert os.pread(fd, 8193, 0) == bytes(8192) + b"L", "the cancelled write never ran"


# ---------------------------------------------------------------------------------------------
# adapters: bursts of cancellations


BURST_ADAPTERS = [
    pytest.param(name, marks=mark, id=name)
    for name, mark in (("thread_aio", needs_thread_aio), ("python_aio", needs_python_aio))
]

CHUNK = 128 * 1024  # above thread_aio's inline-read limit, so every read goes to the pool
CHUNKS = 16


@pytest.mark.parametrize("name", BURST_ADAPTERS)
def test_bursts_of_cancellations_never_make_other_tasks_fail(
    name, loop_runner, files, kmsg,
):
    (adapter,) = (m for m in caio.variants_asyncio if short_name(m) == name)
    data = b"".join(bytes([i]) * CHUNK for i in range(CHUNKS))
    fd = files.open(data)
    rounds, per_round, workers = 6, 60, 2

    async def block(ctx, fd):
        # Until our own message: another kernel message only makes it read again.
        while kmsg.marker not in await ctx.read(8192, fd, 0):
            pass

    async def one_round(ctx):
        # Both workers park in pread(/dev/kmsg): every other read stays queued.
        blockers = [
            asyncio.ensure_future(block(ctx, kmsg.blocking_fd())) for _ in range(workers)
        ]
        readers = [
            asyncio.ensure_future(ctx.read(CHUNK, fd, (i % CHUNKS) * CHUNK))
            for i in range(per_round)
        ]
        cancelled = set()
        # Waves: let tasks take the freed slots and submit, cancel a quarter of the doomed
        # ones (4 in 5 readers), again and again.
        for wave in range(4):
            for _ in range(3):
                await asyncio.sleep(0)
            for i, task in enumerate(readers):
                if i % 5 and i % 4 == wave and task.cancel():
                    cancelled.add(i)
        for _ in range(3):
            await asyncio.sleep(0)
        kmsg.release()
        results = await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*blockers)
        for i, (task, result) in enumerate(zip(readers, results)):
            if i in cancelled:
                assert task.cancelled(), result
            else:
                assert result == bytes([i % CHUNKS]) * CHUNK, (i, result)
        assert len(cancelled) > per_round // 2

    async def body():
        async with adapter.AsyncioContext(max_requests=8, pool_size=workers) as ctx:
            try:
                for _ in range(rounds):
                    await one_round(ctx)
            finally:
                kmsg.release()  # else close() would wait for the parked workers
            # Every slot comes back once the last cancelled op is over.
            deadline = time.monotonic() + WAIT
            while ctx.semaphore._value != 8:
                assert time.monotonic() < deadline, f"{8 - ctx.semaphore._value} slots lost"
                await asyncio.sleep(0.001)

    loop_runner.run(body)


@pytest.mark.parametrize("name", BURST_ADAPTERS)
def test_a_cancelled_task_ends_at_once_but_its_running_op_keeps_the_slot(
    name, loop_runner, kmsg,
):
    (adapter,) = (m for m in caio.variants_asyncio if short_name(m) == name)

    async def body():
        async with adapter.AsyncioContext(max_requests=2, pool_size=1) as ctx:
            kfd = kmsg.blocking_fd()
            task = asyncio.ensure_future(ctx.read(8192, kfd, 0))
            deadline = time.monotonic() + WAIT
            while not blocked_in_pread(kfd):  # a worker really runs it (not just queued)
                assert time.monotonic() < deadline, "no worker picked the read up"
                await asyncio.sleep(0.001)
            try:
                assert ctx.semaphore._value == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, WAIT)  # wait_for: a hang guard only
                assert ctx.semaphore._value == 1, "the op still runs: its slot stays taken"
            finally:
                kmsg.release()  # else close() would wait for the parked worker
            deadline = time.monotonic() + WAIT
            while ctx.semaphore._value != 2:
                assert time.monotonic() < deadline, "the slot never came back"
                await asyncio.sleep(0.001)

    loop_runner.run(body)
