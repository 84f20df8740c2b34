#!/usr/bin/env python3
"""O_DIRECT side-by-side benchmark: fio, this project's caio and caio 0.12.10.

4 KiB random reads from a file opened with ``O_DIRECT`` (no page cache), at fixed
queue depths, on a real filesystem. It checks the linux_aio target "O_DIRECT >= 95%
of fio's IOPS at the same depth, with less CPU per operation than caio 0.12.10".

Sides, for every depth D:

- ``fio --ioengine=libaio --iodepth=D --direct=1 --rw=randread --bs=4k`` (if fio is
  installed): read IOPS, and CPU per operation from fio's usr_cpu + sys_cpu;
- ours: ``caio.linux_aio_asyncio.AsyncioContext`` (default mode and ``deferred=True``)
  driven by D asyncio tasks, each awaiting ``ctx.read(4096, fd, offset)`` in a loop;
  the raw ``caio.linux_aio.Context``/``Operation`` API keeping D operations in flight
  (one ``submit`` per operation, ``process_events(D, 1, -1)``) as a reference; and,
  with ``--backends``, the linux_uring and thread_aio adapters;
- the *floor* of each native backend: D asyncio tasks with no adapter at all, each
  submitting a ``read_into`` on the raw Context and awaiting a bare future that the
  completion callback resolves (the Context watched with ``add_reader``). It is what the
  event loop alone costs per read with one task per read: no adapter can go below it;
- ``--loops asyncio,uvloop`` runs every asyncio side on each loop;
- the *native floor* (``--native``, when cargo is here): the same loop as the floor with
  no interpreter at all, ``rust/backends/examples/direct_floor.rs`` on this project's
  io_uring path (an epoll set holding the ring's eventfd, each completion answered at
  once with the next read). What is left between it and fio belongs to the kernel
  interface and its wake-ups; what lies between it and the floor belongs to CPython;
- caio 0.12.10 from PyPI (same adapters), loaded from a ``pip install --target``
  folder put first on ``PYTHONPATH`` (shared with ``compare.py``). Its read buffers come
  from ``PyMem_Calloc`` and are aligned only by chance (O_DIRECT needs the device's
  ``dma_alignment``, 512 bytes on a typical virtio disk), so most of its O_DIRECT reads
  fail with EINVAL: rows with more than 1% failed reads show "fails: EINVAL" and the
  error count instead of an IOPS figure. (At depth 1 the allocator may hand the same,
  by chance aligned, buffer back every time: then every read succeeds.)

Every measured run is a fresh subprocess (fio itself, or this script with a hidden
``--worker`` argument). Repeats are interleaved (every side at every depth once, then
again), the side order reverses every other repeat, and the table reports medians and
[min-max]; "x fio" is the ratio to the fio run of the same repeat and depth. CPU per
operation of our runs is ``getrusage(RUSAGE_SELF)`` (all threads of the process) over
the timed window, divided by the completed reads.

Examples::

    python benchmarks/direct.py                       # depths 1,32; 3 x 3 s (~1.5 min)
    python benchmarks/direct.py --quick               # CI smoke: depths 1,8; 1 x 1 s
    python benchmarks/direct.py --depths 1,8,32,128 --backends linux,uring,thread
    python benchmarks/direct.py --file /mnt/ssd/direct.dat --json direct.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import harness
from harness import (
    REPO_ROOT,
    UPSTREAM_VERSION,
    MiB,
    Side,
    fmt_num,
    fmt_stat,
    log,
    parse_int_list,
    parse_str_list,
    render_table,
    stats,
)

SCRIPT = Path(__file__).resolve()
BLOCK = 4096
DEFAULT_SIZE = MiB * 1024
DEFAULT_FILE = SCRIPT.parent / ".direct" / "direct.dat"
DEFAULT_DEPTHS = (1, 32)
BACKENDS = ("linux", "uring", "thread")
MODULES = {"linux": "linux_aio", "uring": "linux_uring", "thread": "thread_aio"}
# Target of the issue: ours (linux_aio) / fio IOPS at the same depth.
TARGET_RATIO = 0.95
# A run stops early once this many reads failed, if over 90% of its reads failed so far
# (caio 0.12.10 on O_DIRECT: its buffers are aligned only by chance).
ABORT_AFTER_ERRORS = 1000
# Rows where more than this fraction of the reads failed show "fails: <errno>", no IOPS.
FAIL_FRACTION = 0.01

# "Invalid argument" -> "EINVAL", for errors that carry only a message (SystemError).
_ERRNO_BY_MESSAGE = {os.strerror(code): name for code, name in sorted(errno.errorcode.items())}


# =============================================================================
# worker side (runs in the fresh subprocess)
# =============================================================================


def error_kind(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    text = str(exc)
    for message, name in _ERRNO_BY_MESSAGE.items():
        if message and message in text:
            return name
    return type(exc).__name__


class Offsets:
    """Every 4 KiB block of the file once in random order, then again (like fio's
    random map), shared by all the workers of a run."""

    def __init__(self, size: int, seed: int) -> None:
        self.table = list(range(0, size - size % BLOCK, BLOCK))
        random.Random(seed).shuffle(self.table)
        self.n = len(self.table)
        self.i = 0

    def next(self) -> int:
        i = self.i
        self.i = i + 1 if i + 1 < self.n else 0
        return self.table[i]


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.first_error: str | None = None
        self.error_kind: str | None = None
        self.stop = False
        self.aborted = False

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = repr(exc)
            self.error_kind = error_kind(exc)
        if self.errors >= ABORT_AFTER_ERRORS and self.errors > 10 * self.ok:
            self.stop = self.aborted = True

    def result(self, elapsed: float, cpu: float, validation: str | None) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "error_kind": self.error_kind,
            "aborted": self.aborted,
            "elapsed_s": elapsed,
            "ops_per_s": self.ok / elapsed if elapsed > 0 else 0.0,
            "cpu_s": cpu,
            "cpu_us_per_op": harness.cpu_us_per_op(cpu, self.ok),
            "validation": validation,
        }


def validate_read(data: Any, path: str, offset: int) -> str | None:
    """Compare one O_DIRECT read with a buffered read of the same block."""
    bfd = os.open(path, os.O_RDONLY)
    try:
        expected = os.pread(bfd, BLOCK, offset)
    finally:
        os.close(bfd)
    if bytes(data) != expected:
        return f"wrong data at offset {offset} ({len(data)} bytes)"
    return None


async def timed_workers(spec: dict[str, Any], tally: Tally,
                        worker: Callable[[], Awaitable[None]],
                        validation: str | None) -> dict[str, Any]:
    """Runs ``spec["depth"]`` copies of ``worker`` until ``spec["seconds"]`` have passed
    (they stop at ``tally.stop``) and returns the tally over that window."""

    def stop() -> None:
        tally.stop = True

    loop = asyncio.get_running_loop()
    window = harness.Stopwatch()
    handle = loop.call_later(spec["seconds"], stop)
    await asyncio.gather(*(worker() for _ in range(spec["depth"])))
    elapsed, cpu = window.read()
    handle.cancel()
    return tally.result(elapsed, cpu, validation)


async def run_asyncio(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib

    module = importlib.import_module(f"caio.{MODULES[spec['backend']]}_asyncio")
    path = spec["file"]
    offsets = Offsets(spec["size"], spec["seed"])
    tally = Tally()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    ctx: Any = None
    try:
        kwargs = {"deferred": True} if spec["mode"] == "deferred" else {}
        ctx = module.AsyncioContext(**kwargs)
        validation = None
        try:
            off = offsets.next()
            validation = validate_read(await ctx.read(BLOCK, fd, off), path, off)
        except Exception as exc:  # noqa: BLE001 - reported
            validation = f"{error_kind(exc)}: {exc!r}"
        read = ctx.read
        nxt = offsets.next

        async def worker() -> None:
            while not tally.stop:
                try:
                    data = await read(BLOCK, fd, nxt())
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    tally.error(exc)
                    continue
                if len(data) == BLOCK:
                    tally.ok += 1
                else:
                    tally.error(OSError(f"short read: {len(data)} bytes"))

        async def worker_into() -> None:
            # Zero-copy: the kernel reads straight into this worker's aligned buffer.
            buffer = aligned(BLOCK)
            read_into = ctx.read_into
            while not tally.stop:
                try:
                    got = await read_into(buffer, fd, nxt())
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    tally.error(exc)
                    continue
                if got == BLOCK:
                    tally.ok += 1
                else:
                    tally.error(OSError(f"short read: {got} bytes"))

        if spec["mode"] == "into":
            aligned = harness.aligned_buffer_factory()
            if aligned is None:
                raise RuntimeError("caio.aligned_buffer is missing")
            validation = None
            off = offsets.next()
            buffer = aligned(BLOCK)
            try:
                await ctx.read_into(buffer, fd, off)
                validation = validate_read(buffer, path, off)
            except Exception as exc:  # noqa: BLE001 - reported
                validation = f"{error_kind(exc)}: {exc!r}"
            worker = worker_into

        return await timed_workers(spec, tally, worker, validation)
    finally:
        if ctx is not None:
            await harness.close_context(ctx)
        os.close(fd)


async def run_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The least an asyncio program can do per read with one task per read, as a
    reference for what any adapter could reach: the backend's raw Context watched with
    ``add_reader``, a bare future per read resolved straight from the completion callback,
    and ``read_into`` an aligned buffer. No capacity limit, no cancellation, no inline
    attempt, no close semantics: not a usable adapter, only the loop's own cost."""
    import importlib

    module: Any = importlib.import_module(f"caio.{MODULES[spec['backend']]}")
    depth, path = spec["depth"], spec["file"]
    offsets = Offsets(spec["size"], spec["seed"])
    tally = Tally()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    loop = asyncio.get_running_loop()
    kwargs = {"sqpoll": False} if spec["backend"] == "uring" else {}
    ctx = module.Context(max_requests=max(depth, 32), **kwargs)
    flush = getattr(ctx, "flush", None) or (lambda: 0)

    def on_readable() -> None:
        try:
            ctx.poll()
        except BlockingIOError:
            pass
        ctx.process_events(512)

    loop.add_reader(ctx.fileno, on_readable)
    try:
        aligned = harness.aligned_buffer_factory()
        if aligned is None:
            raise RuntimeError("caio.aligned_buffer is missing")
        read_into, submit, create_future = module.Operation.read_into, ctx.submit, \
            loop.create_future
        nxt = offsets.next

        async def one(buffer: Any, offset: int) -> int:
            op = read_into(buffer, fd, offset)
            future = create_future()
            op.set_callback(future.set_result)
            submit(op)
            flush()
            await future
            return op.get_value()

        validation = None
        off = nxt()
        buffer = aligned(BLOCK)
        try:
            await one(buffer, off)
            validation = validate_read(buffer, path, off)
        except Exception as exc:  # noqa: BLE001 - reported
            validation = f"{error_kind(exc)}: {exc!r}"

        async def worker() -> None:
            buffer = aligned(BLOCK)
            while not tally.stop:
                op = read_into(buffer, fd, nxt())
                future = create_future()
                op.set_callback(future.set_result)
                submit(op)
                flush()
                await future
                try:
                    got = op.get_value()
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    tally.error(exc)
                    continue
                if got == BLOCK:
                    tally.ok += 1
                else:
                    tally.error(OSError(f"short read: {got} bytes"))

        return await timed_workers(spec, tally, worker, validation)
    finally:
        loop.remove_reader(ctx.fileno)
        os.close(fd)


