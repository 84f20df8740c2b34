"""Kernel AIO (caio.linux_aio) under conditions that used to freeze or mislead the caller.

- Issue 9 item 15: ``io_submit`` of a read on an empty pipe (or a write to a full one, or any
  descriptor the kernel services synchronously: FIFOs, sockets, terminals) blocked inside the
  syscall with the GIL held, freezing the whole process. Such requests now run on threads of
  their own and complete through ``process_events`` like any other.
- Issue 9 item 6: a signal during ``process_events(min_requests=1)`` runs Python's signal
  handlers; their exception (``KeyboardInterrupt`` for Ctrl-C) propagates, and a handler that
  does not raise lets the wait go on for the time left.

Every check that would freeze the process on a regression runs in a subprocess with a
timeout, so that a failure is reported instead of stalling the suite.
"""

import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import LOOPS, REPO_ROOT, run_python

try:
    from caio.linux_aio import Context, Operation
except ImportError as exc:  # old kernel, seccomp, exhausted fs.aio-max-nr, ...
    pytest.skip(f"caio.linux_aio is not available: {exc}", allow_module_level=True)

# A frozen child is killed after this long (a passing child takes well under a second).
CHILD_TIMEOUT = 30

# Creates the two ends of a stream descriptor of each kind in a child process:
# ``reader`` is read by the Context, ``writer`` is what the other side writes to.
STREAMS = r"""
import fcntl, os, socket, threading, time, tty
from caio.linux_aio import Context, Operation

def stream(kind, workdir):
    if kind == "pipe":
        return os.pipe()
    if kind == "fifo":
        path = os.path.join(workdir, "fifo")
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a blocking open waits for a writer
        w = os.open(path, os.O_WRONLY)
        os.set_blocking(r, True)
        return r, w
    if kind == "socket":
        a, b = socket.socketpair()
        return a.detach(), b.detach()
    if kind == "pty":  # a character device
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes are readable as they come, not per line
        return slave, master
    raise AssertionError(kind)

def deliver(ctx, op, timeout=10):
    deadline = time.monotonic() + timeout
    while op.context is not None:
        assert time.monotonic() < deadline, "the operation did not complete"
        ctx.process_events(min_requests=1, timeout=1)
"""

STREAM_KINDS = ["pipe", "fifo", "socket", "pty"]


