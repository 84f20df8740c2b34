"""Lifetimes and teardown (issue 9, items 4 and 5).

- ``AsyncioContext.close()`` with operations in flight ends every awaiting task (with its
  result if it had completed, else ``RuntimeError``) and, once the kernel is done with the
  buffers, the Context holds no fd and no thread.
- A raw Context dropped with operations in flight is found by the GC, drained on a
  background thread (every callback runs exactly once) and then freed.
"""

import asyncio
import contextlib
import ctypes
import gc
import os
import textwrap
import threading
import time

import pytest
from conftest import NATIVE_BACKENDS, run_python, short_name, wait_until

LARGE = 128 * 1024  # over 64 KiB: io-wq (uring) or the helper threads (linux_aio)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


def kernel_rings() -> int:
    """io_uring rings and kernel-AIO contexts mapped into this process (a kernel-AIO
    context holds no fd; its ring mapping goes with io_destroy)."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if "[io_uring]" in line or "/[aio]" in line)


def rss_kib() -> int:
    """Resident memory, after handing free heap memory back to the OS: glibc keeps what
    threads freed in per-thread arenas, which depends on how many ran at once, not on
    what is still allocated."""
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------------------------
# item 4: AsyncioContext.close() with operations in flight


def test_close_ends_every_awaiting_task(loop_runner, AsyncioContext, files):
    data = os.urandom(1 << 20)
    fd = files.open(data)

    async def body():
        ctx = AsyncioContext()
        offsets = [(i * 4096) % (len(data) - LARGE) for i in range(200)]
        tasks = [asyncio.ensure_future(ctx.read(LARGE, fd, off)) for off in offsets]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        ctx.close()
        _done, pending = await asyncio.wait(tasks, timeout=10)
        assert not pending, f"{len(pending)} of 200 tasks still waiting after close()"
        for off, task in zip(offsets, tasks):
            error = task.exception()
            if error is None:
                assert task.result() == data[off:off + LARGE]
            else:
                assert isinstance(error, RuntimeError), repr(error)
                assert "closed" in str(error)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(ctx.read(8, fd, 0), 10)

    loop_runner.run(body)


def test_closed_adapters_hold_no_kernel_objects(loop_runner, adapter, files):
    if short_name(adapter) == "python_aio":
        pytest.skip("python_aio holds no kernel object; its pool threads end on their own")
    AsyncioContext = adapter.AsyncioContext
    fd = files.open(os.urandom(1 << 20))
    closed = []  # the adapters stay alive: their Contexts must not

    async def body():
        for _ in range(20):
            ctx = AsyncioContext()
            tasks = [asyncio.ensure_future(ctx.read(LARGE, fd, i * 4096)) for i in range(20)]
            await asyncio.sleep(0)
            ctx.close()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            closed.append(ctx)

    async def warm_up():
        ctx = AsyncioContext()
        await ctx.read(LARGE, fd, 0)
        ctx.close()

    loop_runner.run(warm_up)
    gc.collect()
    fds, tasks, rings = fd_count(), task_count(), kernel_rings()
    loop_runner.run(body)
    wait_until(lambda: fd_count() <= fds and task_count() <= tasks and kernel_rings() <= rings,
               timeout=30,
               message=f"closed adapters keep fds ({fd_count()} > {fds}), threads "
                       f"({task_count()} > {tasks}) or rings ({kernel_rings()} > {rings})")
    assert len(closed) == 20


# --------------------------------------------------------------------------------------------
# item 5: a raw Context dropped with operations in flight


def contexts_for(backend) -> int:
    # io_destroy waits for an RCU grace period (~30 ms per kernel-AIO Context, in caio
    # too), so fewer of them keep this test within its time budget.
    return 60 if backend.short == "linux_aio" else 1000


def exit_contexts_for(backend) -> int:
    return 30 if backend.short == "linux_aio" else 200


@pytest.mark.parametrize("native", NATIVE_BACKENDS)
def test_dropped_contexts_with_work_in_flight_are_drained_and_freed(native, files):
    data = os.urandom(LARGE)
    fd = files.open(data)
    counts = {}
    lock = threading.Lock()

    def callback(key):
        def cb(result):
            with lock:
                counts[key] = counts.get(key, 0) + 1
        return cb

    # thread_aio: fewer workers per Context, same paths, less time spent starting threads
    options = {"pool_size": 2} if native.short == "thread_aio" else {}

    def drop_one(i):
        ctx = native.Context(**options)
        ops = [native.read(4096, fd, 0), native.read(LARGE, fd, 0)]
        for j, op in enumerate(ops):
            op.set_callback(callback((i, j)))
        assert ctx.submit(*ops) == 2
        if hasattr(ctx, "flush"):
            ctx.flush()
        # ctx and ops go away here, the operations still in flight

    # Collected every 20 Contexts: the threads of the ones waiting to be found (thread_aio,
    # linux_aio helpers) stay few, so glibc's bounded caches (thread stacks, arenas)
    # reach their steady size during the warm-up.
    warm_up = 40 if native.short == "linux_aio" else 150
    for i in range(warm_up):
        drop_one(-1 - i)
        if i % 20 == 19:
            gc.collect()
    gc.collect()
    wait_until(lambda: len(counts) == 2 * warm_up, timeout=30, message="warm-up not drained")
    fds, tasks, rings, rss = fd_count(), task_count(), kernel_rings(), rss_kib()

    n = contexts_for(native)
    start = time.monotonic()
    for i in range(n):
        drop_one(i)
        if i % 20 == 19:
            gc.collect()
    gc.collect()
    wait_until(lambda: len(counts) == 2 * (warm_up + n), timeout=60,
               message=f"{2 * (warm_up + n) - len(counts)} callbacks never ran")
    wait_until(lambda: fd_count() <= fds and task_count() <= tasks and kernel_rings() <= rings,
               timeout=60,
               message=f"fds {fd_count()} > {fds}, threads {task_count()} > {tasks} "
                       f"or rings {kernel_rings()} > {rings}")
    assert set(counts.values()) == {1}, "a callback ran more than once"
    if os.environ.get("CAIO_MEMCHECK"):
        # under valgrind (.ci/memcheck) each thread ever started keeps a 1 MiB valgrind
        # stack, and everything is ~50x slower; its leak check covers memory there
        return
    growth = rss_kib() - rss
    assert growth < 16 * 1024, f"RSS grew by {growth} KiB over {n} Contexts"
    assert time.monotonic() - start < 90


PUMPED = [p for p in NATIVE_BACKENDS if p.values[0].pumped]


@pytest.mark.parametrize("native", PUMPED)
def test_callback_resubmitting_on_a_dropped_context(native, files):
    fd = files.open(b"0123456789" * 100)
    results = []
    done = threading.Event()

    def start():
        ctx = native.Context()

        def again(result):
            results.append((result, threading.get_ident()))
            if len(results) == 5:
                done.set()
                return
            op = native.read(10, fd, len(results) * 10)
            op.set_callback(again)
            assert ctx.submit(op) == 1
            if hasattr(ctx, "flush"):
                ctx.flush()

        op = native.read(10, fd, 0)
        op.set_callback(again)
        assert ctx.submit(op) == 1

    gc.collect()
    fds = fd_count()
    start()
    gc.collect()
    assert done.wait(10), f"only {len(results)} of 5 chained callbacks ran"
    assert [r for r, _ in results] == [10] * 5
    assert threading.get_ident() not in {ident for _, ident in results}  # the drainer's
    # (its weak references died when the GC found it; its fds show when it is freed)
    wait_until(lambda: fd_count() <= fds, message="the drained Context was not freed")


@pytest.mark.parametrize("native", PUMPED)
def test_dropped_context_keeps_its_buffers_until_the_kernel_is_done(native, files, pipe):
    # A pipe read stays in flight on every backend (io_uring waits in the kernel, kernel
    # AIO's stream requests and thread_aio run it on a thread of their own).
    r, w = pipe
    results = []
    done = threading.Event()

    def start():
        ctx = native.Context()
        op = native.read(16, r, 2**64 - 1 if native.short == "linux_uring" else 0)
        # The callback reads the op's buffer, which the kernel filled after the GC ran.
        op.set_callback(lambda res: (results.append((res, op.get_value())), done.set()))
        assert ctx.submit(op) == 1
        if hasattr(ctx, "flush"):
            ctx.flush()

    start()
    for _ in range(3):
        gc.collect()
    assert not done.is_set()
    os.write(w, b"late data")
    assert done.wait(10)
    assert results == [(9, b"late data")]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


EXIT_SCRIPT = textwrap.dedent(
    """
    import gc, importlib, os
    mod = importlib.import_module({module!r})
    r, w = os.pipe()
    fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"x" * 262144, 0)
    calls = []
    def drop(pipe_read):
        ctx = getattr(mod, {context_type!r})()
        ops = [mod.Operation.read(131072, fd, 0) for _ in range(3)]
        if pipe_read:
            ops.append(mod.Operation.read(16, r, 2**64 - 1))  # never completes
        for op in ops:
            op.set_callback(calls.append)
        ctx.submit(*ops)
        if hasattr(ctx, "flush"):
            ctx.flush()
    # Many Contexts, collected in bursts: at exit the drainer is busy delivering and
    # tearing Contexts down (joining their threads, io_destroy) with the GIL released.
    for i in range({count}):
        drop({pipe_read!r} and i % 20 == 0)
        if i % 50 == 49:
            gc.collect()
    gc.collect()
    print("exiting", flush=True)
    """
)


@pytest.mark.parametrize("native", PUMPED)
def test_exit_while_the_drainer_holds_contexts(native, workdir):
    module = native.module.__name__
    code = EXIT_SCRIPT.format(
        module=module,
        path=str(workdir / "f"),
        context_type="EventfdContext" if native.eventfd else "Context",
        pipe_read=module == "caio.linux_uring",
        count=exit_contexts_for(native),
    )
    for _ in range(2):  # the exit races the drainer: give it more than one chance to fail
        proc = run_python(code, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "exiting" in proc.stdout
        assert "Fatal" not in proc.stderr and "FATAL" not in proc.stderr, proc.stderr
        assert "panicked" not in proc.stderr, proc.stderr



def test_close_right_after_a_deferred_submission(loop_runner, adapter, files):
    # A flush or submit the adapter scheduled for the next loop iteration finds it closed.
    fd = files.open(os.urandom(LARGE))
    # (with SQPOLL the io_uring adapter flushes at once)
    options = {"sqpoll": False} if short_name(adapter) == "linux_uring" else {}

    async def body():
        ctx = adapter.AsyncioContext(deferred=True, **options)
        task = asyncio.ensure_future(ctx.read(LARGE, fd, 0))
        await asyncio.sleep(0)  # the task submits; the deferred flush/submit is scheduled
        ctx.close()
        with contextlib.suppress(RuntimeError):
            await asyncio.wait_for(task, 10)
        await asyncio.sleep(0.01)  # let the scheduled callback run

    loop_runner.run(body)  # fails if a loop callback raised


PIPE_CLOSE_SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    import caio.thread_aio_asyncio as mod

    async def main():
        r, w = os.pipe()
        ctx = mod.AsyncioContext(pool_size=2)
        task = asyncio.ensure_future(ctx.read(8, r, 0))
        await asyncio.sleep(0)  # the task submits; a worker blocks in read()
        ctx.close()  # must not wait for the pipe
        print("closed", flush=True)
        try:
            await asyncio.wait_for(task, 10)
        except RuntimeError as exc:
            print(exc, flush=True)
        os.write(w, b"late")  # the worker's read ends; the drainer then frees the Context

    asyncio.run(main())
    """
)


def test_thread_adapter_close_does_not_wait_for_a_blocked_pipe_read():
    # A worker blocked in read() on an empty pipe must not make close() hang (the writer may
    # be a task of the same loop), and the awaiting task ends at once, as on every adapter.
    proc = run_python(PIPE_CLOSE_SCRIPT, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["closed", "AsyncioContext is closed"], proc.stdout
