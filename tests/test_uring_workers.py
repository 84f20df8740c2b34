"""linux_uring: importing caio leaves the importing thread's kernel worker pool alone.

The first io_uring instance a thread creates sizes that thread's io-wq (shared by all its
rings): at most min(its SQ entries, 4 x CPUs) requests on regular files run at once. The
import-time probes create 1-entry rings; on the caller's thread they capped every later
ring of the thread at one worker (16 concurrent fsyncs ran one at a time)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("caio.linux_uring", reason="caio.linux_uring is not available")

CHILD = textwrap.dedent("""
    import ctypes, os, re
    import caio.linux_uring as uring   # runs the probes (SQPOLL_ALLOWED and availability)
    ctx = uring.Context(max_requests=64)
    ring_fd = int(re.search(r"uring_fd=(\\d+)", repr(ctx)).group(1))
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_io_uring_register, IORING_REGISTER_IOWQ_MAX_WORKERS = 427, 19
    limits = (ctypes.c_uint * 2)(0, 0)   # zeros: only report the current limits
    if libc.syscall(SYS_io_uring_register, ring_fd, IORING_REGISTER_IOWQ_MAX_WORKERS,
                    limits, 2) != 0:
        print("unsupported", ctypes.get_errno())
    else:
        print("bounded", limits[0])
""")


def test_the_import_probes_do_not_size_the_callers_worker_pool():
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    if out.startswith("unsupported"):
        pytest.skip(f"IORING_REGISTER_IOWQ_MAX_WORKERS not available: {out.strip()}")
    bounded = int(re.search(r"bounded (\d+)", out).group(1))
    # min(64, 4 x online CPUs) with the fix; 1 when a probe's ring came first
    assert bounded > 1 or (os.cpu_count() or 1) * 4 <= 1, f"io-wq bounded workers: {bounded}"