def run_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """caio.linux_aio Context/Operation: D operations in flight, one submit() each."""
    import importlib

    linux_aio: Any = importlib.import_module("caio.linux_aio")
    depth, path, seconds = spec["depth"], spec["file"], spec["seconds"]
    offsets = Offsets(spec["size"], spec["seed"])
    tally = Tally()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        ctx = linux_aio.Context(max_requests=depth)
        Operation = linux_aio.Operation
        done: list[Any] = []
        in_flight: set[Any] = set()
        nxt = offsets.next

        def submit_one() -> None:
            op = Operation.read(BLOCK, fd, nxt())
            op.set_callback(lambda _result, op=op: done.append(op))
            in_flight.add(op)
            try:
                if ctx.submit(op) != 1:
                    raise OSError("Operation was not submitted")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                in_flight.discard(op)
                tally.error(exc)

        def reap() -> None:
            while done:
                batch = done.copy()
                done.clear()
                for op in batch:
                    in_flight.discard(op)
                    try:
                        data = op.get_value()
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        tally.error(exc)
                    else:
                        if isinstance(data, (bytes, bytearray, memoryview)) and \
                                len(data) == BLOCK:
                            tally.ok += 1
                        else:
                            tally.error(OSError(f"short read: {data!r:.40}"))
                    if not tally.stop:
                        submit_one()

        # Validation read (not timed).
        validation = None
        first = Operation.read(BLOCK, fd, 0)
        first.set_callback(lambda _result: done.append(first))
        try:
            ctx.submit(first)
            while not done:
                ctx.process_events(1, 1, -1)
            done.clear()
            validation = validate_read(first.get_value(), path, 0)
        except Exception as exc:  # noqa: BLE001 - reported
            validation = f"{error_kind(exc)}: {exc!r}"
            done.clear()

        perf = time.perf_counter
        window = harness.Stopwatch()
        deadline = window.start + seconds
        for _ in range(depth):
            submit_one()
        while in_flight and not tally.stop:
            if not done:
                ctx.process_events(depth, 1, -1)
            reap()
            if perf() >= deadline:
                tally.stop = True
        while in_flight:  # drain what is still in flight
            if not done:
                ctx.process_events(depth, 1, -1)
            reap()
        elapsed, cpu = window.read()
        if tally.ok == 0 and tally.errors and not tally.aborted and elapsed < seconds:
            tally.aborted = True  # every submit failed at once
        return tally.result(elapsed, cpu, validation)
    finally:
        os.close(fd)


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    import caio

    if spec["mode"] == "raw":
        result = run_raw(spec)
    else:
        body = run_floor(spec) if spec["mode"] == "floor" else run_asyncio(spec)
        if spec.get("loop", "asyncio") == "uvloop":
            import uvloop

            result = uvloop.run(body)
        else:
            result = asyncio.run(body)
    result["caio_file"] = os.path.dirname(os.path.abspath(caio.__file__))
    return result


