"""``caio.anyio_adapter.AnyioContext`` under ``anyio.run`` on its asyncio (and uvloop) and
trio backends, for every available caio backend."""

import errno
import hashlib
import os

import anyio
import anyio.lowlevel
import pytest
import sniffio
from conftest import closed_fd, short_name

import caio
from caio.anyio_adapter import AnyioContext
from caio.trio_adapter import TRIO_CONTEXTS, TrioContext

GUARD = 30  # seconds: a hang guard, never synchronisation


def _loops():
    loops = [pytest.param(("asyncio", {}), id="asyncio"), pytest.param(("trio", {}), id="trio")]
    try:
        import uvloop
    except ImportError:
        return loops
    loops.append(pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop"))
    return loops


@pytest.fixture(params=_loops())
def anyio_loop(request):
    return request.param


@pytest.fixture(params=[pytest.param(short_name(m), id=short_name(m)) for m in caio.variants])
def backend(request):
    return request.param


def run(loop, body, *args):
    library, options = loop

    async def guarded():
        with anyio.fail_after(GUARD):
            return await body(*args)

    return anyio.run(guarded, backend=library, backend_options=options)


def expected_class(library, backend):
    if library == "trio":
        return TRIO_CONTEXTS[backend]
    module = next(m for m in caio.variants_asyncio if short_name(m) == backend)
    return module.AsyncioContext


def free_slots(ctx):
    semaphore = ctx.adapter.semaphore
    # trio.Semaphore says it; asyncio.BoundedSemaphore does not
    return semaphore.value if ctx.library == "trio" else semaphore._value


def test_picks_the_running_loops_adapter(anyio_loop, backend, files):
    fd = files.open()

    async def body():
        async with AnyioContext(backend=backend) as ctx:
            assert ctx.library == anyio_loop[0]
            assert type(ctx.adapter) is expected_class(anyio_loop[0], backend)
            assert await ctx.write(b"Hello anyio", fd, 0) == 11
            await ctx.fsync(fd)
            await ctx.fdsync(fd)
            assert await ctx.read(32, fd, 0) == b"Hello anyio"
            op = ctx.adapter.OPERATION_CLASS.read(5, fd, 6)
            assert await ctx.submit(op) == b"anyio"
            with pytest.raises(OSError) as info:
                await ctx.read(1, closed_fd(), 0)
            assert info.value.errno == errno.EBADF

    run(anyio_loop, body)
    assert os.pread(fd, 100, 0) == b"Hello anyio"


def test_default_backend_is_the_selected_one(anyio_loop):
    async def body():
        async with AnyioContext() as ctx:
            if anyio_loop[0] == "trio":
                assert type(ctx.adapter) is TrioContext
            else:
                assert isinstance(ctx.adapter, caio.AsyncioContext)

    run(anyio_loop, body)


def test_outside_a_loop_it_says_so():
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        AnyioContext()


def test_many_readers_in_a_task_group(anyio_loop, backend, files):
    size = 16 * 1024
    parts = [hashlib.sha256(bytes([i])).digest() * (size // 32) for i in range(64)]
    fd = files.open(b"".join(parts))

    async def body():
        results = {}
        async with AnyioContext(max_requests=8, backend=backend) as ctx:
            async def reader(i):
                results[i] = await ctx.read(size, fd, i * size)

            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(reader, i)
        return results

    results = run(anyio_loop, body)
    assert [results[i] for i in range(64)] == parts


def test_cancel_scope_expiring_with_pipe_reads_in_flight(anyio_loop, backend, files):
    fd = files.open(b"healthy")
    ends = [os.pipe() for _ in range(3)]
    cancelled = []

    async def body():
        async with AnyioContext(max_requests=4, backend=backend) as ctx:
            ops = [ctx.adapter.OPERATION_CLASS.read(8, r, 0) for r, _ in ends]

            async def reader(op):
                try:
                    await ctx.submit(op)
                except anyio.get_cancelled_exc_class():
                    cancelled.append(op)
                    raise

            with anyio.move_on_after(0.1) as scope:
                async with anyio.create_task_group() as tg:
                    for op in ops:
                        tg.start_soon(reader, op)
            assert scope.cancelled_caught
            assert len(cancelled) == len(ops)
            for _, w in ends:
                os.write(w, b"B" * 8)
            # Ops the kernel could not cancel keep their slot until the data ends them.
            while any(op.context is not None for op in ops) or free_slots(ctx) != 4:
                await anyio.lowlevel.checkpoint()
            assert await ctx.read(7, fd, 0) == b"healthy"
            r, w = ends[0]
            os.write(w, b"next")
            got = await ctx.read(12, r, 0)
            # what is left of the first 8 bytes (none if an op took them), then "next"
            assert got.endswith(b"next") and set(got[:-4]) <= {ord("B")}

    try:
        run(anyio_loop, body)
    finally:
        for r, w in ends:
            os.close(r)
            os.close(w)


def test_close_with_work_in_flight(anyio_loop, backend, files):
    data = os.urandom(1 << 20)
    fd = files.open(data)
    size = 128 * 1024

    async def body():
        ctx = AnyioContext(backend=backend)
        outcomes = {}

        async def reader(i):
            try:
                outcomes[i] = await ctx.read(size, fd, i * 4096)
            except RuntimeError as exc:
                outcomes[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(reader, i)
            await anyio.wait_all_tasks_blocked()
            ctx.close()
        for i, got in outcomes.items():
            if isinstance(got, RuntimeError):
                assert "closed" in str(got)
            else:
                assert got == data[i * 4096:i * 4096 + size]
        assert len(outcomes) == 32

    run(anyio_loop, body)


def test_aiofile_lines_under_anyio_asyncio(backend, files):
    aiofile = pytest.importorskip("aiofile")
    lines = [f"line {i}: {'y' * (i % 41)} ✓\n" for i in range(200)]
    path = files.path("lines.txt")

    async def body():
        ctx = AnyioContext(backend=backend)
        async with ctx, aiofile.async_open(path, "w+", context=ctx.adapter) as afp:
            for line in lines:
                await afp.write(line)
            await afp.flush(sync_metadata=True)
            afp.seek(0)
            return [line async for line in afp]

    assert run(("asyncio", {}), body) == lines


@pytest.mark.parametrize("impl", ["uring", "linux", "thread", "python"])
def test_readme_anyio_example_runs_as_written(workdir, impl):
    from test_trio import readme_block, run_readme_block

    name = {"uring": "linux_uring", "linux": "linux_aio", "thread": "thread_aio",
            "python": "python_aio"}[impl]
    if name not in TRIO_CONTEXTS:
        pytest.skip(f"caio.{name} is not available")
    run_readme_block(readme_block("AnyioContext"), workdir, {"CAIO_IMPL": impl})
    for backend in ("asyncio", "trio"):
        assert (workdir / f"anyio-{backend}.file").read_bytes() == b"Hello anyio"
