#!/usr/bin/env python3
"""A/B of two builds of caio on the adapter's hottest path: an awaited 4 KiB read that
the page cache serves inline. Prints CPU ns per read for each backend, side by side.

    python benchmarks/ab_cached_read.py DIR_A DIR_B [--pairs 4] [--reads 100000]

DIR_A and DIR_B are folders holding a ``caio`` package (``pip install --target``). Each
measurement runs in a fresh subprocess; the sides alternate, A first in even pairs, B
first in odd ones. Each figure is the best of 5 rounds (CPU time, ``process_time``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

BACKENDS = ("linux_uring", "linux_aio", "thread_aio")


def worker(path: str, data: str, reads: int) -> None:
    sys.path.insert(0, path)
    import importlib

    fd = os.open(data, os.O_RDONLY)

    async def run(module_name: str) -> float:
        module = importlib.import_module(f"caio.{module_name}_asyncio")
        ctx = module.AsyncioContext()
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for i in range(reads):
                await ctx.read(4096, fd, (i & 255) * 4096)
            best = min(best, time.process_time() - t)
        ctx.close()
        return best / reads * 1e9

    print(" ".join(f"{name}={asyncio.run(run(name)):.0f}" for name in BACKENDS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", nargs="?")
    parser.add_argument("b", nargs="?")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.reads)
        return 0
    if not (args.a and args.b):
        parser.error("two folders to compare are needed")
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(__file__))) as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        for pair in range(args.pairs):
            sides = [("A", args.a), ("B", args.b)]
            for label, path in sides if pair % 2 == 0 else sides[::-1]:
                out = subprocess.run(
                    [sys.executable, __file__, "--reads", str(args.reads),
                     "--worker", path, f.name],
                    capture_output=True, text=True, check=True,
                ).stdout.strip()
                print(f"pair {pair} {label}: {out} (CPU ns per read)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
