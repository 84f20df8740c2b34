"""One large read on the native backends: what the loop thread gets, and what the
big-read benchmark (benchmarks/benchlib.py ``big_read``) counts as the read's stall.

No timing assertions: these check that the result is handed over without a copy, and
that the benchmark keeps the result alive past its stall window (freeing a large result
is the caller's cost, reported on its own) and says how much of a stall was the loop
thread's own work.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from conftest import NATIVE_MODULES, short_name

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SIZE = 8 << 20

NATIVE_ADAPTERS = [pytest.param(short_name(p.values[0]), id=short_name(p.values[0]))
                   for p in NATIVE_MODULES]
BENCH_NAMES = {"linux_uring": "uring", "linux_aio": "linux", "thread_aio": "thread"}


@pytest.fixture
def benchlib():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import benchlib as module
    finally:
        sys.path.remove(str(BENCH_DIR))
    return module


@pytest.fixture
def big_file(files):
    data = os.urandom(SIZE)
    fd = files.open(data, name="big-read.bin")
    return files.root / "big-read.bin", fd, data


@pytest.mark.parametrize("name", NATIVE_ADAPTERS)
def test_big_read_value_is_the_ops_own_buffer(name, big_file):
    """The data lands in the object the caller gets: get_value() hands over the op's
    buffer (the same object every time), no copy of the payload on the loop thread."""
    import importlib

    module = importlib.import_module(f"caio.{name}_asyncio")
    _, fd, data = big_file

    async def main():
        ctx = module.AsyncioContext()
        try:
            op = module.Operation.read(SIZE, fd, 0)
            await ctx.submit(op)
            first, second = op.get_value(), op.get_value()
            assert first is second
            assert bytes(first) == data
        finally:
            ctx.close()

    asyncio.run(main())


@pytest.mark.parametrize("name", NATIVE_ADAPTERS)
def test_big_read_benchmark_counts_the_read_not_the_free(name, big_file, benchlib):
    path, _, _ = big_file

    result = asyncio.run(benchlib.big_read(f"caio:{BENCH_NAMES[name]}", str(path), SIZE))

    assert result["read_mib"] == SIZE / (1 << 20)
    assert result["ticks"] >= 1
    # Freeing the result is measured after the ticker stopped, not inside the stall.
    assert result["free_ms"] >= 0
    assert result["free_cpu_ms"] >= 0
    # The loop thread's own CPU during the longest gap, and in any one gap.
    assert 0 <= result["stall_cpu_ms"] <= result["max_loop_cpu_ms"]


# --- the asyncio adapters' capacity semaphore ---------------------------------------
# (caio.asyncio_base.CapacitySemaphore: BoundedSemaphore's behaviour with an acquire()
# that needs no coroutine when a slot is free; it made per-operation CPU of O_DIRECT
# reads measurably lower, see benchmarks/results/2026-12-01-stall-direct-ab.txt)


def test_capacity_semaphore_free_slot_is_taken_without_suspending():
    from caio.asyncio_base import CapacitySemaphore

    async def main():
        sem = CapacitySemaphore(2, asyncio.get_running_loop())
        ready = sem.acquire()
        assert isinstance(ready, asyncio.Future) and ready.done()
        await ready
        await sem.acquire()
        assert sem._value == 0
        sem.release()
        sem.release()
        assert sem._value == 2
        with pytest.raises(ValueError, match="released too many times"):
            sem.release()

    asyncio.run(main())


def test_capacity_semaphore_waiters_get_slots_in_order():
    from caio.asyncio_base import CapacitySemaphore

    async def main():
        sem = CapacitySemaphore(1, asyncio.get_running_loop())
        await sem.acquire()
        order = []

        async def taker(name):
            await sem.acquire()
            order.append(name)

        tasks = [asyncio.create_task(taker(n)) for n in "abc"]
        await asyncio.sleep(0)
        assert order == [] and sem._value == 0
        for expected in (["a"], ["a", "b"], ["a", "b", "c"]):
            sem.release()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert order == expected
        # A newcomer queues behind nobody now, but the slot is still held by "c".
        assert sem._value == 0
        sem.release()
        assert sem._value == 1
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_capacity_semaphore_cancelled_waiters_lose_no_slot():
    from caio.asyncio_base import CapacitySemaphore

    async def main():
        sem = CapacitySemaphore(1, asyncio.get_running_loop())
        await sem.acquire()
        queued = asyncio.create_task(sem.acquire())
        handed = asyncio.create_task(sem.acquire())
        last = asyncio.create_task(sem.acquire())
        await asyncio.sleep(0)
        # Cancelled while waiting: leaves the queue.
        queued.cancel()
        await asyncio.sleep(0)
        assert queued.cancelled()
        # The slot goes to `handed`, which is cancelled before it runs: it passes the slot
        # on to `last` instead of losing it.
        sem.release()
        handed.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert handed.cancelled()
        assert await asyncio.wait_for(last, 5)
        assert sem._value == 0
        sem.release()
        assert sem._value == 1

    asyncio.run(main())
