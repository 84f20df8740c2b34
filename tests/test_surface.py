"""What the API looks like and which arguments it takes (issue 9, items 1-3 and the
thread_aio part of 8):

* the default ``thread_aio.Context`` shows exactly caio's surface; the eventfd delivery mode
  is its own type, ``thread_aio.EventfdContext``;
* offsets: raw linux_uring keeps ``-1`` / ``2**64 - 1`` as io_uring's "use the file
  position" and refuses everything else outside ``loff_t``; the other native backends refuse
  negative offsets when the op is built; no negative offset ever reads or writes at the
  file's current position by accident;
* pipes and FIFOs read and written at offset 0 work on every backend, raw and through every
  adapter;
* a thread_aio Context whose workers cannot start raises an OSError with the errno.
"""

import errno
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import (
    Tracker,
    module_by_short_name,
    needs_thread_aio,
    run_python,
)

thread_aio = module_by_short_name("thread_aio")
linux_uring = module_by_short_name("linux_uring")

needs_uring = pytest.mark.skipif(linux_uring is None, reason="caio.linux_uring is not available")

# What caio 0.12's thread_aio.Context has, and what the eventfd type adds.
CAIO_THREAD_CONTEXT = {"cancel", "close", "max_requests", "pool_size", "submit"}
COMPLETION_SURFACE = {"fileno", "poll", "process_events", "run_inline"}


def public_names(obj) -> set:
    return {name for name in dir(obj) if not name.startswith("_")}


@pytest.fixture
def pipe():
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def fifo(workdir):
    path = workdir / "fifo"
    os.mkfifo(path)
    # Opening the read end without O_NONBLOCK would wait for a writer.
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    os.set_blocking(r, True)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------------------------
# item 1: the thread_aio types


@needs_thread_aio
def test_default_thread_context_has_exactly_caios_surface():
    ctx = thread_aio.Context()
    try:
        assert public_names(ctx) == CAIO_THREAD_CONTEXT
        assert public_names(thread_aio.Context) == CAIO_THREAD_CONTEXT
        for name in COMPLETION_SURFACE | {"flush"}:
            assert not hasattr(ctx, name), name
    finally:
        ctx.close()


@needs_thread_aio
def test_default_thread_context_takes_caios_arguments_only():
    with pytest.raises(TypeError):
        thread_aio.Context(eventfd=True)
    with pytest.raises(TypeError):
        thread_aio.Context(eventfd=False)
    ctx = thread_aio.Context(16, 2)
    assert (ctx.max_requests, ctx.pool_size) == (16, 2)
    ctx.close()


@needs_thread_aio
def test_duck_typed_pumping_drives_the_default_thread_context(files):
    """Code written against caio pumps a Context only if it has ``process_events``
    (caio's own test helpers do); the default thread_aio Context delivers on its workers."""
    fd = files.open(b"duck typing")
    ctx = thread_aio.Context()
    op = thread_aio.Operation.read(4, fd, 5)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    if hasattr(ctx, "process_events"):
        ctx.process_events(min_requests=1, timeout=1)
    assert tracker.event.wait(10)
    ctx.close()
    assert tracker.ordered() == [4]
    assert op.get_value() == b"typi"


@needs_thread_aio
def test_eventfd_context_is_its_own_type_with_the_completion_methods(files):
    EventfdContext = thread_aio.EventfdContext
    assert EventfdContext is not thread_aio.Context
    assert "EventfdContext" in thread_aio.__all__
    assert "thread" in EventfdContext.__doc__
    assert not isinstance(thread_aio.Context(1, 1), EventfdContext)
    ctx = EventfdContext(16, 2)
    assert public_names(ctx) == CAIO_THREAD_CONTEXT | COMPLETION_SURFACE
    assert (ctx.max_requests, ctx.pool_size) == (16, 2)
    assert os.readlink(f"/proc/self/fd/{ctx.fileno}") == "anon_inode:[eventfd]"
    fd = files.open(b"eventfd mode")
    op = thread_aio.Operation.read(2, fd, 8, 0)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    while not tracker.event.is_set():
        ctx.process_events(min_requests=1, timeout=5)
    assert op.get_value() == b"mo"
    ctx.close()
    with pytest.raises(TypeError):
        EventfdContext(eventfd=True)


@needs_thread_aio
def test_thread_adapter_runs_on_the_eventfd_context(loop_runner, files):
    from caio import thread_aio_asyncio

    fd = files.open(b"adapter")

    async def body():
        async with thread_aio_asyncio.AsyncioContext(pool_size=2) as ctx:
            assert type(ctx.context) is thread_aio.EventfdContext
            assert ctx.context.pool_size == 2
            assert await ctx.read(3, fd, 2) == b"apt"

    loop_runner.run(body)


