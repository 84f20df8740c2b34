"""Fixtures of the pytest-benchmark suite (``pytest benchmarks/ --benchmark-only``).

Not part of the default test run (``pytest tests``). Data files are created once per
session on a real filesystem: ``$CAIO_BENCH_DIR`` if set, else pytest's temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
import harness


def pytest_report_header(config):
    try:
        info = harness.caio_info()
    except Exception as exc:  # noqa: BLE001
        return [f"caio: import failed: {exc}"]
    line = (f"caio {info['version']} from {info['file']}; backends "
            f"{', '.join(info['backends'])} (default {info['default']}); "
            f"loops {', '.join(harness.available_loops())}")
    return [line]


@pytest.fixture(scope="session")
def bench_files(tmp_path_factory):
    env = os.environ.get("CAIO_BENCH_DIR")
    directory = Path(env) if env else tmp_path_factory.mktemp("caio-bench")
    fstype = benchlib.filesystem_type(directory)
    if fstype in ("tmpfs", "ramfs"):
        import warnings

        warnings.warn(f"benchmark data on {fstype}: set CAIO_BENCH_DIR to a disk folder",
                      stacklevel=1)
    return benchlib.prepare_data_dir(directory, big_size=0)
