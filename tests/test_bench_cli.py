"""``python -m caio bench``: a table row per backend x loop x workload, options, usage errors.

Runs the real command in a subprocess on the suite's on-disk work directory, with a small
time budget and file; no figure is checked beyond being positive.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import filesystem_type, needs_thread_aio, variant_names

WORKLOADS = ("rand4k", "seq1m", "write4k")
LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else []) + \
    (["trio"] if importlib.util.find_spec("trio") and importlib.util.find_spec("caio.trio_adapter")
     else [])
TIMEOUT = 120


def run_caio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caio", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def run_bench(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_caio("bench", "--size", "4", "--dir", str(workdir), *args)


def table_rows(stdout: str) -> dict[tuple[str, str, str], list[str]]:
    """The result table's rows by (backend, loop, workload): the remaining cells."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["backend", "loop",
                                                                            "workload"])
    assert set(lines[header + 1].replace(" ", "")) == {"-"}, lines[header + 1]
    rows = {}
    for line in lines[header + 2:]:
        if not line.strip():
            continue
        cells = line.split()
        key = (cells[0], cells[1], cells[2])
        assert key not in rows, f"row {key} twice"
        rows[key] = cells[3:]
    return rows


def figures(cells: list[str]) -> list[float]:
    """ops/s, MB/s and CPU µs/op of a row, each required to be a positive number."""
    assert len(cells) == 3, f"not a row of figures: {cells}"
    values = [float(cell.replace(",", "")) for cell in cells]
    assert all(v > 0 for v in values), cells
    return values


def test_bench_has_a_row_per_backend_loop_and_workload(workdir):
    proc = run_bench(workdir, "--seconds", "0.3")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    rows = table_rows(proc.stdout)
    expected = set(itertools.product(variant_names(), LOOPS, WORKLOADS))
    assert set(rows) == expected
    for key, cells in rows.items():
        ops_per_s, mb_per_s, _ = figures(cells)
        size = 1024 * 1024 if key[2] == "seq1m" else 4096
        # MB/s is ops/s times the operation size (both rounded in the table).
        assert mb_per_s == pytest.approx(ops_per_s * size / 1e6, rel=0.01, abs=0.1), key
    # Without a terminal the progress is a line per row on stderr, and the data is gone.
    assert proc.stderr.count(f"/{len(expected)}] ") == len(expected), proc.stderr
    assert not [p for p in workdir.iterdir() if p.name.startswith("caio-bench-")]


@needs_thread_aio
@pytest.mark.parametrize("name", ["thread", "thread_aio"])
def test_bench_backend_option_limits_the_rows(workdir, name):
    proc = run_bench(workdir, "--seconds", "0.1", "--backend", name, "--loop", "asyncio")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert set(rows) == {("thread_aio", "asyncio", w) for w in WORKLOADS}
    for cells in rows.values():
        figures(cells)


@pytest.mark.parametrize("args", [
    ["--seconds", "soon"],
    ["--seconds", "0"],
    ["--size", "-1"],
    ["--backend", "floppy"],
    ["--loop", "tokio"],
    ["--no-such-option"],
    ["extra"],
], ids=" ".join)
def test_bench_bad_option_is_a_usage_error(workdir, args):
    proc = run_bench(workdir, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("usage: python -m caio bench"), proc.stderr
    assert "backend" not in proc.stdout  # nothing was measured


def test_bench_missing_dir_is_a_usage_error(workdir):
    proc = run_caio("bench", "--dir", str(workdir / "absent"))
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr


@needs_thread_aio
def test_bench_warns_about_a_memory_filesystem():
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and filesystem_type(shm) == "tmpfs"):
        pytest.skip("no writable tmpfs at /dev/shm")
    proc = run_caio("bench", "--seconds", "0.05", "--size", "1", "--backend", "thread",
                    "--loop", "asyncio", "--dir", str(shm))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" in proc.stderr and "tmpfs" in proc.stderr, proc.stderr


@needs_thread_aio
def test_default_command_is_still_the_self_check(workdir):
    proc = run_caio("--backend", "thread", "--dir", str(workdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-check in" in proc.stdout and "thread_aio   PASS" in proc.stdout
    assert "bench" in run_caio("--help").stdout


def test_bench_table_shows_a_failed_row_with_its_reason():
    from caio import _bench

    ok = _bench.Result("thread_aio", "asyncio", "rand4k", ops=1000, nbytes=4096000, elapsed=0.5,
                       cpu=0.002)
    failed = _bench.Result("linux_aio", "asyncio", "seq1m", error="OSError: [Errno 22] bad")
    lines = _bench.format_table([ok, failed], micro="u")
    assert lines[0].split() == ["backend", "loop", "workload", "ops/s", "MB/s", "CPU", "us/op"]
    assert lines[2].split() == ["thread_aio", "asyncio", "rand4k", "2,000", "8.2", "2.0"]
    assert lines[3].split()[:3] == ["linux_aio", "asyncio", "seq1m"]
    assert lines[3].endswith("error: OSError: [Errno 22] bad")
