"""Reads that complete inline (page cache) must not starve the other tasks of the loop."""

import asyncio

from caio.asyncio_base import EventfdAsyncioContextBase

READS = 2000


def test_a_task_reading_cached_data_lets_other_tasks_run(loop_runner, files, AsyncioContext):
    fd = files.open(b"x" * 4096)

    async def body():
        ctx = AsyncioContext()
        budget = getattr(ctx, "INLINE_BUDGET", None)
        other_turns = 0
        done = False

        async def reader():
            nonlocal done
            for _ in range(READS):
                assert await ctx.read(4096, fd, 0) == b"x" * 4096
            done = True

        async def other():
            nonlocal other_turns
            while not done:
                other_turns += 1
                await asyncio.sleep(0)

        await asyncio.gather(reader(), other())
        ctx.close()
        if isinstance(ctx, EventfdAsyncioContextBase):
            # The reader may run at most about a budget of reads per loop iteration.
            assert budget is not None
            assert other_turns >= READS // (budget + 1) - 1, other_turns
        else:
            # Every read of the other adapters waits for the loop.
            assert other_turns >= READS // 2, other_turns

    loop_runner.run(body)