# ---------------------------------------------------------------------------------------------
# item 2: offsets

CURRENT_POSITION = 2**64 - 1
URING_OUT_OF_RANGE = [-2, -(2**63), -(2**64), 2**63, 2**64 - 2, 2**64, 2**64 + 5, 2**100]


@needs_uring
@pytest.mark.parametrize("offset", URING_OUT_OF_RANGE)
@pytest.mark.parametrize("kind", ["read", "write"])
def test_uring_offset_outside_loff_t_is_overflow_error(files, offset, kind):
    fd = files.open(b"0123456789")
    with pytest.raises(OverflowError, match="offset"):
        if kind == "read":
            linux_uring.Operation.read(4, fd, offset)
        else:
            linux_uring.Operation.write(b"data", fd, offset)
    assert os.pread(fd, 100, 0) == b"0123456789"


@needs_uring
def test_uring_keeps_the_file_position_sentinel_and_every_loff_t(files, pipe):
    fd = files.open()
    for offset in (-1, CURRENT_POSITION):
        assert linux_uring.Operation.read(1, fd, offset).offset == CURRENT_POSITION
        assert linux_uring.Operation.write(b"x", fd, offset).offset == CURRENT_POSITION
    assert linux_uring.Operation.read(1, fd, 2**63 - 1).offset == 2**63 - 1
    assert linux_uring.Operation.read(1, fd, True).offset == 1  # an int, as in caio
    with pytest.raises(TypeError):
        linux_uring.Operation.read(1, fd, 1.0)
    # the sentinel still means "the file position" (pipes)
    r, w = pipe
    ctx = linux_uring.Context()
    op = linux_uring.Operation.write(b"sentinel", w, -1)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    while not tracker.event.is_set():
        ctx.flush()
        ctx.process_events(min_requests=1, timeout=1)
    assert os.read(r, 100) == b"sentinel"


NATIVE_POSITIONAL = ["thread_aio", "linux_aio"]


@pytest.mark.parametrize("name", NATIVE_POSITIONAL)
@pytest.mark.parametrize("offset", [-1, -2, -(2**63)])
@pytest.mark.parametrize("kind", ["read", "write"])
def test_negative_offset_is_refused_when_the_op_is_built(files, name, offset, kind):
    module = module_by_short_name(name)
    if module is None:
        pytest.skip(f"caio.{name} is not available")
    fd = files.open(b"0123456789")
    with pytest.raises(ValueError, match="offset"):
        if kind == "read":
            module.Operation.read(4, fd, offset)
        else:
            module.Operation.write(b"data", fd, offset)
    assert module.Operation.read(4, fd, 2**63 - 1).offset == 2**63 - 1
    with pytest.raises(OverflowError):
        module.Operation.read(4, fd, 2**63)


@pytest.mark.parametrize("kind", ["read", "write"])
def test_adapter_negative_offset_never_uses_the_file_position(loop_runner, adapter, files, kind):
    fd = files.open(b"0123456789")
    os.lseek(fd, 2, os.SEEK_SET)

    async def body():
        async with adapter.AsyncioContext() as ctx:
            with pytest.raises((ValueError, OSError)):
                if kind == "read":
                    await ctx.read(4, fd, -1)
                else:
                    await ctx.write(b"XY", fd, -1)

    loop_runner.run(body)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 2
    assert os.pread(fd, 100, 0) == b"0123456789"


@pytest.mark.parametrize("offset", [2**63, 2**64 + 5])
@pytest.mark.parametrize("kind", ["read", "write"])
def test_adapter_offset_beyond_loff_t_is_overflow_error(loop_runner, adapter, files, offset,
                                                        kind):
    fd = files.open(b"0123456789")

    async def body():
        async with adapter.AsyncioContext() as ctx:
            with pytest.raises(OverflowError):
                if kind == "read":
                    await ctx.read(4, fd, offset)
                else:
                    await ctx.write(b"XY", fd, offset)

    loop_runner.run(body)
    assert os.pread(fd, 100, 0) == b"0123456789"


# ---------------------------------------------------------------------------------------------
# item 3: pipes and FIFOs at offset 0


def test_raw_pipe_read_at_offset_zero(backend, pipe):
    r, w = pipe
    os.write(w, b"pipe data")
    ctx = backend.Context()
    op = backend.read(64, r, 0)
    assert backend.run(ctx, op) == [9]
    assert op.get_value() == b"pipe data"
    backend.settle(ctx)


