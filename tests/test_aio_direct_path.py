"""linux_aio's asyncio adapter on O_DIRECT reads: by default every request reaches the
kernel at once, in its own ``io_submit``; with coalescing on (a lower ``EAGER_BELOW``), when
a drain of completions resumes tasks whose next requests the adapter coalesces, those
requests reach the kernel in the same loop iteration the tasks made them (one ``io_submit`` queued behind the resumed tasks,
not a flush scheduled from inside the iteration, which only ran in the next one), and
every read still gets its own data, on asyncio and uvloop.

The loop iterations are counted at the asyncio selector; ``io_submit`` calls are seen by
wrapping the adapter's Context in a recording proxy. Files live in ``workdir`` (a real
filesystem); the tests skip where it refuses O_DIRECT.
"""

import asyncio
import os

import pytest
from conftest import LoopRunner
from test_direct_io import DirectFile

import caio

linux_aio_asyncio = pytest.importorskip("caio.linux_aio_asyncio")

BLOCK = 4096
TASKS = 12  # above Coalescing.EAGER_BELOW (below the default): most resubmissions coalesced
READS_PER_TASK = 6


@pytest.fixture
def direct(workdir):
    f = DirectFile(workdir)
    try:
        blocks = TASKS * READS_PER_TASK
        data = b"".join(bytes([n % 251]) * BLOCK for n in range(blocks))
        assert os.pwrite(f.plain, data, 0) == len(data)
        os.fsync(f.plain)
        yield f
    finally:
        f.close()


class Coalescing(linux_aio_asyncio.AsyncioContext):
    EAGER_BELOW = 4


class RecordingContext:
    """Forwards to the adapter's Context; records each submitted op's offset with the
    loop iteration it was submitted in."""

    def __init__(self, real, iteration):
        self._real = real
        self._iteration = iteration
        self.submitted: dict[int, int] = {}
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def submit(self, *ops):
        self.calls += 1
        for op in ops:
            self.submitted[op.offset] = self._iteration()
        return self._real.submit(*ops)


async def read_all(direct, ctx, requested, iteration):
    async def worker(index):
        buffer = caio.aligned_buffer(BLOCK)
        for n in range(READS_PER_TASK):
            offset = (index * READS_PER_TASK + n) * BLOCK
            requested[offset] = iteration()
            assert await ctx.read_into(buffer, direct.fd, offset) == BLOCK
            assert bytes(buffer) == bytes([(offset // BLOCK) % 251]) * BLOCK, offset

    await asyncio.gather(*(worker(i) for i in range(TASKS)))


@pytest.mark.parametrize("adapter", [Coalescing, linux_aio_asyncio.AsyncioContext],
                         ids=["coalescing", "default"])
def test_resumed_tasks_requests_go_out_in_the_iteration_they_were_made(direct, adapter):
    async def main():
        loop = asyncio.get_running_loop()
        selector = loop._selector
        iterations = [0]
        select = selector.select

        def counting_select(timeout=None):
            iterations[0] += 1
            return select(timeout)

        selector.select = counting_select

        def iteration():
            return iterations[0]

        ctx = adapter()
        recorder = ctx.context = RecordingContext(ctx.context, iteration)
        requested: dict[int, int] = {}
        try:
            await read_all(direct, ctx, requested, iteration)
        finally:
            ctx.context = recorder._real
            ctx.close()
            selector.select = select
        return requested, recorder

    # the selector loop itself (its select() counts iterations), whatever CAIO_TEST_LOOP says
    requested, recorder = LoopRunner(asyncio.SelectorEventLoop).run(main)
    assert set(recorder.submitted) == set(requested)
    # The first request of each task is made when the tasks start, not after a drain.
    later = [off for off in requested if (off // BLOCK) % READS_PER_TASK]
    late = sorted(off // BLOCK for off in later if recorder.submitted[off] != requested[off])
    assert late == [], f"blocks submitted in a later loop iteration than requested: {late}"
    if adapter is Coalescing:  # ... and they were coalesced: fewer io_submit calls than reads
        assert recorder.calls < len(requested)
    else:  # ... each in its own
        assert recorder.calls == len(requested)


@pytest.mark.parametrize("adapter", [Coalescing, linux_aio_asyncio.AsyncioContext],
                         ids=["coalescing", "default"])
def test_every_read_gets_its_own_data(direct, loop_factory, adapter):
    async def main():
        ctx = adapter()
        try:
            await read_all(direct, ctx, {}, lambda: 0)
        finally:
            ctx.close()

    LoopRunner(loop_factory).run(main)
