"""pytest-benchmark suite: every available caio backend, on real files in the page cache.

Run with ``pytest benchmarks/ --benchmark-only`` (add ``--benchmark-group-by=group`` to
compare backends side by side; that is the default grouping here). One benchmark round
is a batch of operations at the given concurrency; ``extra_info.ops_per_round`` says
how many, so ops/s = ops_per_round / mean. The side-by-side comparison with caio
0.12.10 lives in ``benchmarks/compare.py``.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest

pytest.importorskip("pytest_benchmark")

import benchlib
import harness

try:
    BACKENDS = sorted(harness.caio_backends())
except ImportError:  # pragma: no cover - caio itself not importable
    BACKENDS = []

LOOPS = harness.available_loops()

# (workload, concurrency, operations per benchmark round)
CASES = [
    ("rand4k", 1, 1024),
    ("rand4k", 16, 2048),
    ("rand4k", 64, 2048),
    ("rand4k", 256, 2048),
    ("seq64k", 16, 1024),
    ("seq1m", 16, 128),
    ("write4k", 16, 1024),
    ("fsync", 16, 256),
    ("fdsync", 16, 256),
]


@pytest.fixture(params=LOOPS)
def loop_name(request):
    return request.param


@pytest.fixture(params=BACKENDS or [pytest.param(None, marks=pytest.mark.skip("no backend"))])
def backend(request):
    return request.param


@pytest.mark.parametrize(("workload", "concurrency", "ops"), CASES,
                         ids=[f"{w}-c{c}" for w, c, _ in CASES])
def test_caio(benchmark, bench_files, backend, loop_name, workload, concurrency, ops):
    w = benchlib.WORKLOADS[workload]
    warm = benchlib.before_run(w, bench_files)
    if not warm["ok"]:
        warnings.warn(f"{benchlib.workload_file(w, bench_files)} is not fully in the page "
                      f"cache: {warm}", stacklevel=1)

    loop = harness.new_loop(loop_name)
    asyncio.set_event_loop(loop)
    runner = benchlib.Runner(f"caio:{backend}", w, bench_files)
    try:
        offsets = loop.run_until_complete(runner.start(concurrency))

        def one_round():
            loop.run_until_complete(benchlib.run_count(runner, concurrency, ops, offsets))

        benchmark.group = f"{workload} c={concurrency} {loop_name}"
        benchmark.extra_info.update({
            "backend": backend, "loop": loop_name, "workload": workload,
            "concurrency": concurrency, "ops_per_round": ops,
            "page_cache_resident": warm["resident"], "residency_check": warm["method"],
        })
        benchmark.pedantic(one_round, rounds=20, warmup_rounds=2, iterations=1)
        # No stats under --benchmark-disable (one plain call of one_round).
        mean = benchmark.stats.stats.mean if benchmark.stats else None
        if mean:
            benchmark.extra_info["ops_per_s"] = ops / mean
    finally:
        loop.run_until_complete(runner.close())
        loop.close()
        asyncio.set_event_loop(None)
        benchlib.after_run(w, bench_files)
