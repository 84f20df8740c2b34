"""Smoke test of benchmarks/peers.py, with the participants that need no download.

``--python sys.executable --ours-from-import``: our side is the caio this interpreter
imports, next to the ``run_in_executor`` reference; no network, no build, no timing
assertions. The verification step is also checked on its own, with adapters that put the
data in the wrong place: it must say where.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_thread_aio

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
PEERS = BENCH_DIR / "peers.py"


@pytest.fixture
def data_dir(request, tmp_path):
    # The suite's real-filesystem work directory when conftest provides it.
    try:
        return Path(request.getfixturevalue("workdir"))
    except pytest.FixtureLookupError:
        return tmp_path


@pytest.fixture
def peers_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import peers

    return peers


@needs_thread_aio
def test_peers_quick_run_without_downloads(tmp_path, data_dir):
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(PEERS), "--quick", "--quiet", "--python", sys.executable,
           "--ours-from-import", "--participants", "ours,ours-thread,executor",
           "--seconds", "0.05", "--warmup", "0.01", "--data-dir", str(data_dir),
           "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(REPO_ROOT))
    assert proc.returncode == 0, f"peers.py failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text(encoding="utf-8"))

    participants = data["meta"]["participants"]
    assert set(participants) == {"ours", "ours-thread", "executor"}
    for name, p in participants.items():
        assert p["error"] is None, (name, p["error"])
        assert p["verified"] and all(v["ok"] for v in p["verified"].values()), p["verified"]
    # the caio this interpreter imports from there (the checkout, or an installed wheel)
    ours_dir = subprocess.run(
        [sys.executable, "-c", "import caio, os; print(os.path.dirname(os.path.realpath(caio.__file__)))"],
        capture_output=True, text=True, timeout=60, check=True, cwd=str(BENCH_DIR),
    ).stdout.strip()
    assert os.path.realpath(participants["ours"]["info"]["caio"]["file"]).startswith(ours_dir)

    rows = {r["row"]: r for r in data["rows"]}
    assert set(rows) == {"rand4k-c1", "rand4k-c64", "seq64k-c16", "seq1m-c16", "write4k-c16"}
    for row in rows.values():
        assert set(row["cells"]) == set(participants)
        for name, cell in row["cells"].items():
            assert not cell["errors"], (row["row"], name, cell["errors"])
            assert cell["ops_per_s"]["median"] > 0
            assert cell["cpu_us_per_op"]["median"] > 0
            assert cell["warm"] and all(w["ok"] for w in cell["warm"])
            if name != "ours":
                assert cell["ours_ratio"]["median"] > 0
        assert row["best_peer"] == "executor"  # the only participant that is not ours
        assert row["ours_to_best"]["median"] > 0

    report = data["report"]
    for text in ("peers benchmark", "interpreter:", "verification", "all passed",
                 "summary", "ours/x", "page cache: verified resident", "CPU us/op"):
        assert text in report, text


def _files(peers: Any, folder: Path) -> dict[str, str]:
    peers.make_offset_file(folder / "verify.dat", 1024 * 1024)
    return {"verify": str(folder / "verify.dat"), "verify_write": str(folder / "scratch.dat")}


def test_verification_says_where_misplaced_writes_landed(peers_module, data_dir):
    peers = peers_module

    class WritesOnePageLater(peers.ExecutorAdapter):
        def write(self, handle, data, offset):
            return super().write(handle, data, offset + 4096)

    files = _files(peers, data_dir)
    row = peers.ROWS["write4k-c16"]
    good = asyncio.run(peers.verify(peers.ExecutorAdapter(""), row, files))
    assert good == {"ok": True}
    bad = asyncio.run(peers.verify(WritesOnePageLater(""), row, files))
    assert not bad["ok"]
    first = bad["problems"][0]
    intended = int(first.split("meant for offset ")[1].split()[0])
    assert f"landed at offset {intended + 4096}" in first, first


def test_verification_says_where_a_wrong_read_came_from(peers_module, data_dir):
    peers = peers_module

    class ReadsFromZero(peers.ExecutorAdapter):
        def read(self, handle, size, offset):
            return super().read(handle, size, 0)

    class ReadsShort(peers.ExecutorAdapter):
        def read(self, handle, size, offset):
            return super().read(handle, size // 2, offset)

    files = _files(peers, data_dir)
    row = peers.ROWS["rand4k-c64"]
    assert asyncio.run(peers.verify(peers.ExecutorAdapter(""), row, files)) == {"ok": True}
    wrong = asyncio.run(peers.verify(ReadsFromZero(""), row, files))
    assert not wrong["ok"] and "data from offset 0" in wrong["error"], wrong
    short = asyncio.run(peers.verify(ReadsShort(""), row, files))
    assert not short["ok"] and "returned 2048 bytes" in short["error"], short


def test_offset_file_words_hold_their_offsets(peers_module, data_dir):
    peers = peers_module
    path = data_dir / "words.dat"
    peers.make_offset_file(path, 3 * 1024 * 1024 + 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in (0, 8, 1024 * 1024, 3 * 1024 * 1024 + 4088):
            assert int.from_bytes(os.pread(fd, 8, off), "little") == off
        assert peers.where_from(os.pread(fd, 4096, 12345)) == "data from offset 12345"
    finally:
        os.close(fd)
