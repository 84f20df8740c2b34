"""Signals during a blocking wait on thread_aio's eventfd mode (issue 9, item 6).

``process_events(min_requests, timeout)`` sleeps in ``poll()`` on the eventfd, so a signal wakes
it: Python's handlers run, an exception they raise (KeyboardInterrupt) ends the wait, and
otherwise it resumes for the time left. A waiter for several completions is woken by each of
them (no lost wake-up). Pool workers block every signal, so the kernel never hands a
process-directed signal to a thread where Python cannot act on it.

Signals are sent only once the waiting thread is seen blocked in poll()/ppoll()
(``/proc/self/task/<tid>/syscall``), so they really arrive during the wait.
"""

import contextlib
import inspect
import json
import os
import platform
import select
import textwrap
import threading
import time

import pytest
from conftest import module_by_short_name, needs_thread_aio, run_python

pytestmark = needs_thread_aio

thread_aio = module_by_short_name("thread_aio")

# poll and ppoll: what a thread sleeping in poll() shows in /proc/<tid>/syscall.
POLL_SYSCALLS = {"x86_64": ("7", "271"), "aarch64": ("73",)}.get(platform.machine())
needs_poll_syscalls = pytest.mark.skipif(
    POLL_SYSCALLS is None, reason=f"poll syscall numbers unknown on {platform.machine()}"
)



def in_poll(tid):
    """Whether thread ``tid`` of this process is blocked in poll()/ppoll()."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            return f.read().split()[0] in POLL_SYSCALLS
    except (OSError, IndexError):
        return False


def wait_for(predicate, timeout=10.0):
    """Poll ``predicate`` (a hang guard, not synchronisation); False on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


# The same helpers in the child processes.
HELPERS = "\n".join([
    "import time",
    f"POLL_SYSCALLS = {POLL_SYSCALLS!r}",
    inspect.getsource(in_poll),
    inspect.getsource(wait_for),
])

CHILD_TIMEOUT = 60


