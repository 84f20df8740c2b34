"""io_uring faults of issue 9: CQ overflow (item 11), cancel on a full SQ (item 14) and
signals during a blocking wait (item 6, linux_uring part).

- More completions than the CQ holds are kept by the kernel on its overflow list; every
  one of them must still be delivered, exactly once, and waiting must sleep, not spin.
- ``cancel()`` needs an SQ slot of its own; a momentarily full ring must not make it fail,
  so a cancelled task always ends with ``CancelledError``.
- ``process_events(1, 1, -1)`` runs Python's signal handlers: their exception
  (``KeyboardInterrupt``) ends the wait, a handler that returns lets it go on.
"""

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Calls, wait_until

try:
    from caio.linux_uring import SQPOLL_ALLOWED, Context, Operation
    from caio.linux_uring_asyncio import AsyncioContext
except ImportError as exc:  # old kernel, seccomp, io_uring_disabled, ...
    pytest.skip(f"caio.linux_uring is not available: {exc}", allow_module_level=True)

KiB = 1024
CURRENT_POSITION = 2**64 - 1  # "use the file position": what pipes need
SQPOLL_MODES = [
    pytest.param(False, id="plain"),
    pytest.param(
        True,
        id="sqpoll",
        marks=pytest.mark.skipif(not SQPOLL_ALLOWED, reason="SQPOLL not allowed here"),
    ),
]


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


# --------------------------------------------------------------------------------------------
# item 11: CQ overflow


@pytest.fixture
def pipes():
    made = []

    def make(n):
        for _ in range(n):
            made.append(os.pipe())
        return made[-n:]

    try:
        yield make
    finally:
        for r, w in made:
            os.close(r)
            os.close(w)


def submit_all(ctx, ops, batch):
    """Submits ``ops`` ``batch`` at a time, flushing after each batch: without SQPOLL the SQ
    is empty after every flush; with SQPOLL a full SQ (the polling thread is behind) is
    retried until the thread took the entries."""
    deadline = time.monotonic() + 10
    rest = list(ops)
    while rest:
        assert time.monotonic() < deadline, "the SQ never drained"
        try:
            ctx.submit(*rest[:batch])
        except OverflowError:
            pass
        ctx.flush()
        rest = [op for op in rest if op.context is None]


def overflow_the_cq(ctx, pipes, count, batch):
    """Puts ``count`` reads in flight on pipes with no data (nothing completes), then makes
    them all complete at once, with nobody reaping: the completions past the CQ's size go
    to the kernel's overflow list."""
    ends = pipes(count)
    ops = [Operation.read(8, r, CURRENT_POSITION) for r, _ in ends]
    calls = [Calls() for _ in ops]
    for op, cb in zip(ops, calls):
        op.set_callback(cb)
    submit_all(ctx, ops, batch)
    for i, (_, w) in enumerate(ends):
        os.write(w, b"%08d" % i)
    return ops, calls


def check_delivered_once(ops, calls):
    assert [cb.results for cb in calls] == [[8]] * len(ops)
    assert [op.get_value() for op in ops] == [b"%08d" % i for i in range(len(ops))]


@pytest.mark.parametrize("sqpoll", SQPOLL_MODES)
def test_cq_overflow_delivers_every_completion_once(pipes, sqpoll):
    ctx = Context(max_requests=32, sqpoll=sqpoll)  # 64 SQ slots, 128 CQ slots
    ops, calls = overflow_the_cq(ctx, pipes, 256, 32)
    delivered = 0
    deadline = time.monotonic() + 10
    spent = time.thread_time()
    while delivered < len(ops):
        assert time.monotonic() < deadline, (
            f"only {delivered} of {len(ops)} completions were delivered"
        )
        delivered += ctx.process_events(512, 1, 1)
    spent = time.thread_time() - spent
    assert delivered == len(ops)
    check_delivered_once(ops, calls)
    # Reaping 256 completions is cheap; a waiter spinning on the overflowed ring is not.
    assert spent < 0.5, f"delivering the completions took {spent:.2f} s of CPU"
    assert ctx.process_events(512, 0, 0) == 0
    assert ctx.flush() == 0


@pytest.mark.parametrize("sqpoll", SQPOLL_MODES)
def test_cq_overflow_is_reaped_by_the_adapters_drain(pipes, sqpoll):
    """The asyncio adapters' way of pumping: wait for the eventfd, reset it, then
    process_events() without waiting. That drain must fetch the overflow list too."""
    ctx = Context(max_requests=32, sqpoll=sqpoll)
    ops, calls = overflow_the_cq(ctx, pipes, 256, 32)
    delivered = 0
    deadline = time.monotonic() + 10
    while delivered < len(ops):
        assert time.monotonic() < deadline, (
            f"only {delivered} of {len(ops)} completions were delivered"
        )
        readable, _, _ = select.select([ctx.fileno], [], [], 1)
        if readable:
            ctx.poll()
        delivered += ctx.process_events(512)
    check_delivered_once(ops, calls)


def test_cq_overflow_is_reaped_by_flush_with_nothing_staged(pipes):
    ctx = Context(max_requests=32)
    ops, calls = overflow_the_cq(ctx, pipes, 256, 32)
    delivered = 0
    deadline = time.monotonic() + 10
    while delivered < len(ops):
        assert time.monotonic() < deadline, (
            f"only {delivered} of {len(ops)} completions were delivered"
        )
        select.select([ctx.fileno], [], [], 1)
        delivered += ctx.flush()
    check_delivered_once(ops, calls)


def test_an_idle_wait_sleeps():
    ctx = Context(max_requests=8)
    spent = time.thread_time()
    started = time.monotonic()
    assert ctx.process_events(1, 1, 1) == 0
    elapsed = time.monotonic() - started
    spent = time.thread_time() - spent
    assert elapsed >= 0.9
    assert spent < 0.3, f"a 1 s idle wait used {spent:.2f} s of CPU"


@pytest.mark.parametrize("sqpoll", SQPOLL_MODES)
def test_a_wait_on_an_overflowed_ring_sleeps(pipes, sqpoll):
    """Once what overflowed has been delivered, a wait with nothing to come sleeps."""
    ctx = Context(max_requests=32, sqpoll=sqpoll)
    ops, calls = overflow_the_cq(ctx, pipes, 256, 32)
    delivered = ctx.process_events(512)  # what fits in the CQ
    deadline = time.monotonic() + 10
    while delivered < len(ops) and time.monotonic() < deadline:
        spent = time.thread_time()
        delivered += ctx.process_events(512, 1, 1)
        spent = time.thread_time() - spent
        assert spent < 0.3, f"a wait on the overflowed ring used {spent:.2f} s of CPU"
    spent = time.thread_time()
    assert ctx.process_events(1, 1, 1) == 0
    spent = time.thread_time() - spent
    assert spent < 0.3, f"a 1 s wait with nothing to come used {spent:.2f} s of CPU"
    check_delivered_once(ops, calls)
