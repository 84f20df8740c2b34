"""The short soak (benchmarks/soak.py): mixed operations with random cancellations on
every backend, several threads each with its own loop, each adapter closed at the end with
operations in flight; no wrong byte, no hanging task, no RSS growth after the warm-up, no
fd or thread left after closing. The full run is in the README."""

import subprocess
import sys

from conftest import REPO_ROOT

SOAK = REPO_ROOT / "benchmarks" / "soak.py"


def test_short_soak(workdir):
    # a fresh interpreter: pytest's own threads and fds must not blur the counts
    proc = subprocess.run(
        # 4 MiB: short runs vary by about +-0.8 MiB (see soak.py); the full run checks 1 MiB
        [sys.executable, str(SOAK), "--ops", "20000", "--rss-limit-kib", "4096",
         "--dir", str(workdir)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("OK"), proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