def run_child(body: str):
    code = HELPERS + textwrap.dedent(body)
    proc = run_python(code, timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_poll_syscalls
def test_sigint_interrupts_a_blocking_process_events():
    out = run_child("""
        import json, os, signal, threading
        from caio import thread_aio

        ctx = thread_aio.EventfdContext()
        main = threading.get_native_id()

        def ctrl_c():
            seen = wait_for(lambda: in_poll(main))
            os.kill(os.getpid(), signal.SIGINT)  # process-directed, like Ctrl-C
            result["seen_in_poll"] = seen

        result = {}
        threading.Thread(target=ctrl_c, daemon=True).start()
        try:
            ctx.process_events(min_requests=1, timeout=-1)
            result["ended"] = "returned"
        except KeyboardInterrupt:
            result["ended"] = "KeyboardInterrupt"
        ctx.close()
        print(json.dumps(result))
    """)
    assert out == {"seen_in_poll": True, "ended": "KeyboardInterrupt"}


@needs_poll_syscalls
def test_a_signal_whose_handler_does_not_raise_does_not_end_the_wait(files):
    path = str(files.path())
    out = run_child(f"""
        import json, os, signal, threading
        from caio import thread_aio

        fd = os.open({path!r}, os.O_RDWR | os.O_CREAT)
        os.pwrite(fd, b"hello", 0)
        op = thread_aio.Operation.read(5, fd, 0)
        ctx = thread_aio.EventfdContext()
        main = threading.get_native_id()
        handled = threading.Event()
        result = {{"handled_on": []}}

        def handler(signum, frame):
            result["handled_on"].append(threading.get_native_id() == main)
            handled.set()

        signal.signal(signal.SIGUSR1, handler)

        def sender():
            result["seen_in_poll"] = wait_for(lambda: in_poll(main))
            os.kill(os.getpid(), signal.SIGUSR1)
            result["handled_during_wait"] = handled.wait(10)
            result["waits_again"] = wait_for(lambda: in_poll(main))
            ctx.submit(op)  # the completion the wait is for

        thread = threading.Thread(target=sender)
        thread.start()
        result["delivered"] = ctx.process_events(min_requests=1, timeout=-1)
        thread.join()
        result["value"] = op.get_value().decode()
        ctx.close()
        print(json.dumps(result))
    """)
    assert out == {
        "seen_in_poll": True,
        "handled_on": [True],
        "handled_during_wait": True,
        "waits_again": True,
        "delivered": 1,
        "value": "hello",
    }


@needs_poll_syscalls
def test_a_timed_wait_resumes_for_the_time_left_after_a_signal():
    out = run_child("""
        import json, os, signal, threading, time
        from caio import thread_aio

        ctx = thread_aio.EventfdContext()
        main = threading.get_native_id()
        hits = []
        signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))

        def sender():
            for _ in range(3):
                wait_for(lambda: in_poll(main))
                os.kill(os.getpid(), signal.SIGUSR1)
                wait_for(lambda: len(hits) > 0 or not in_poll(main))

        thread = threading.Thread(target=sender)
        t0 = time.monotonic()
        thread.start()
        delivered = ctx.process_events(min_requests=1, timeout=1)
        elapsed = time.monotonic() - t0
        thread.join()
        ctx.close()
        print(json.dumps({"delivered": delivered, "elapsed": elapsed, "hits": len(hits)}))
    """)
    assert out["delivered"] == 0
    assert out["hits"] >= 1
    assert 0.95 <= out["elapsed"] < 5, out


@needs_poll_syscalls
def test_a_waiter_for_three_is_woken_by_completions_arriving_one_by_one(files):
    fd = files.open()
    main = threading.get_native_id()
    for attempt in range(5):
        ctx = thread_aio.EventfdContext()
        ops = [thread_aio.Operation.write(b"w", fd, 3 * attempt + i) for i in range(3)]
        errors = []

        def readable(ctx=ctx):
            return bool(select.select([ctx.fileno], [], [], 0)[0])

        def one_by_one(ctx=ctx, ops=ops, errors=errors, attempt=attempt):
            try:
                for i, op in enumerate(ops):
                    assert wait_for(lambda: in_poll(main) and not readable()), "not waiting"
                    assert ctx.submit(op) == 1
                    # Landed, and the waiter has counted it and sleeps again.
                    at = 3 * attempt + i
                    assert wait_for(lambda at=at: os.pread(fd, 1, at) == b"w"), "not written"
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        thread = threading.Thread(target=one_by_one)
        thread.start()
        t0 = time.monotonic()
        delivered = ctx.process_events(min_requests=3, timeout=20)
        elapsed = time.monotonic() - t0
        thread.join()
        assert errors == []
        # A lost wake-up shows as a wait that only the timeout ends (then all 3 are there).
        assert elapsed < 10, f"woke only at the timeout, with {delivered} of 3"
        assert delivered == 3
        assert [op.get_value() for op in ops] == [1, 1, 1]
        ctx.close()


def blocked_signals(tid) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.parametrize("context_type", ["Context", "EventfdContext"])
def test_pool_workers_block_every_signal(context_type):
    import signal

    ctx = getattr(thread_aio, context_type)(pool_size=3)
    try:

        def workers():
            # Threads of other Contexts (helpers of one being freed) may end meanwhile.
            found = []
            for tid in os.listdir("/proc/self/task"):
                with contextlib.suppress(FileNotFoundError), \
                        open(f"/proc/self/task/{tid}/comm") as f:
                    if f.read().startswith("caio-worker"):
                        found.append(tid)
            return found

        # A new thread names itself once it runs (its mask is set before it exists).
        assert wait_for(lambda: len(workers()) >= 3), "workers did not start"
        checked = 0
        for tid in workers():
            try:
                mask = blocked_signals(tid)
            except FileNotFoundError:
                continue  # ended since: not one of ours, which live until close()
            checked += 1
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGALRM):
                assert mask & (1 << (sig - 1)), f"worker {tid} can receive {sig!r}"
        assert checked >= 3
        assert not blocked_signals(threading.get_native_id()) & (1 << (signal.SIGINT - 1))
    finally:
        ctx.close()


def test_linux_aio_stream_threads_block_every_signal():
    # A pipe read on kernel AIO runs on a thread of its own; a signal delivered there would
    # fail the read with EINTR and never reach a thread Python can act on.
    import signal

    linux_aio = pytest.importorskip("caio.linux_aio")
    ctx = linux_aio.Context()
    r, w = os.pipe()
    try:
        op = linux_aio.Operation.read(4, r, 0)
        assert ctx.submit(op) == 1

        def stream_threads():
            found = []
            for tid in os.listdir("/proc/self/task"):
                with contextlib.suppress(FileNotFoundError), \
                        open(f"/proc/self/task/{tid}/comm") as f:
                    if f.read().startswith("caio-aio-stream"):
                        found.append(tid)
            return found

        assert wait_for(lambda: len(stream_threads()) == 1), "no stream thread"
        mask = blocked_signals(stream_threads()[0])
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGALRM):
            assert mask & (1 << (sig - 1)), f"the stream thread can receive {sig!r}"
        os.write(w, b"data")
        assert ctx.process_events(1, 1, 10) == 1
        assert op.get_value() == b"data"
    finally:
        os.close(r)
        os.close(w)
