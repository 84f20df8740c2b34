"""Many tasks reading cached data: they take turns of several inline reads each (a yield
costs more than a read), and the loop still gets control after a bounded number of reads."""

import asyncio

import pytest

from caio.adapter_base import EventfdAdapterBase

READERS = 64
READS_EACH = 100


def test_many_cached_readers_take_turns_of_several_reads(loop_runner, files, AsyncioContext):
    if not issubclass(AsyncioContext, EventfdAdapterBase):
        pytest.skip("only the eventfd adapters complete reads inline")
    fd = files.open(b"t" * 4096)

    async def body():
        ctx = AsyncioContext()
        yields = 0
        own_yield = ctx._yield

        def counted_yield():
            nonlocal yields
            yields += 1
            return own_yield()

        ctx._yield = counted_yield
        other_turns = 0
        done = 0

        async def reader():
            nonlocal done
            for _ in range(READS_EACH):
                assert await ctx.read(4096, fd, 0) == b"t" * 4096
            done += 1

        async def other():
            nonlocal other_turns
            while done < READERS:
                other_turns += 1
                await asyncio.sleep(0)

        try:
            await asyncio.gather(other(), *(reader() for _ in range(READERS)))
        finally:
            ctx.close()
        return yields, other_turns, ctx.INLINE_CAP

    yields, other_turns, cap = loop_runner.run(body)
    reads = READERS * READS_EACH
    # With turns of one read (every reader but the first yielding after each read once the
    # budget was spent) 11% of these reads yielded; with turns of INLINE_TURN, under 5%.
    assert yields < reads // 12, yields
    # An iteration still ends after at most about INLINE_CAP reads plus one per reader.
    assert other_turns >= reads // (cap + READERS) - 1, other_turns
