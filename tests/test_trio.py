"""The trio adapters (``caio.trio_adapter``) under ``trio.run``, on every available backend.

Reads that must stay in flight until a cancel or close ends them wait on a pipe nobody
has written to yet; every run is hang-guarded by ``trio.fail_after``.
"""

import errno
import gc
import hashlib
import os
import sys

import pytest
import trio
import trio.testing
from conftest import short_name, wait_until

import caio
from caio import trio_adapter
from caio.trio_adapter import TRIO_CONTEXTS

MiB = 1024 * 1024
GUARD = 30  # seconds: a hang guard, never synchronisation

TRIO_BACKENDS = [pytest.param(cls, id=name) for name, cls in TRIO_CONTEXTS.items()]


@pytest.fixture(params=TRIO_BACKENDS)
def TrioContext(request):
    return request.param


def backend_name(cls) -> str:
    (name,) = (n for n, c in TRIO_CONTEXTS.items() if c is cls)
    return name


def run(body, *args):
    async def guarded():
        with trio.fail_after(GUARD):
            return await body(*args)

    return trio.run(guarded)


def chunk(i: int, size: int) -> bytes:
    seed = hashlib.sha256(i.to_bytes(4, "little")).digest()
    return (seed * (size // len(seed) + 1))[:size]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def pipes():
    made = []

    def make():
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    try:
        yield make
    finally:
        for fd in made:
            os.close(fd)


def test_every_backend_has_a_trio_adapter_and_the_default_follows_caio():
    assert list(TRIO_CONTEXTS) == [short_name(m) for m in caio.variants]
    assert trio_adapter.TrioContext is TRIO_CONTEXTS[short_name(caio.preferred)]


def test_round_trip_read_write_fsync_fdsync(TrioContext, files):
    fd = files.open()

    async def body():
        async with TrioContext() as ctx:
            assert await ctx.read(32, fd, 0) == b""
            assert await ctx.write(b"Hello world", fd, 0) == 11
            assert await ctx.read(32, fd, 0) == b"Hello world"
            assert await ctx.write(b"HELLO", fd, 0) == 5
            assert await ctx.write(b"!", fd, 11) == 1
            assert await ctx.fsync(fd) is None
            assert await ctx.fdsync(fd) is None
            assert await ctx.read(32, fd, 0) == b"HELLO world!"
            assert await ctx.read(10, fd, 6) == b"world!"
            assert await ctx.write(b"", fd, 100) == 0

    run(body)
    assert os.pread(fd, 100, 0) == b"HELLO world!"


def test_large_write_and_read_back(TrioContext, files):
    fd = files.open()
    data = os.urandom(4 * MiB)

    async def body():
        async with TrioContext() as ctx:
            assert await ctx.write(data, fd, 0) == len(data)
            await ctx.fdsync(fd)
            result = await ctx.read(len(data), fd, 0)
            assert hashlib.sha256(result).digest() == hashlib.sha256(data).digest()

    run(body)


def test_errors_are_the_backends_own(TrioContext, files):
    fd = files.open(b"data", flags=os.O_WRONLY)

    async def body():
        async with TrioContext() as ctx:
            with pytest.raises(OSError) as info:
                await ctx.read(4, fd, 0)
            assert info.value.errno == errno.EBADF
            with pytest.raises(ValueError, match="negative"):
                await ctx.read(4, fd, -1)
            with pytest.raises(ValueError):
                await ctx.submit(object())

    run(body)


def test_many_concurrent_readers_and_writers_in_a_nursery(TrioContext, files):
    fd = files.open()
    size = 8 * 1024
    count = 100

    async def body():
        results = {}
        # Fewer slots than tasks: the capacity semaphore is exercised.
        async with TrioContext(max_requests=16) as ctx:
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(ctx.write, chunk(i, size), fd, i * size)

            async def reader(i):
                results[i] = await ctx.read(size, fd, i * size)

            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(reader, i)
            assert ctx.semaphore.value == 16
        return results

    results = run(body)
    for i in range(count):
        assert results[i] == chunk(i, size), f"chunk {i} differs"


def test_cancel_scope_expiring_with_reads_in_flight(TrioContext, files, pipes):
    """Reads on pipes with no data are in flight until the scope's deadline: the tasks
    end with Cancelled at once, the kernel cancels what it can (io_uring), the others
    run on when data comes, their slots back only then; nothing leaks."""
    name = backend_name(TrioContext)
    fd = files.open(b"healthy" * 1000)
    ends = [pipes() for _ in range(4)]

    async def warm_up():
        async with TrioContext() as ctx:
            await ctx.read(1 << 20, fd, 0)

    run(warm_up)
    gc.collect()
    fds, tasks = fd_count(), task_count()
    ops = [TrioContext.OPERATION_CLASS.read(16, r, 0) for r, _ in ends]
    refcounts = [sys.getrefcount(op) for op in ops]
    outcomes = []

    async def body():
        async with TrioContext(max_requests=8) as ctx:
            async def reader(op):
                try:
                    await ctx.submit(op)
                except trio.Cancelled:
                    outcomes.append("cancelled")
                    raise
                outcomes.append("done")

            with trio.move_on_after(0.1) as scope:
                async with trio.open_nursery() as nursery:
                    for op in ops:
                        nursery.start_soon(reader, op)
            assert scope.cancelled_caught
            assert outcomes == ["cancelled"] * len(ops)
            # Ops still in the backend keep their slots (one just delivered gives its
            # slot back on the next scheduler turn, hence <=); data ends them.
            in_flight = sum(op.context is not None for op in ops)
            assert ctx.semaphore.value <= 8 - in_flight
            if name in ("thread_aio", "python_aio"):
                assert in_flight == len(ops)  # a running read() cannot be interrupted
            for _, w in ends:
                os.write(w, b"A" * 16)
            while ctx.semaphore.value != 8:
                await trio.lowlevel.checkpoint()
            for op in ops:
                assert op.context is None
            if name == "linux_uring":
                assert all(op.error == errno.ECANCELED for op in ops)
            # Each op either took its pipe's 16 bytes or (cancelled) none of them.
            for (r, _), op in zip(ends, ops):
                os.set_blocking(r, False)
                try:
                    left = os.read(r, 100)
                except BlockingIOError:
                    left = b""
                try:
                    taken = op.get_value()
                except OSError as exc:
                    assert exc.errno == errno.ECANCELED
                    taken = b""
                assert taken + left == b"A" * 16
                os.set_blocking(r, True)
            # The process, the file and the pipes work as before.
            assert await ctx.read(7, fd, 0) == b"healthy"
            assert await ctx.write(b"HEALTHY", fd, 0) == 7
            r, w = ends[0]
            os.write(w, b"after")
            assert await ctx.read(16, r, 0) == b"after"

    run(body)
    assert os.pread(fd, 7, 0) == b"HEALTHY"
    if name == "python_aio":
        # multiprocessing's ThreadPool keeps a pipe until the pool object is collected
        # (test_lifetimes skips it too); its threads must still end.
        fds = float("inf")
    wait_until(lambda: fd_count() <= fds and task_count() <= tasks, timeout=20,
               message=f"fds {fd_count()} > {fds} or threads {task_count()} > {tasks}")
    wait_until(lambda: [sys.getrefcount(op) for op in ops] == refcounts, timeout=10,
               message="an operation is still referenced")


def test_cancel_scope_with_file_reads_in_flight(TrioContext, files):
    data = os.urandom(4 * MiB)
    fd = files.open(data)
    size = 256 * 1024

    async def body():
        results = {}
        async with TrioContext(max_requests=8) as ctx:
            async def reader(i):
                results[i] = await ctx.read(size, fd, i * size)

            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for i in range(16):
                        nursery.start_soon(reader, i)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            while ctx.semaphore.value != 8:
                await trio.lowlevel.checkpoint()
            for i, got in results.items():
                assert got == data[i * size:(i + 1) * size]
            assert await ctx.read(size, fd, 0) == data[:size]

    run(body)


def test_close_with_work_in_flight(TrioContext, files, pipes):
    name = backend_name(TrioContext)
    data = os.urandom(1 << 20)
    fd = files.open(data)
    size = 128 * 1024
    r, w = pipes()

    async def body():
        ctx = TrioContext()
        outcomes = {}

        async def reader(key, fd, offset):
            try:
                outcomes[key] = await ctx.read(size, fd, offset)
            except RuntimeError as exc:
                outcomes[key] = exc

        async with trio.open_nursery() as nursery:
            for i in range(32):
                nursery.start_soon(reader, i, fd, (i * 4096) % (len(data) - size))
            if name != "python_aio":  # its close() lets queued work run (caio's)
                nursery.start_soon(reader, "pipe", r, 0)
            await trio.testing.wait_all_tasks_blocked()
            ctx.close()
        for key, got in outcomes.items():
            if isinstance(got, RuntimeError):
                assert str(got) == "TrioContext is closed"
            else:
                assert key != "pipe"
                offset = (key * 4096) % (len(data) - size)
                assert got == data[offset:offset + size]
        if name != "python_aio":
            assert isinstance(outcomes["pipe"], RuntimeError)
        with pytest.raises(RuntimeError, match="closed"):
            await ctx.read(8, fd, 0)
        ctx.close()  # again: nothing

    run(body)
    os.write(w, b"x" * 16)  # a thread_aio worker blocked on the pipe ends now


def test_context_without_async_with(TrioContext, files):
    fd = files.open(b"plain")

    async def body():
        ctx = TrioContext()
        try:
            assert await ctx.read(5, fd, 0) == b"plain"
        finally:
            ctx.close()

    run(body)


def test_cached_reads_let_other_tasks_run(TrioContext, files):
    fd = files.open(b"x" * 4096)
    reads = 2000

    async def body():
        turns = 0
        done = False
        async with TrioContext() as ctx:
            async def reader():
                nonlocal done
                for _ in range(reads):
                    assert await ctx.read(4096, fd, 0) == b"x" * 4096
                done = True

            async def other():
                nonlocal turns
                while not done:
                    turns += 1
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(other)
        budget = getattr(ctx, "INLINE_BUDGET", None)
        return turns, budget

    turns, budget = run(body)
    if budget is not None:
        assert turns >= reads // (budget + 1) - 1, turns
    else:
        assert turns >= reads // 2, turns


async def read_lines(ctx, fd, chunk_size=4096):
    """aiofile-style line reading over ctx.read: chunks, split on newlines, UTF-8."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, buffer = 0, ""
    while True:
        data = await ctx.read(chunk_size, fd, offset)
        offset += len(data)
        buffer += decoder.decode(data, final=not data)
        *lines, buffer = buffer.split("\n")
        for line in lines:
            yield line + "\n"
        if not data:
            if buffer:
                yield buffer
            return


def test_line_reading(TrioContext, files):
    lines = [f"line {i}: {'x' * (i % 37)} ünïcode ✓\n" for i in range(300)]
    fd = files.open()

    async def body():
        async with TrioContext() as ctx:
            offset = 0
            for line in lines:
                offset += await ctx.write(line.encode(), fd, offset)
            await ctx.fsync(fd)
            return [line async for line in read_lines(ctx, fd, chunk_size=1000)]

    assert run(body) == lines


def readme_block(marker: str) -> str:
    from test_readme import python_blocks

    (code,) = (b for b in python_blocks() if marker in b)
    return code


def run_readme_block(code, workdir, env=None):
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True,
        timeout=60, check=False, env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr


CAIO_IMPLS = [pytest.param(impl, id=name) for name, impl in
              (("linux_uring", "uring"), ("linux_aio", "linux"), ("thread_aio", "thread"),
               ("python_aio", "python")) if name in TRIO_CONTEXTS]


@pytest.mark.parametrize("impl", CAIO_IMPLS)
def test_readme_trio_example_runs_as_written(workdir, impl):
    code = readme_block("from caio.trio_adapter import TrioContext")
    run_readme_block(code, workdir, {"CAIO_IMPL": impl})
    assert (workdir / "trio.file").read_bytes() == b"Hello trio"


def test_readme_custom_loop_example_runs_as_written(workdir):
    code = readme_block("class MinimalAdapter")
    run_readme_block(code, workdir)
    assert (workdir / "custom.file").read_bytes() == b"custom loop"


@pytest.mark.parametrize("deferred", [False, True], ids=["eager", "deferred"])
def test_submission_modes_round_trip(TrioContext, files, deferred):
    """io_uring's deferred flush and kernel AIO's coalesced io_submit run on trio's
    run_sync_soon; many writes then reads at once go through both paths."""
    fd = files.open()
    size = 64 * 1024
    options = {"sqpoll": False} if backend_name(TrioContext) == "linux_uring" else {}

    async def body():
        async with TrioContext(deferred=deferred, **options) as ctx:
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(ctx.write, chunk(i, size), fd, i * size)
            results = {}

            async def reader(i):
                results[i] = await ctx.read(size, fd, i * size)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(reader, i)
        return results

    results = run(body)
    assert [results[i] for i in range(40)] == [chunk(i, size) for i in range(40)]


def test_close_after_trio_run_returned(TrioContext, files):
    fd = files.open(b"after")
    gc.collect()
    fds = fd_count()

    async def body():
        ctx = TrioContext()
        assert await ctx.read(5, fd, 0) == b"after"
        return ctx

    ctx = run(body)
    ctx.close()
    if backend_name(TrioContext) != "python_aio":  # (see above: ThreadPool's pipe)
        wait_until(lambda: fd_count() <= fds, timeout=10, message="the Context was kept")