def run_child(code, workdir, timeout=CHILD_TIMEOUT):
    try:
        proc = run_python(STREAMS + textwrap.dedent(code).replace("WORKDIR", repr(str(workdir))),
                          timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the child froze (killed after its timeout)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# --------------------------------------------------------------------------------------------
# item 15: descriptors the kernel services synchronously


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_read_waiting_for_data_does_not_freeze_the_process(workdir, kind):
    """The read is submitted on an empty stream; a thread that needs the GIL writes the data
    only after submit() returned. Before the fix submit() blocked in io_submit with the GIL
    held, so the writer could never run (the child froze). The read completes with the data
    (on pipes and sockets this needs IoRequest::perform to read at the current position for
    offset 0 on a non-seekable descriptor, as kernel AIO does)."""
    out = run_child(f"""
        r, w = stream({kind!r}, WORKDIR)
        ctx = Context()
        op = Operation.read(64, r, 0)
        submitted = threading.Event()

        def writer():
            assert submitted.wait(10)
            os.write(w, b"hello")

        thread = threading.Thread(target=writer)
        thread.start()
        assert ctx.submit(op) == 1
        assert ctx.process_events(min_requests=0) == 0  # no data yet: nothing completed
        submitted.set()
        deliver(ctx, op)
        thread.join()
        print("value:", op.get_value())
    """, workdir)
    assert "value: b'hello'" in out, out


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_write_waiting_for_room_does_not_freeze_the_process(workdir, kind):
    """A write to a full stream waits for the reader; the reader thread starts draining only
    after submit() returned, and every byte arrives in order."""
    out = run_child(f"""
        r, w = stream({kind!r}, WORKDIR)
        os.set_blocking(w, False)
        filled = 0
        try:
            while True:
                filled += os.write(w, b"f" * 65536)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)
        payload = os.urandom(200_000)
        ctx = Context()
        op = Operation.write(payload, w, 0)
        submitted = threading.Event()
        received = []

        def reader():
            assert submitted.wait(10)
            got = 0
            while got < filled + len(payload):
                chunk = os.read(r, 1 << 20)
                if not chunk:  # the write failed and the writer was closed
                    break
                received.append(chunk)
                got += len(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        assert ctx.submit(op) == 1
        assert ctx.process_events(min_requests=0) == 0  # no room yet: nothing completed
        submitted.set()
        deliver(ctx, op)
        os.close(w)
        thread.join()
        data = b"".join(received)
        assert data == b"f" * filled + payload, (len(data), filled, len(payload))
        print("written:", op.get_value() == len(payload))
    """, workdir)
    assert "written: True" in out, out


def test_waiting_stream_requests_stall_neither_files_nor_each_other(workdir, files):
    """Reads parked on empty pipes (more of them than there are helper threads) hold no
    thread that a large file read or another stream request needs: those complete while
    the parked ones still wait, and the parked ones complete once their data comes."""
    path = files.path()
    path.write_bytes(os.urandom(1 << 20))
    out = run_child(f"""
        ctx = Context()
        pipes = [os.pipe() for _ in range(6)]
        parked = [Operation.read(16, r, 0) for r, _ in pipes[:5]]
        assert ctx.submit(*parked) == 5
        fd = os.open({str(path)!r}, os.O_RDONLY)
        big = Operation.read(1 << 20, fd, 0)  # a large buffered read: helper threads
        assert ctx.submit(big) == 1
        deliver(ctx, big)
        assert big.get_value() == os.pread(fd, 1 << 20, 0)
        r, w = pipes[5]
        late = Operation.read(16, r, 0)
        assert ctx.submit(late) == 1
        os.write(w, b"late")
        deliver(ctx, late)
        assert late.get_value() == b"late"
        assert all(op.context is not None for op in parked)  # still waiting for data
        for i, (_, w) in enumerate(pipes[:5]):
            os.write(w, b"p%d" % i)
        for op in parked:
            deliver(ctx, op)
        print("values:", [op.get_value() for op in parked])
    """, workdir)
    assert "values: [b'p0', b'p1', b'p2', b'p3', b'p4']" in out, out


def test_the_position_of_a_pipe_is_ignored_as_by_the_kernel(workdir):
    """Kernel AIO ignores the offset of a non-seekable descriptor (only a negative one is
    refused): a read at offset 4096 on a pipe reads the pipe."""
    out = run_child("""
        r, w = os.pipe()
        ctx = Context()
        os.write(w, b"data")
        op = Operation.read(16, r, 4096)
        assert ctx.submit(op) == 1
        deliver(ctx, op)
        print("value:", op.get_value())
    """, workdir)
    assert "value: b'data'" in out, out


@pytest.mark.parametrize("loop", LOOPS)
def test_the_adapter_reads_a_pipe_while_the_loop_runs_on(workdir, loop):
    """Through linux_aio's AsyncioContext: a read of an empty pipe waits while the loop goes
    on (a task writes the data later), then returns it; several in one io_submit too."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    out = run_child(f"""
        import asyncio
        from caio.linux_aio_asyncio import AsyncioContext

        async def main():
            ctx = AsyncioContext(deferred=True)  # one io_submit for the whole batch
            pipes = [os.pipe() for _ in range(3)]
            reads = [asyncio.ensure_future(ctx.read(16, r, 0)) for r, _ in pipes]
            await asyncio.sleep(0)  # the batch is submitted; the loop must keep running
            await asyncio.sleep(0)
            assert not any(t.done() for t in reads)
            for i, (_, w) in enumerate(pipes):
                os.write(w, b"pipe%d" % i)
            values = await asyncio.wait_for(asyncio.gather(*reads), 10)
            ctx.close()
            return values

        if {loop!r} == "uvloop":
            import uvloop
            print("values:", uvloop.run(main()))
        else:
            print("values:", asyncio.run(main()))
    """, workdir)
    assert "values: [b'pipe0', b'pipe1', b'pipe2']" in out, out


@pytest.mark.parametrize("case", ["read-from-write-end", "write-to-read-end"])
def test_what_io_submit_refuses_on_a_pipe_still_raises_at_submit(case):
    """Requests the kernel refuses up front stay with the kernel: ValueError at submit, the
    op rolled back, as before (only requests that could run go to a thread)."""
    r, w = os.pipe()
    try:
        op = {
            "read-from-write-end": lambda: Operation.read(8, w, 0),
            "write-to-read-end": lambda: Operation.write(b"x", r, 0),
        }[case]()
        ctx = Context()
        with pytest.raises(ValueError):
            ctx.submit(op)
        assert op.context is None
    finally:
        os.close(r)
        os.close(w)


def test_a_stream_request_cannot_be_cancelled_like_a_helper_request():
    """io_cancel never applies to a request running on a thread: ValueError (EINVAL), as for
    the large buffered requests on the helper threads; the request still completes."""
    r, w = os.pipe()
    try:
        ctx = Context()
        os.write(w, b"12345678")  # (data first: a regression must not freeze the suite)
        op = Operation.read(8, r, 0)
        assert ctx.submit(op) == 1
        with pytest.raises(ValueError):
            ctx.cancel(op)
        assert ctx.process_events(min_requests=1, timeout=10) == 1
        assert op.context is None
    finally:
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------------------------------
# item 6: signals during process_events

# poll / ppoll, where process_events sleeps on its eventfd.
POLL_SYSCALLS = {"x86_64": {"7", "271"}, "aarch64": {"73"}}.get(platform.machine(), set())


def wait_until_sleeping_in_poll(pid, timeout=10.0):
    """Waits until the main thread of ``pid`` sleeps in poll (seen through /proc), so that a
    signal sent now lands inside process_events; skips if /proc does not show it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/syscall") as fp:
                nr = fp.read().split()[0]
            with open(f"/proc/{pid}/wchan") as fp:
                wchan = fp.read().strip()
        except (OSError, IndexError):
            pytest.skip("cannot observe the child through /proc")
        if nr in POLL_SYSCALLS or wchan in ("do_sys_poll", "poll_schedule_timeout"):
            return
        time.sleep(0.001)  # polling /proc: there is no event to wait on
    pytest.skip("the child was never seen waiting in process_events")



def test_ctrl_c_interrupts_a_wait_with_keyboard_interrupt():
    """SIGINT during process_events(min_requests=1, timeout=-1) raises KeyboardInterrupt out
    of process_events (it raised SystemError(EINTR) before)."""
    code = textwrap.dedent("""
        from caio.linux_aio import Context
        ctx = Context()
        print("waiting", flush=True)
        try:
            ctx.process_events(min_requests=1, timeout=-1)
        except BaseException as exc:
            print("raised", type(exc).__name__, flush=True)
        else:
            print("returned", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=str(REPO_ROOT.parent))
    try:
        assert proc.stdout.readline().strip() == "waiting"
        wait_until_sleeping_in_poll(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGINT did not end the wait")
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert "raised KeyboardInterrupt" in out, out


def test_a_signal_whose_handler_returns_does_not_end_the_wait():
    """A handler that does not raise runs, and the wait goes on for the time left; before,
    the wait ended at the first signal with SystemError(EINTR)."""
    hits = []
    previous = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    try:
        ctx = Context()
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)  # repeatedly, during the whole wait
        assert ctx.process_events(min_requests=1, timeout=1) == 0
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 0.95 <= elapsed < 5, elapsed
    assert len(hits) >= 2, hits  # the handler ran, more than once


def test_completions_taken_before_an_interrupt_are_not_lost(files):
    """An exception from a signal handler ends a wait that has taken some completions but
    not min_requests of them: those are kept for the next process_events, not dropped."""
    fd = files.open(b"xyz")
    ctx = Context()
    ops = [Operation.read(1, fd, i) for i in range(3)]
    assert ctx.submit(*ops) == 3

    class Interrupt(Exception):
        pass

    def handler(*_):
        raise Interrupt

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupt):
            ctx.process_events(min_requests=4, timeout=10)  # only 3 can ever come
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert all(op.context is not None for op in ops)  # not delivered yet...
    assert ctx.process_events(min_requests=3, timeout=5) == 3  # ...but not lost either
    assert [op.get_value() for op in ops] == [b"x", b"y", b"z"]