def test_raw_pipe_write_at_offset_zero(backend, pipe):
    r, w = pipe
    ctx = backend.Context()
    op = backend.write(b"to the pipe", w, 0)
    assert backend.run(ctx, op) == [11]
    assert op.get_value() == 11
    assert os.read(r, 100) == b"to the pipe"
    backend.settle(ctx)


def test_raw_fifo_round_trip_at_offset_zero(backend, fifo):
    r, w = fifo
    ctx = backend.Context()
    write = backend.write(b"through a fifo", w, 0)
    assert backend.run(ctx, write) == [14]
    read = backend.read(100, r, 0)
    assert backend.run(ctx, read) == [14]
    assert read.get_value() == b"through a fifo"
    backend.settle(ctx)


@pytest.mark.parametrize("name", ["thread_aio", "python_aio"])
def test_pipe_at_a_nonzero_offset_still_fails_with_espipe(files, pipe, name):
    """Only offset 0 means "the next bytes" on a descriptor without a position."""
    module = module_by_short_name(name)
    if module is None:
        pytest.skip(f"caio.{name} is not available")
    r, w = pipe
    os.write(w, b"unread")
    ctx = module.Context()
    op = module.Operation.read(8, r, 3)
    tracker = Tracker(1)
    op.set_callback(tracker.callback(0))
    assert ctx.submit(op) == 1
    assert tracker.event.wait(10)
    ctx.close()
    with pytest.raises((OSError, SystemError)) as exc_info:
        op.get_value()
    assert exc_info.value.errno == errno.ESPIPE
    assert os.read(r, 100) == b"unread"


def test_run_inline_leaves_a_pipe_read_to_the_normal_path(native_backend, pipe):
    ctx = native_backend.Context()
    if not hasattr(ctx, "run_inline"):
        native_backend.settle(ctx)
        pytest.skip("this Context delivers on its workers and has no run_inline")
    r, w = pipe
    os.write(w, b"abc")
    op = native_backend.read(8, r, 0)
    assert ctx.run_inline(op) is False  # not an answer for this op: ESPIPE from preadv2
    assert native_backend.run(ctx, op) == [3]
    assert op.get_value() == b"abc"
    native_backend.settle(ctx)


def test_adapter_reads_a_pipe_at_offset_zero(loop_runner, AsyncioContext, pipe):
    r, w = pipe
    os.write(w, b"pipe data")

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.read(8, r, 0) == b"pipe dat"
            assert await ctx.read(8, r, 0) == b"a"

    loop_runner.run(body)


def test_adapter_writes_a_pipe_at_offset_zero(loop_runner, AsyncioContext, pipe):
    r, w = pipe

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(b"to the pipe", w, 0) == 11

    loop_runner.run(body)
    assert os.read(r, 100) == b"to the pipe"


def test_adapter_fifo_round_trip_at_offset_zero(loop_runner, AsyncioContext, fifo):
    r, w = fifo

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(b"fifo", w, 0) == 4
            assert await ctx.read(100, r, 0) == b"fifo"

    loop_runner.run(body)


# ---------------------------------------------------------------------------------------------
# item 8 (thread_aio): worker threads that cannot start


@needs_thread_aio
@pytest.mark.parametrize("type_name", ["Context", "EventfdContext"])
def test_thread_context_whose_workers_cannot_start_raises_os_error(type_name):
    code = textwrap.dedent(f"""
        import resource
        from caio import thread_aio
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                  if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 1024, resource.RLIM_INFINITY))
        try:
            thread_aio.{type_name}(pool_size=64)
        except OSError as exc:
            outcome = f"OSError errno={{exc.errno}} {{exc}}"
        except BaseException as exc:
            outcome = f"other {{type(exc).__name__}}: {{exc}}"
        else:
            outcome = "no error"
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
        print(outcome)
        ctx = thread_aio.{type_name}(pool_size=2)  # the process is fine afterwards
        ctx.close()
        print("ok")
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if "no error" in proc.stdout:
        pytest.skip("could not make thread creation fail here")
    assert f"OSError errno={errno.EAGAIN} " in proc.stdout, proc.stdout
    for limit in ("RLIMIT_NPROC", "threads-max", "memory"):
        assert limit in proc.stdout, proc.stdout
    assert proc.stdout.rstrip().endswith("ok"), proc.stdout


@needs_thread_aio
def test_readme_eventfd_context_example_runs_as_written(workdir):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    code = next(b for b in blocks if "caio.thread_aio import EventfdContext" in b)
    (workdir / "test.file").write_bytes(b"e" * 5000)
    code += "\nassert data == b'e' * 4096, len(data)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
