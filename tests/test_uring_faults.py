"""io_uring faults of issue 9: CQ overflow (item 11), cancel on a full SQ (item 14) and
signals during a blocking wait (item 6, linux_uring part).

- More completions than the CQ holds are kept by the kernel on its overflow list; every
  one of them must still be delivered, exactly once, and waiting must sleep, not spin.
- A momentarily full SQ (entries the kernel or the SQPOLL thread has not taken yet) must
  not make ``cancel()`` fail, nor a cancel take the slot of the next submission: a
  cancelled task always ends with ``CancelledError``.
- ``process_events(1, 1, -1)`` runs Python's signal handlers: their exception
  (``KeyboardInterrupt``) ends the wait, a handler that returns lets it go on.
"""

import asyncio
import errno
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
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
    assert delivered == len(ops)
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
    assert delivered == len(ops)
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


# --------------------------------------------------------------------------------------------
# item 14: cancel on a full SQ


def threads():
    """{tid: (name, state)} of this process's threads."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        found[tid] = (comm, stat.rsplit(")", 1)[1].split()[0])
    return found


def fill_the_sq(ctx, pipes, count):
    """Stages ``count`` reads on pipes with no data; submit() makes no syscall, so without
    SQPOLL (or with its thread asleep) they all stay in the SQ."""
    ends = pipes(count)
    ops = [Operation.read(8, r, CURRENT_POSITION) for r, _ in ends]
    calls = [Calls() for _ in ops]
    for op, cb in zip(ops, calls):
        op.set_callback(cb)
    assert ctx.submit(*ops) == count
    return ops, calls, ends


def check_cancel_on_a_full_sq(ctx, ops, calls, ends):
    assert ctx.cancel(ops[0]) == 0  # the SQ is full: cancel makes room for itself
    ctx.flush()
    deadline = time.monotonic() + 10
    while not calls[0].results:
        assert time.monotonic() < deadline, "the cancelled read did not complete"
        ctx.process_events(512, 1, 1)
    assert calls[0].results == [-errno.ECANCELED]
    # The others were handed to the kernel intact: they complete with their data.
    for i, (_, w) in enumerate(ends[1:], 1):
        os.write(w, b"%08d" % i)
    while not all(cb.results for cb in calls):
        assert time.monotonic() < deadline, "the other reads did not complete"
        ctx.process_events(512, 1, 1)
    assert [cb.results for cb in calls[1:]] == [[8]] * (len(ops) - 1)
    assert [op.get_value() for op in ops[1:]] == [b"%08d" % i for i in range(1, len(ops))]


def test_cancel_on_a_full_sq_without_sqpoll(pipes):
    ctx = Context(max_requests=7)  # 8 SQ slots
    ops, calls, ends = fill_the_sq(ctx, pipes, 8)
    with pytest.raises(OverflowError, match="SQ ring full"):
        ctx.submit(Operation.read(8, ends[0][0], CURRENT_POSITION))
    check_cancel_on_a_full_sq(ctx, ops, calls, ends)


@pytest.mark.skipif(not SQPOLL_ALLOWED, reason="SQPOLL not allowed here")
def test_cancel_on_a_full_sq_with_the_sqpoll_thread_asleep(pipes):
    before = set(threads())
    ctx = Context(max_requests=7, sqpoll=True)
    assert ctx.sqpoll

    def polling_thread_asleep():
        # The new thread takes its name (iou-sqp-<pid>) once it runs. Asleep (state S),
        # it takes no entries until something wakes it, so the reads staged next fill
        # the SQ for sure.
        ours = [state for tid, (name, state) in threads().items()
                if tid not in before and name.startswith("iou-sqp-")]
        return ours == ["S"]

    wait_until(polling_thread_asleep, timeout=10,
               message="the SQPOLL thread never went to sleep")
    ops, calls, ends = fill_the_sq(ctx, pipes, 8)
    check_cancel_on_a_full_sq(ctx, ops, calls, ends)


@pytest.mark.parametrize("sqpoll", SQPOLL_MODES)
def test_cancel_of_ops_not_in_flight_on_the_ring_touches_nothing(files, pipes, sqpoll):
    """A cancel that finds nothing (finished, never submitted, another ring's op) returns
    0, calls no callback and leaves the rings working."""
    fd = files.open(b"done")
    ctx = Context(max_requests=7, sqpoll=sqpoll)
    other = Context(max_requests=7, sqpoll=sqpoll)
    finished = Operation.read(4, fd, 0)
    calls = Calls()
    finished.set_callback(calls)
    assert ctx.submit(finished) == 1
    deadline = time.monotonic() + 10
    ctx.flush()
    while not calls.results:
        assert time.monotonic() < deadline
        ctx.process_events(512, 1, 1)
    (r, w), = pipes(1)
    elsewhere = Operation.read(8, r, CURRENT_POSITION)
    elsewhere_calls = Calls()
    elsewhere.set_callback(elsewhere_calls)
    assert other.submit(elsewhere) == 1
    other.flush()

    assert ctx.cancel(finished) == 0
    assert ctx.cancel(Operation.read(4, fd, 0)) == 0
    assert ctx.cancel(elsewhere) == 0
    assert ctx.process_events(512, 0, 0) == 0
    assert calls.results == [4]
    assert finished.get_value() == b"done"
    os.write(w, b"elsewhr!")
    while not elsewhere_calls.results:
        assert time.monotonic() < deadline
        other.process_events(512, 1, 1)
    assert elsewhere_calls.results == [8]
    assert elsewhere.get_value() == b"elsewhr!"
    again = Operation.read(4, fd, 0)
    again_calls = Calls()
    again.set_callback(again_calls)
    assert ctx.submit(again) == 1
    ctx.flush()
    while not again_calls.results:
        assert time.monotonic() < deadline
        ctx.process_events(512, 1, 1)
    assert again.get_value() == b"done"


@pytest.mark.parametrize("sqpoll", SQPOLL_MODES)
def test_cancelled_tasks_on_a_busy_ring_end_cancelled(loop_runner, files, sqpoll):
    """Many tasks on a small ring cancelled over and over: every one ends with
    CancelledError (never the cancel's own failure), and the ring works afterwards."""
    size = 128 * KiB  # above the inline limit: every read goes through the ring
    data = os.urandom(size)
    fd = files.open(data)

    async def body():
        ctx = AsyncioContext(max_requests=4, sqpoll=sqpoll)
        try:
            async def reader():
                while True:
                    assert await ctx.read(size, fd, 0) == data

            outcomes = Counter()
            for _ in range(40):
                tasks = [asyncio.ensure_future(reader()) for _ in range(16)]
                for step in range(8):
                    await asyncio.sleep(0)
                    # Cancel a few at a time: their slots go to waiting tasks, which submit
                    # while the cancels are still in the SQ.
                    for task in tasks[step * 2:step * 2 + 2]:
                        task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    outcomes[type(result).__name__] += 1
            assert outcomes == {"CancelledError": 40 * 16}
            for _ in range(8):
                assert await ctx.read(size, fd, 0) == data
        finally:
            ctx.close()

    loop_runner.run(body)


# --------------------------------------------------------------------------------------------
# item 6: signals during a blocking wait


class Child:
    """A Python child process speaking in lines on its stdout; ``stdin`` is a pipe the
    child can read with io_uring."""

    def __init__(self, code):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parent.parent.parent),  # the installed package
        )
        self.buffer = b""

    def line(self, timeout=10.0):
        """The next line (without its newline), or None if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def blocked(self):
        """Whether the child's main thread sleeps in the kernel (state S)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "S"

    def wait_blocked(self):
        wait_until(self.blocked, timeout=10, message="the child never blocked")

    def close(self, timeout=10.0):
        """Waits for the child to end (killing it after ``timeout``); (returncode, stderr)."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err.decode()


@pytest.fixture
def child():
    made = []

    def start(code):
        made.append(Child(code))
        return made[-1]

    yield start
    for c in made:
        c.close(timeout=0)


def test_sigint_interrupts_an_endless_wait(child):
    c = child("""
        import os
        from caio.linux_uring import Context, Operation
        ctx = Context()
        try:
            os.write(1, b"blocking\\n")
            ctx.process_events(1, 1, -1)
            os.write(1, b"returned\\n")
        except KeyboardInterrupt:
            os.write(1, b"KeyboardInterrupt\\n")
        # The thread no longer counts as parked: a drain without waiting reaps again.
        r, w = os.pipe()
        os.write(w, b"x")
        op = Operation.read(1, r, 2**64 - 1)
        ctx.submit(op)
        ctx.flush()
        import select, time
        deadline = time.monotonic() + 10
        while op.context is not None and time.monotonic() < deadline:
            select.select([ctx.fileno], [], [], 1)
            ctx.process_events()
        os.write(1, b"after: %r\\n" % (op.get_value(),))
    """)
    assert c.line() == "blocking"
    c.wait_blocked()
    # "About to block" is not "blocked": resend until the child reacts, within a bound.
    line = None
    for _ in range(20):
        c.proc.send_signal(signal.SIGINT)
        line = c.line(timeout=0.5)
        if line is not None:
            break
    assert line == "KeyboardInterrupt", "SIGINT did not interrupt process_events(1, 1, -1)"
    assert c.line() == "after: b'x'"
    rc, err = c.close()
    assert rc == 0, err


def test_a_handler_that_returns_lets_the_wait_go_on(child):
    c = child("""
        import os, signal
        from caio.linux_uring import Context, Operation
        signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"handled\\n"))
        ctx = Context()
        op = Operation.read(4, 0, 2**64 - 1)  # stdin: the parent's pipe
        ctx.submit(op)
        ctx.flush()
        os.write(1, b"blocking\\n")
        n = ctx.process_events(1, 1, -1)
        os.write(1, b"returned %d %r\\n" % (n, op.get_value()))
    """)
    assert c.line() == "blocking"
    c.wait_blocked()
    line = None
    for _ in range(20):
        c.proc.send_signal(signal.SIGUSR1)
        line = c.line(timeout=0.5)
        if line is not None:
            break
    # The handler ran while the child waited, and the wait went on.
    assert line == "handled", "the signal handler did not run during the wait"
    assert c.line(timeout=0.3) is None
    assert c.proc.poll() is None
    c.wait_blocked()
    c.proc.stdin.write(b"data")
    c.proc.stdin.flush()
    assert c.line() == "returned 1 b'data'"
    rc, err = c.close()
    assert rc == 0, err