# =============================================================================
# driver side
# =============================================================================


@dataclass
class Config:
    side: str  # "fio" / "native" / "ours" / "theirs"
    backend: str  # "linux" / "uring" / "thread" ("libaio" for fio)
    mode: str  # "into" / "default" / "deferred" / "floor" / "raw" ("" for fio)
    depth: int
    loop: str = "asyncio"  # the event loop of the asyncio modes: "asyncio" / "uvloop"
    results: list[dict[str, Any] | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def side_title(self) -> str:
        return {"fio": "fio", "native": "native", "ours": "ours"}.get(
            self.side, f"caio {UPSTREAM_VERSION}")

    @property
    def what(self) -> str:
        if self.side == "fio":
            return "libaio"
        if self.side == "native":
            return "io_uring epoll loop (no Python)"
        if self.mode == "raw":
            return f"{MODULES[self.backend]} raw Context"
        on = "" if self.loop == "asyncio" else f" on {self.loop}"
        if self.mode == "floor":
            return f"{MODULES[self.backend]} floor{on}"
        name = f"{MODULES[self.backend]}_asyncio"
        return name + {"deferred": " deferred", "into": " read_into"}.get(self.mode, "") + on

    def describe(self) -> str:
        return f"depth {self.depth} {self.side_title} {self.what}"


def fio_version(fio: str) -> str:
    try:
        out = subprocess.run([fio, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out or "unknown"


def run_fio(fio: str, path: str, depth: int, seconds: float, timeout: float) -> dict[str, Any]:
    runtime = max(1, round(seconds))
    cmd = [fio, "--name=r", "--filename=" + path.replace(":", "\\:"), "--direct=1",
           "--rw=randread", "--bs=4k", "--ioengine=libaio", f"--iodepth={depth}",
           f"--runtime={runtime}", "--time_based", "--output-format=json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    out = proc.stdout
    if proc.returncode != 0 or "{" not in out:
        raise RuntimeError(f"fio exited with {proc.returncode}: "
                           f"{harness.last_line(proc.stderr, out)}")
    data = json.loads(out[out.index("{"):])
    job = data["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio job error {job['error']}")
    read = job["read"]
    runtime_s = read["runtime"] / 1000
    ios = read["total_ios"]
    cpu_pct = job["usr_cpu"] + job["sys_cpu"]
    cpu = cpu_pct / 100 * runtime_s
    return {
        "ok": ios,
        "errors": 0,
        "first_error": None,
        "error_kind": None,
        "aborted": False,
        "elapsed_s": runtime_s,
        "ops_per_s": read["iops"],
        "cpu_s": cpu,
        "cpu_us_per_op": harness.cpu_us_per_op(cpu, ios),
        "usr_cpu": job["usr_cpu"],
        "sys_cpu": job["sys_cpu"],
        "lat_mean_us": read.get("lat_ns", {}).get("mean", 0) / 1000,
    }


def build_native_floor() -> tuple[str | None, str]:
    """Builds the native floor (``cargo build --release --example direct_floor``):
    ``(executable, note)``, the executable ``None`` where that cannot be done."""
    cargo = shutil.which("cargo")
    if cargo is None or not (REPO_ROOT / "Cargo.toml").exists():
        return None, "no cargo or no Cargo.toml here: no native rows"
    cmd = [cargo, "build", "--release", "--quiet", "-p", "caio-backends", "--example",
           "direct_floor", "--message-format=json"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        msg = json.loads(line) if line.startswith("{") else {}
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg.get("target", {}).get("name") == "direct_floor":
            return msg["executable"], "rust/backends/examples/direct_floor.rs"
    return None, (f"cargo build failed ({proc.returncode}): "
                  f"{harness.last_line(proc.stderr)}: no native rows")


def run_native(exe: str, path: str, depth: int, seconds: float,
               timeout: float) -> dict[str, Any]:
    proc = subprocess.run([exe, path, str(depth), str(seconds)], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"direct_floor exited with {proc.returncode}: "
                           f"{harness.last_line(proc.stderr)}")
    data = json.loads(proc.stdout)
    ok, elapsed, cpu = data["ok"], data["elapsed_s"], data["cpu_s"]
    res = data["first_error"]  # a negated errno, or the bytes of a short read
    if res is None:
        first_error = kind = None
    elif res < 0:
        kind = errno.errorcode.get(-res, f"errno {-res}")
        first_error = f"{kind}: {os.strerror(-res)}"
    else:
        kind, first_error = "short read", f"short read: {res} bytes"
    return {
        "ok": ok,
        "errors": data["errors"],
        "first_error": first_error,
        "error_kind": kind,
        "aborted": False,
        "elapsed_s": elapsed,
        "ops_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_op": harness.cpu_us_per_op(cpu, ok),
    }


def prepare_file(args: argparse.Namespace) -> tuple[Path, int, str]:
    """The data file: created (non-zero data, 1 MiB chunks) or reused; never on tmpfs."""
    path = Path(args.file).resolve() if args.file else DEFAULT_FILE
    wanted = args.size if args.size is not None else DEFAULT_SIZE
    if wanted < MiB or wanted % BLOCK:
        raise SystemExit(f"--size must be >= 1 MiB and a multiple of {BLOCK}")
    existing = path.stat().st_size if path.exists() else None
    if path == DEFAULT_FILE:
        path.parent.mkdir(parents=True, exist_ok=True)  # ignored by benchmarks/.gitignore
    fstype = benchlib.filesystem_type(path.parent if existing is None else path)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{path} is on {fstype}: O_DIRECT reads there never reach a "
                         "disk (tmpfs serves everything from memory); "
                         "pass --file on a disk-backed filesystem")
    size = wanted
    if existing is not None and existing != wanted:
        if path != DEFAULT_FILE and args.size is None:
            size = existing - existing % BLOCK  # a file of the user's: use it as it is
            if size < MiB:
                raise SystemExit(f"{path} has only {existing} bytes; need >= 1 MiB")
        elif path != DEFAULT_FILE:
            raise SystemExit(f"{path} exists with {existing} bytes, not --size {wanted}; "
                             "not overwriting it")
    if existing is None or (path == DEFAULT_FILE and existing != wanted):
        log(f"creating {path} ({wanted / MiB:.0f} MiB) ...")
        path.parent.mkdir(parents=True, exist_ok=True)
        benchlib.make_file(path, wanted, seed=11)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        raise SystemExit(f"cannot open {path} with O_DIRECT on {fstype}: {exc}") from exc
    os.close(fd)
    return path, size, fstype


def build_configs(args: argparse.Namespace, ours: Side, theirs: Side | None,
                  fio: str | None, native: str | None = None) -> list[Config]:
    wanted = parse_str_list(args.backends)
    for b in wanted:
        if b not in BACKENDS:
            raise SystemExit(f"unknown backend {b!r}; have {', '.join(BACKENDS)}")
    configs: list[Config] = []
    for depth in args.depth_list:
        if fio:
            configs.append(Config("fio", "libaio", "", depth))
        if native:
            configs.append(Config("native", "uring", "", depth))
        for side in [ours] + ([theirs] if theirs is not None else []):
            for b in wanted:
                if b not in side.info["backends"]:
                    log(f"note: backend {b!r} is not available in {side.title}; skipped")
                    continue
                modes = ["into", "default", "deferred", "raw"] if b == "linux" else \
                    ["into", "default"]
                if b != "thread":
                    modes.append("floor")
                # read_into with caio.aligned_buffer, the floor and the raw Context: ours
                # only.
                if side.name == "theirs" or not side.info.get("aligned_buffer"):
                    modes = [m for m in modes if m not in ("into", "floor")]
                if side.name == "theirs":
                    modes.remove("raw")
                if args.mode_list:
                    modes = [m for m in modes if m in args.mode_list]
                for mode in modes:
                    for loop in (["asyncio"] if mode == "raw" else args.loop_list):
                        configs.append(Config(side.name, b, mode, depth, loop))
    return configs


def run_all(args: argparse.Namespace, configs: list[Config], sides: dict[str, Side],
            fio: str | None, path: Path, size: int, native: str | None = None) -> None:
    """Per depth every side back to back."""
    timeout = 60 + 10 * args.seconds
    for cfg in configs:
        cfg.results = [None] * args.repeat

    def measure(rep: int, cfg: Config) -> str:
        try:
            if cfg.side == "fio":
                assert fio is not None
                result = run_fio(fio, str(path), cfg.depth, args.seconds, timeout)
            elif cfg.side == "native":
                assert native is not None
                result = run_native(native, str(path), cfg.depth, args.seconds, timeout)
            else:
                spec = {"backend": cfg.backend, "mode": cfg.mode, "loop": cfg.loop,
                        "depth": cfg.depth,
                        "seconds": args.seconds, "file": str(path), "size": size,
                        "seed": 1000 + rep}
                result = sides[cfg.side].run(spec, timeout)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            harness.note_failure(cfg.failures, str(exc))
            return f"FAILED {exc}"
        cfg.results[rep] = result
        summary = f"{result['ops_per_s']:,.0f} IOPS"
        if result["errors"]:
            summary += (f", {result['errors']} errors ({result['error_kind']}), "
                        f"first {result['first_error']}")
        if result.get("validation") and not (
                result["first_error"] and result["validation"].endswith(result["first_error"])):
            summary += f", validation: {result['validation']}"
        return summary

    groups = [[c for c in configs if c.depth == depth] for depth in args.depth_list]
    harness.run_interleaved(args.repeat, groups, measure, Config.describe, args.quiet)


# ----------------------------------------------------------------- aggregation


def aggregate(configs: list[Config]) -> list[dict[str, Any]]:
    fio_by_depth = {c.depth: c for c in configs if c.side == "fio"}
    rows = []
    for cfg in configs:
        runs = cfg.results
        ok_runs = [r for r in runs if r is not None and r["ok"] > 0]
        row: dict[str, Any] = {
            "side": cfg.side, "side_title": cfg.side_title, "backend": cfg.backend,
            "mode": cfg.mode, "what": cfg.what, "depth": cfg.depth,
            "runs": sum(1 for r in runs if r is not None),
            "failed_runs": cfg.failures,
            "iops": stats([r["ops_per_s"] for r in ok_runs]),
            "cpu_us_per_op": stats([r["cpu_us_per_op"] for r in ok_runs
                                    if r["cpu_us_per_op"] is not None]),
            "errors": sum(r["errors"] for r in runs if r is not None),
            "attempts": sum(r["errors"] + r["ok"] for r in runs if r is not None),
            "error_kinds": sorted({r["error_kind"] for r in runs
                                   if r is not None and r["error_kind"]}),
            "first_error": next((r["first_error"] for r in runs
                                 if r is not None and r["first_error"]), None),
            "aborted": any(r is not None and r["aborted"] for r in runs),
            "failing": False,
            "validation": sorted({r["validation"] for r in runs
                                  if r is not None and r.get("validation")}),
        }
        row["failing"] = row["attempts"] > 0 and \
            row["errors"] > FAIL_FRACTION * row["attempts"]
        fio_cfg = fio_by_depth.get(cfg.depth)
        if fio_cfg is not None and cfg.side != "fio":
            row["vs_fio"] = stats(harness.paired_ratios(
                runs, fio_cfg.results, "ops_per_s",
                usable=lambda r: r["ok"] > 0 and r["errors"] == 0))
        rows.append(row)
    return rows


# --------------------------------------------------------------------- output


def print_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out: list[str] = [""]
    out.append(f"O_DIRECT 4 KiB random reads, {meta['date']}")
    out.append(f"machine: Linux {meta['kernel']}, {meta['cpus']} CPUs, Python {meta['python']}")
    out.append(f"fio: {meta['fio']}")
    if meta.get("native"):
        out.append(f"native floor: {meta['native']}")
    out.append(f"file: {meta['file']} ({meta['size'] / MiB:.0f} MiB, {meta['fstype']})")
    out.append(f"ours: caio {meta['ours']['version']} ({meta['ours']['file']})")
    if meta["theirs"]:
        out.append(f"theirs: caio {meta['theirs']['version']} ({meta['theirs']['file']})")
    else:
        out.append(f"theirs: caio {UPSTREAM_VERSION} not measured (--no-upstream)")
    out.append(f"runs: {meta['repeat']} x {meta['seconds']:g} s per row, fresh process each, "
               "sides interleaved (order reversed every other repeat); median [min-max] over "
               "repeats; x fio = IOPS / IOPS of fio in the same repeat")
    out.append("CPU us/op: fio = (usr_cpu + sys_cpu) x runtime / reads; caio = "
               "getrusage(RUSAGE_SELF) user + system over the timed window / reads")

    headers = ["depth", "side", "backend / mode", "IOPS", "x fio", "CPU us/op", "errors"]
    align = "rllrrrl"
    body: list[list[str]] = []
    prev = None
    for r in rows:
        if prev is not None and r["depth"] != prev:
            body.append([])
        prev = r["depth"]
        if r["runs"] == 0:
            iops, errs = "-", "run failed"
        elif r["failing"]:
            iops = f"fails: {'/'.join(r['error_kinds']) or 'error'}"
            errs = f"{r['errors']}/{r['attempts']} reads failed"
            if r["aborted"]:
                errs += " (stopped early)"
        else:
            iops = fmt_stat(r["iops"])
            errs = "0" if not r["errors"] else \
                f"{r['errors']}/{r['attempts']} ({'/'.join(r['error_kinds'])})"
        if r["failed_runs"]:
            errs += f"; {len(r['failed_runs'])} run(s) crashed"
        vs = fmt_stat(r.get("vs_fio"), ratio=True) if r["side"] != "fio" else ""
        cpu = "-" if r["failing"] else fmt_stat(r["cpu_us_per_op"])
        body.append([str(r["depth"]), r["side_title"], r["what"], iops, vs, cpu, errs])
    out += render_table(headers, body, align)

    notes = []
    for r in rows:
        label = f"depth {r['depth']} {r['side_title']} {r['what']}"
        if r["first_error"]:
            same = [v for v in r["validation"] if v.endswith(r["first_error"])]
            notes.append(f"  {label}: first error {r['first_error']}"
                         + (" (the validation read failed the same way)" if same else ""))
        for v in r["validation"]:
            if not (r["first_error"] and v.endswith(r["first_error"])):
                notes.append(f"  {label}: validation read: {v}")
        for f in r["failed_runs"]:
            notes.append(f"  {label}: run failed: {f}")
    harness.add_section(out, "errors:", notes)

    key = []
    cpu_theirs = {(r["depth"], r["backend"], r["mode"]): r for r in rows if r["side"] == "theirs"}
    for r in rows:
        if r["side"] != "ours" or r["mode"] in ("raw", "floor"):
            continue
        s = r.get("vs_fio")
        verdict = "no fio" if "vs_fio" not in r else harness.target_verdict(s, TARGET_RATIO)
        line = (f"  depth {r['depth']:<3} {r['what']:<40}: x fio {fmt_stat(s, ratio=True)} "
                f"(target >= {TARGET_RATIO:g}: {verdict}); CPU {fmt_stat(r['cpu_us_per_op'])} "
                "us/op")
        t = cpu_theirs.get((r["depth"], r["backend"], r["mode"]))
        if t is not None:
            tc = t["cpu_us_per_op"]
            if t["failing"] or tc is None:
                kinds = "/".join(t["error_kinds"]) or "no result"
                line += (f" vs caio {UPSTREAM_VERSION}: - (it fails: {kinds}, "
                         f"{t['errors']}/{t['attempts']} reads)")
            else:
                line += f" vs caio {UPSTREAM_VERSION}: {fmt_num(tc['median'])}"
        key.append(line)
    harness.add_section(out, "key figures (ours, the adapters):", key)
    return harness.emit_report(out, meta["wall_s"])


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="O_DIRECT 4 KiB random reads: fio vs this project's caio vs caio "
                    f"{UPSTREAM_VERSION}.")
    p.add_argument("--depths", default=None,
                   help="comma list of queue depths (1,32; --quick: 1,8)")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds per run (3; --quick: 1); fio gets it rounded, >= 1")
    p.add_argument("--repeat", type=int, default=None, help="repeats per row (3; --quick: 1)")
    p.add_argument("--file", default=None,
                   help=f"data file (default {DEFAULT_FILE.relative_to(REPO_ROOT)}, created "
                        "once); must be on a real filesystem, not tmpfs")
    p.add_argument("--size", type=int, default=None,
                   help=f"data file size in bytes when creating it ({DEFAULT_SIZE})")
    p.add_argument("--backends", default="linux",
                   help="comma list among linux,uring,thread (linux)")
    harness.add_side_options(p, f"do not measure caio {UPSTREAM_VERSION}")
    p.add_argument("--modes", default=None,
                   help="comma list among into,default,deferred,floor,raw (all): into = "
                        "read_into a caio.aligned_buffer per task (zero-copy), default/"
                        "deferred = read() (a bounce buffer, then bytes), floor = no "
                        "adapter, a bare future per read_into (what the loop alone "
                        "costs), raw = the linux_aio Context without asyncio")
    p.add_argument("--loops", default="asyncio",
                   help="comma list among asyncio,uvloop: the loops of the asyncio modes "
                        "(asyncio)")
    p.add_argument("--no-fio", action="store_true", help="skip the fio rows")
    p.add_argument("--native", action="store_true",
                   help="add the native floor rows (builds rust/backends/examples/"
                        "direct_floor.rs with cargo; skipped without cargo)")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: 1 s runs, 1 repeat, depths 1,8")
    harness.add_output_options(p, "write all raw results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        defaults: dict[str, Any] = {"repeat": 1, "seconds": 1.0, "depths": "1,8"}
    else:
        defaults = {"repeat": 3, "seconds": 3.0, "depths": ",".join(map(str, DEFAULT_DEPTHS))}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.depth_list = parse_int_list(args.depths)
    args.mode_list = parse_str_list(args.modes) if args.modes else []
    args.loop_list = parse_str_list(args.loops)
    for loop in args.loop_list:
        if loop not in ("asyncio", "uvloop"):
            p.error(f"unknown loop {loop!r}; have asyncio, uvloop")
        if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            p.error("--loops uvloop: uvloop is not installed")
    if args.repeat < 1 or args.seconds <= 0 or not args.depth_list or \
            min(args.depth_list) < 1:
        p.error("--repeat and --depths must be >= 1 and --seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return harness.serve_worker(worker_main, args.worker,
                                    lambda exc: f"{error_kind(exc)}: {exc!r}")

    t0 = time.monotonic()
    path, size, fstype = prepare_file(args)
    sides = harness.prepare_sides(SCRIPT, args, [])

    fio = None if args.no_fio else shutil.which("fio")
    if fio:
        fio_ver = fio_version(fio)
    else:
        fio_ver = "skipped (--no-fio)" if args.no_fio else "not installed: no fio rows"
        log(f"fio: {fio_ver}")

    native, native_note = build_native_floor() if args.native else (None, None)
    if args.native:
        log(f"native floor: {native or native_note}")
    configs = build_configs(args, sides["ours"], sides.get("theirs"), fio, native)
    if not configs:
        raise SystemExit("nothing to run")
    run_all(args, configs, sides, fio, path, size, native)

    rows = aggregate(configs)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **harness.machine_meta(),
        "fio": fio_ver,
        "native": native_note,
        "file": str(path),
        "size": size,
        "fstype": fstype,
        **harness.sides_meta(sides),
        "repeat": args.repeat,
        "seconds": args.seconds,
        "depths": args.depth_list,
        "backends": parse_str_list(args.backends),
        "loops": args.loop_list,
        "argv": sys.argv[1:] if argv is None else argv,
        "wall_s": time.monotonic() - t0,
    }
    report = print_report(rows, meta)
    if args.json_out:
        raw = [{"side": c.side, "backend": c.backend, "mode": c.mode, "depth": c.depth,
                "results": c.results, "failures": c.failures} for c in configs]
        harness.write_json(args.json_out, meta, rows, raw, report)
    return 1 if any(c.failures for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())
