"""linux_uring: large buffered file requests run on helper threads of ours, not on the
kernel's io-wq workers (rust/backends/src/driver/offload.rs).

What a user can observe: the bytes land where asked, the threads appear only once a large
buffered request runs (never for small, O_DIRECT or RWF_NOWAIT ones), a blocking
``process_events`` wakes for their completions and leaves the eventfd the event loop
watches alone, and a cancelled request either completes in full or never touched its buffer.
"""

import asyncio
import errno
import os
import select
import textwrap
import threading

import pytest
from conftest import Calls, run_python

try:
    from caio.linux_uring import Context, Operation
    from caio.linux_uring_asyncio import AsyncioContext
except ImportError as exc:  # old kernel, seccomp, io_uring_disabled, ...
    pytest.skip(f"caio.linux_uring is not available: {exc}", allow_module_level=True)

KiB = 1024
MiB = 1024 * KiB
LARGE = 256 * KiB


def pattern(size, seed=1):
    return bytes((i * 7 + seed) % 251 + 1 for i in range(251)) * (size // 251) + b"\x01" * (
        size % 251)


def test_large_reads_and_writes_land_where_asked(files, loop_runner):
    data = pattern(3 * MiB + 123)
    fd = files.open(b"\0" * (4 * MiB))

    async def body():
        async with AsyncioContext() as ctx:
            assert await ctx.write(data, fd, 5000) == len(data)
            chunks = await asyncio.gather(
                *(ctx.read(MiB, fd, 5000 + i * MiB) for i in range(3)))
            vectored = [bytearray(LARGE), bytearray(2 * LARGE)]
            n = await ctx.readv(vectored, fd, 5000)
            return chunks, vectored, n

    chunks, vectored, n = loop_runner.run(body)
    assert b"".join(chunks) == data[: 3 * MiB]
    assert n == 3 * LARGE and bytes(vectored[0] + vectored[1]) == data[: 3 * LARGE]
    assert os.pread(fd, 5000, 0) == b"\0" * 5000
    assert os.pread(fd, len(data) + 10, 5000) == data + b"\0" * 10


def test_helper_threads_start_only_for_large_buffered_requests(workdir):
    # A fresh interpreter: other tests' thread_aio contexts run threads of the same name.
    path = workdir / "data"
    path.write_bytes(pattern(2 * MiB))
    code = textwrap.dedent(f"""
        import os
        from caio.linux_uring import Context, Operation

        MiB = 1 << 20

        def helpers():
            names = [open(f"/proc/self/task/{{t}}/comm").read().strip()
                     for t in os.listdir("/proc/self/task")]
            return sum(n.startswith("caio-worker") for n in names)

        def run(ctx, op):
            assert ctx.submit(op) == 1
            ctx.flush()
            while op.context is not None:
                ctx.process_events(min_requests=1, timeout=10)
            return op.get_value()

        ctx = Context()
        fd = os.open({str(path)!r}, os.O_RDONLY)
        data = os.pread(fd, 2 * MiB, 0)
        assert run(ctx, Operation.read(64 * 1024, fd, 0)) == data[:64 * 1024]
        # cached, so it succeeds without waiting: the kernel answers it at once
        assert run(ctx, Operation.read(MiB, fd, 0, flags=os.RWF_NOWAIT)) == data[:MiB]
        before = helpers()
        assert run(ctx, Operation.read(MiB + 1, fd, 100)) == data[100:MiB + 101]
        print(before, helpers(), min(max(len(os.sched_getaffinity(0)), 2), 8))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    before, after, expected = map(int, proc.stdout.split())
    assert before == 0, "a 64 KiB or RWF_NOWAIT read started helper threads"
    assert after == expected, "a large buffered read did not run on the helpers"


def test_a_blocking_wait_wakes_for_a_helper_completion_and_leaves_the_eventfd_alone(files):
    data = pattern(MiB)
    fd = files.open(data)
    ctx = Context()
    op = Operation.read(MiB, fd, 0)
    calls = Calls()
    op.set_callback(calls)
    returned = []

    def waiter():
        returned.append(ctx.process_events(min_requests=1, timeout=-1))

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    # No flush: a large read needs none, the helpers run it at submit.
    assert ctx.submit(op) == 1
    t.join(10)
    assert not t.is_alive(), "process_events(timeout=-1) slept through a helper completion"
    assert returned == [1] and calls.results == [MiB]
    assert op.get_value() == data
    # The wait sleeps on a descriptor of its own: the loop's wake-up is still there.
    assert select.select([ctx.fileno], [], [], 0)[0] == [ctx.fileno]


def test_cancelling_large_reads_leaves_the_others_whole(files, loop_runner):
    data = pattern(MiB)
    fd = files.open(data)

    async def body():
        async with AsyncioContext() as ctx:
            buffers = [bytearray(b"\xee") * MiB for _ in range(32)]
            tasks = [asyncio.ensure_future(ctx.read_into(b, fd, 0)) for b in buffers]
            await asyncio.sleep(0)  # submitted
            for task in tasks[8:]:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return buffers, results

    buffers, results = loop_runner.run(body)
    cancelled = 0
    for buf, res in zip(buffers, results):
        if isinstance(res, asyncio.CancelledError):
            # Its result is thrown away; the read itself may still be running, so its
            # buffer is not looked at here (the raw test below does, once it completed).
            cancelled += 1
        else:
            assert res == MiB and buf == data
    assert cancelled == 24


def test_a_raw_cancel_of_a_queued_helper_request_completes_it_with_ecanceled_untouched(files):
    data = pattern(MiB)
    fd = files.open(data)
    ctx = Context(max_requests=64)
    buffers = [bytearray(b"\xee") * MiB for _ in range(32)]
    ops = [Operation.read_into(b, fd, 0) for b in buffers]
    assert ctx.submit(*ops) == 32
    for op in ops[16:]:
        ctx.cancel(op)
    while any(op.context is not None for op in ops):
        ctx.process_events(min_requests=1, timeout=10)
    errors = [op.error for op in ops]
    assert set(errors) <= {0, errno.ECANCELED}
    for op, buf in zip(ops, buffers):
        if op.error == 0:
            assert op.get_value() == MiB and buf == data
        else:
            assert buf == b"\xee" * MiB, "a cancelled read wrote into its buffer"
    # two to eight helpers take them in order: the last ones were still queued
    assert errors.count(errno.ECANCELED) >= 1
