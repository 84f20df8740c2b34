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
