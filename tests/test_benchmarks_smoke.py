"""Smoke test of benchmarks/compare.py: every workload runs briefly on this project only.

No network and no upstream install (``--no-upstream``); no timing assertions, only that
the run succeeds, its JSON output parses and the numbers in it are positive.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_thread_aio

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
COMPARE = BENCH_DIR / "compare.py"

TIMED_WORKLOADS = ("rand4k", "seq64k", "seq1m", "write4k", "fsync", "fdsync")
RAND_CONCURRENCY = (1, 16, 64, 256)


@pytest.fixture
def data_dir(request, tmp_path):
    # The suite's real-filesystem work directory when conftest provides it.
    try:
        return Path(request.getfixturevalue("workdir"))
    except pytest.FixtureLookupError:
        return tmp_path


def run_compare(tmp_path: Path, data_dir: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "compare.json"
    cmd = [
        sys.executable, str(COMPARE), "--quick", "--no-upstream", "--quiet",
        "--repeat", "1", "--seconds", "0.05", "--warmup", "0.01", "--big-read-mib", "8",
        "--data-dir", str(data_dir), "--json", str(out), *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(REPO_ROOT))
    assert proc.returncode == 0, f"compare.py failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout


def positive_median(side: dict, key: str) -> float:
    value = side[key]["median"]
    assert value > 0, (key, side)
    return value


def test_compare_all_workloads(tmp_path, data_dir):
    data, stdout = run_compare(tmp_path, data_dir, "--backends", "default", "--loops", "asyncio")

    assert data["meta"]["theirs"] is None
    rows = data["rows"]
    assert not [r for r in rows if r["errors"]], [r["errors"] for r in rows if r["errors"]]

    timed = {(r["workload"], r["concurrency"], r["label"]): r for r in rows
             if r["kind"] == "timed"}
    expected = [("rand4k", c) for c in RAND_CONCURRENCY] + \
        [(w, 16) for w in TIMED_WORKLOADS if w != "rand4k"]
    for workload, concurrency in expected:
        row = timed[(workload, concurrency, "default")]
        ours = row["ours"]
        positive_median(ours, "ops_per_s")
        p50 = positive_median(ours, "p50_us")
        assert positive_median(ours, "p99_us") >= p50
        positive_median(ours, "cpu_us_per_op")
        positive_median(ours, "max_stall_ms")
        assert 1 <= ours["workers_active"]["median"] <= concurrency
        assert ours["warm"] and all(0 < w["resident"] <= 1 for w in ours["warm"]
                                    if w["resident"] is not None)
        # Reference rows: run_in_executor everywhere, the asyncio floor for rand4k.
        positive_median(timed[(workload, concurrency, "ref:executor")]["ref"], "ops_per_s")
        if workload == "rand4k":
            positive_median(timed[(workload, concurrency, "ref:floor")]["ref"], "ops_per_s")
        if importlib.util.find_spec("aiofiles") and workload in ("rand4k", "seq64k", "seq1m",
                                                                  "write4k"):
            positive_median(timed[(workload, concurrency, "ref:aiofiles")]["ref"], "ops_per_s")

    big = [r for r in rows if r["kind"] == "bigread"]
    assert {r["label"] for r in big} >= {"default", "ref:executor"}
    for row in big:
        side = row.get("ours") or row["ref"]
        for key in ("elapsed_s", "max_stall_ms", "peak_rss_mib", "peak_delta_mib"):
            positive_median(side, key)

    # The printed table names every workload and reports the page-cache check.
    for workload in (*TIMED_WORKLOADS, "ticker"):
        assert workload in stdout
    assert "page cache:" in stdout


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_compare_uvloop(tmp_path, data_dir):
    data, _ = run_compare(tmp_path, data_dir, "--loops", "uvloop", "--workloads", "rand4k",
                          "--concurrency", "1,64", "--no-refs")
    rows = [r for r in data["rows"] if r["kind"] == "timed"]
    assert rows and {r["loop"] for r in rows} == {"uvloop"}
    for row in rows:
        assert not row["errors"], row["errors"]
        positive_median(row["ours"], "ops_per_s")


def run_direct(tmp_path: Path, data_dir: Path, *extra: str, timeout: float = 120
               ) -> tuple[list[dict], str]:
    """direct.py --quick on a small file without fio or caio 0.12.10: its runs and stdout
    (skips where the test directory cannot take O_DIRECT reads)."""
    out = tmp_path / "direct.json"
    cmd = [
        sys.executable, str(BENCH_DIR / "direct.py"), "--quick", "--no-upstream", "--no-fio",
        "--quiet", "--depths", "1,4", "--seconds", "0.2", "--size", str(4 * 1024 * 1024),
        "--file", str(Path(data_dir) / "direct-smoke.dat"), "--json", str(out), *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=str(REPO_ROOT))
    said = proc.stdout + proc.stderr
    if proc.returncode != 0 and ("cannot open" in said or "is on tmpfs" in said):
        pytest.skip("the test directory cannot take O_DIRECT reads")
    assert proc.returncode == 0, f"direct.py failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text(encoding="utf-8"))["runs"], proc.stdout


def test_direct_benchmark_runs_on_a_small_file(tmp_path, data_dir):
    """benchmarks/direct.py (O_DIRECT, ours only): every row completes reads without errors."""
    runs, _ = run_direct(tmp_path, data_dir, "--backends", "linux,uring,thread")
    ours = [r for r in runs if r["side"] == "ours"]
    # 2 depths x (linux into, default, deferred, raw, floor; uring into, default, floor;
    # thread into, default)
    assert len(ours) == 20, ours
    assert {r["mode"] for r in ours} == {"into", "default", "deferred", "raw", "floor"}
    for row in ours:
        assert not row["failures"], row
        for result in row["results"]:
            assert result["errors"] == 0 and result["ok"] > 0, row
            assert result["validation"] is None, row


@pytest.mark.skipif(shutil.which("cargo") is None or not (REPO_ROOT / "Cargo.toml").exists(),
                    reason="the native floor is built with cargo, from the source tree")
def test_direct_native_floor_rows(tmp_path, data_dir):
    """direct.py --native: the native floor (rust/backends/examples/direct_floor.rs) builds
    and reads without errors beside the asyncio floor."""
    runs, stdout = run_direct(tmp_path, data_dir, "--native", "--backends", "uring",
                              "--modes", "floor", timeout=300)
    assert "native floor: rust/backends/examples/direct_floor.rs" in stdout
    native = [r for r in runs if r["side"] == "native"]
    assert [r["depth"] for r in native] == [1, 4], runs
    for row in native:
        assert not row["failures"], row
        for result in row["results"]:
            assert result["errors"] == 0 and result["ok"] > 0, row
            assert result["cpu_us_per_op"] > 0, row


@pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="trio not installed")
def test_compare_trio_rows(tmp_path, data_dir):
    """Under trio.run: trio's and anyio's thread-based file APIs, trio.to_thread and the trio
    floor always; ours through caio.trio_adapter when it is importable, else a note."""
    data, stdout = run_compare(tmp_path, data_dir, "--loops", "trio", "--backends", "default",
                               "--workloads", "rand4k", "--concurrency", "4")
    rows = {(r["workload"], r["label"]): r for r in data["rows"]}
    assert {r["loop"] for r in data["rows"]} == {"trio"}
    assert not [r for r in data["rows"] if r["errors"]], [r["errors"] for r in data["rows"]]
    refs = ["ref:executor", "ref:trio-file"]
    if importlib.util.find_spec("anyio"):
        refs.append("ref:anyio-file")
    for ref in [*refs, "ref:floor"]:
        positive_median(rows[("rand4k", ref)]["ref"], "ops_per_s")
    assert "ref trio.open_file" in stdout and "ref trio.to_thread.run_sync(os.pread)" in stdout

    if importlib.util.find_spec("caio.trio_adapter") is None:
        assert "trio rows: reference rows only" in stdout
        assert not [r for r in data["rows"] if not r["is_ref"]]
        return
    row = rows[("rand4k", "default")]
    assert "theirs" not in row  # caio 0.12.10 has no trio adapter
    positive_median(row["ours"], "ops_per_s")
    assert set(row["vs_refs"]) == {r[4:] for r in refs}
    assert all(s["median"] > 0 for s in row["vs_refs"].values())
    assert "trio: ours / thread-based file APIs" in stdout


@pytest.mark.skipif(importlib.util.find_spec("pytest_benchmark") is None,
                    reason="pytest-benchmark not installed")
@needs_thread_aio
def test_pytest_benchmark_suite_runs_with_benchmarks_disabled(data_dir):
    """``pytest benchmarks --benchmark-disable``, as projects run benchmark files as plain
    tests (one of its cases): the test body runs once and there are no statistics."""
    case = f"{BENCH_DIR / 'test_caio_bench.py'}::test_caio[thread-asyncio-rand4k-c1]"
    cmd = [sys.executable, "-m", "pytest", case, "--benchmark-disable", "-q", "-p",
           "no:cacheprovider"]
    env = {**os.environ, "CAIO_BENCH_DIR": str(data_dir)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(REPO_ROOT), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]


def test_compare_read_into_rows_and_their_ratio(tmp_path, data_dir):
    """The read-into rows (ours only) run next to their bytes-returning twins and the report
    gives their ratio."""
    data, stdout = run_compare(tmp_path, data_dir, "--backends", "default", "--loops", "asyncio",
                               "--workloads", "rand4k,rand4k_into", "--concurrency", "4")
    rows = {(r["workload"], r["label"]): r for r in data["rows"] if r["kind"] == "timed"}
    assert not [r for r in rows.values() if r["errors"]]
    positive_median(rows[("rand4k_into", "default")]["ours"], "ops_per_s")
    positive_median(rows[("rand4k_into", "ref:executor")]["ref"], "ops_per_s")
    assert "read_into a reused buffer / read returning bytes" in stdout
    assert "rand4k_into c=4 default" in stdout


def test_compare_direct_row_through_an_aligned_buffer(tmp_path, data_dir, monkeypatch):
    """The O_DIRECT row: caio.aligned_buffer where it exists, else (so that the row is
    exercised now) the harness's page-aligned anonymous-mmap stand-in."""
    import caio

    if not hasattr(caio, "aligned_buffer"):
        monkeypatch.setenv("CAIO_BENCH_ALIGNED_STANDIN", "1")
    data, _stdout = run_compare(tmp_path, data_dir, "--backends", "default", "--loops",
                                "asyncio", "--workloads", "direct1m_into")
    rows = {r["label"]: r for r in data["rows"] if r["kind"] == "timed"}
    assert not [r for r in rows.values() if r["errors"]]
    positive_median(rows["default"]["ours"], "ops_per_s")
    positive_median(rows["ref:executor"]["ref"], "ops_per_s")
