"""``python -m caio bench``: a quick benchmark of the available backends and event loops.

For every backend x loop it runs three workloads through the backend's adapter for that
loop (``AsyncioContext``; under trio, ``caio.trio_adapter``'s) at a small concurrency,
each for an equal share of the time budget: 4 KiB random reads and 1 MiB sequential
reads of a file in the page cache, and 4 KiB random overwrites. It reports operations
per second, MB/s (10**6 bytes) and the process CPU time per operation (every thread of
the process: the loop, thread pools, io_uring workers).

Standard library only (uvloop and trio are measured when installed). The command line
lives in ``caio/__main__.py``; this module measures and prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO, TypeVar

import caio

KiB = 1024
MiB = 1024 * KiB

LOOPS = ("asyncio", "uvloop", "trio")
WRITE_FILE_MAX = 8 * MiB
CELL_TIMEOUT_EXTRA = 30.0  # seconds a row may overrun its share before it counts as hung
PROGRESS_INTERVAL = 0.1  # seconds between redraws of the bar within a row
OFFSET_TABLE_SIZE = 1 << 14
WARMUP_FRACTION = 0.2  # of a row's measured time, run before it unmeasured

T = TypeVar("T")


@dataclass(frozen=True)
class Workload:
    name: str
    op: str  # "read" or "write"
    size: int  # bytes per operation
    random: bool  # random offsets (else sequential)


WORKLOADS = (
    Workload("rand4k", "read", 4 * KiB, random=True),
    Workload("seq1m", "read", MiB, random=False),
    Workload("write4k", "write", 4 * KiB, random=True),
)


@dataclass
class Result:
    backend: str
    loop: str
    workload: str
    ops: int = 0
    nbytes: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    error: str | None = None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.elapsed / 1e6 if self.elapsed > 0 else 0.0

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu / self.ops * 1e6 if self.ops else 0.0


# --- environment ----------------------------------------------------------------------


def filesystem_type(directory: str) -> str | None:
    """Type of the filesystem holding ``directory``, from /proc/self/mounts."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fp:
            mounts = fp.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(directory)
    best, best_type = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ").replace("\\011", "\t")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def is_memory_filesystem(fs_type: str | None) -> bool:
    return fs_type in ("tmpfs", "ramfs")


def loop_unavailable(name: str) -> str | None:
    """Why the event loop ``name`` cannot be measured here, or None if it can."""
    needs = {"asyncio": (), "uvloop": ("uvloop",), "trio": ("trio", "caio.trio_adapter")}
    for module in needs[name]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not importable ({exc})"
    return None


def available_loops() -> list[str]:
    return [name for name in LOOPS if loop_unavailable(name) is None]


class _Flavor:
    """What the measurement needs of an event loop: asyncio's (asyncio, uvloop) here,
    trio's in ``_TrioFlavor``."""

    def __init__(self, loop_name: str) -> None:
        self.loop_name = loop_name

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        if self.loop_name == "uvloop":
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(main())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def adapter_class(self, backend: str) -> Any:
        return getattr(caio, f"{backend}_asyncio").AsyncioContext

    async def run_all(self, fns: Sequence[Callable[[], Awaitable[Any]]]) -> None:
        await asyncio.gather(*(fn() for fn in fns))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def with_timeout(self, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        """``await fn()``; TimeoutError after ``seconds``."""
        try:
            await asyncio.wait_for(fn(), seconds)
        except asyncio.TimeoutError:
            raise TimeoutError from None

    async def with_background(self, background: Callable[[], Awaitable[Any]],
                              fn: Callable[[], Awaitable[Any]]) -> None:
        """``await fn()`` while ``background()`` runs; the latter is cancelled after."""
        task = asyncio.ensure_future(background())
        try:
            await fn()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _TrioFlavor(_Flavor):
    def __init__(self, loop_name: str) -> None:
        super().__init__(loop_name)
        # Imported by name: neither is needed by (nor known to) the rest of caio.
        self.trio: Any = importlib.import_module("trio")
        self.contexts = importlib.import_module("caio.trio_adapter").TRIO_CONTEXTS

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        result: T = self.trio.run(main)
        return result

    def adapter_class(self, backend: str) -> Any:
        return self.contexts[backend]

    async def run_all(self, fns: Sequence[Callable[[], Awaitable[Any]]]) -> None:
        async with self.trio.open_nursery() as nursery:
            for fn in fns:
                nursery.start_soon(fn)

    async def sleep(self, seconds: float) -> None:
        await self.trio.sleep(seconds)

    async def with_timeout(self, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            with self.trio.fail_after(seconds):
                await fn()
        except self.trio.TooSlowError:
            raise TimeoutError from None

    async def with_background(self, background: Callable[[], Awaitable[Any]],
                              fn: Callable[[], Awaitable[Any]]) -> None:
        async with self.trio.open_nursery() as nursery:
            nursery.start_soon(background)
            await fn()
            nursery.cancel_scope.cancel()


def _flavor(loop_name: str) -> _Flavor:
    return _TrioFlavor(loop_name) if loop_name == "trio" else _Flavor(loop_name)


# --- data files -------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFiles:
    read_path: str
    read_size: int
    write_path: str
    write_size: int


def create_files(directory: str, size: int) -> DataFiles:
    """A ``size``-byte file of random data to read and a smaller one to overwrite, synced,
    so that their pages are clean and in the page cache when the runs start."""
    files = DataFiles(
        read_path=os.path.join(directory, "read.dat"), read_size=size,
        write_path=os.path.join(directory, "write.dat"), write_size=min(size, WRITE_FILE_MAX),
    )
    for path, length in ((files.read_path, files.read_size), (files.write_path, files.write_size)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            offset = 0
            while offset < length:
                chunk = os.urandom(min(MiB, length - offset))
                offset += os.pwrite(fd, chunk, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    return files


# --- progress ---------------------------------------------------------------------------


class Progress:
    """Progress on ``stream``: an in-place bar on a terminal, a line per row otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._label = ""
        self._drawn = 0

    def start(self, label: str) -> None:
        self._label = label
        self.draw(0.0)

    def draw(self, fraction_of_row: float) -> None:
        """Redraw the bar (terminal only), ``fraction_of_row`` into the current row."""
        if not self.tty:
            return
        share = (self.done + min(max(fraction_of_row, 0.0), 1.0)) / self.total
        filled = int(share * self.WIDTH)
        text = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {share * 100:3.0f}% "
                f"{self.done + 1}/{self.total} {self._label}")
        self.stream.write("\r" + text.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(text)

    def finish_row(self, summary: str) -> None:
        self.done += 1
        if not self.tty:
            self.stream.write(f"[{self.done}/{self.total}] {self._label}: {summary}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


# --- measuring --------------------------------------------------------------------------


class CheckFailedError(Exception):
    """An operation returned something other than what it must."""


def _offsets(workload: Workload, file_size: int) -> Callable[[], int]:
    """The next offset to use, for any worker: random blocks from a table, or a shared
    sequential cursor wrapping at the end of the file."""
    slots = max(file_size // workload.size, 1)
    size = workload.size
    counter = 0
    if workload.random:
        rnd = random.Random(7)
        table = [rnd.randrange(slots) * size for _ in range(OFFSET_TABLE_SIZE)]
        mask = OFFSET_TABLE_SIZE - 1

        def next_random() -> int:
            nonlocal counter
            counter += 1
            return table[counter & mask]
        return next_random

    def next_sequential() -> int:
        nonlocal counter
        counter += 1
        return (counter % slots) * size
    return next_sequential


async def _check_first(ctx: Any, workload: Workload, fd: int, payload: bytes) -> None:
    """One operation checked against the file itself, so a broken backend shows up as an
    error instead of as figures."""
    if workload.op == "read":
        expected = os.pread(fd, workload.size, workload.size)
        data = await ctx.read(workload.size, fd, workload.size)
        if bytes(data) != expected:
            raise CheckFailedError(f"read returned {len(data)} bytes that differ from the file")
    else:
        written = await ctx.write(payload, fd, 0)
        if written != len(payload):
            raise CheckFailedError(f"write of {len(payload)} bytes returned {written!r}")


async def _measure(flavor: _Flavor, ctx: Any, workload: Workload, files: DataFiles,
                   seconds: float, concurrency: int, progress: Progress, result: Result) -> None:
    is_read = workload.op == "read"
    path = files.read_path if is_read else files.write_path
    fd = os.open(path, os.O_RDONLY if is_read else os.O_RDWR)
    try:
        size = workload.size
        payload = b"\xa5" * size
        await _check_first(ctx, workload, fd, payload)
        next_offset = _offsets(workload, files.read_size if is_read else files.write_size)
        op: Callable[[int], Awaitable[Any]]
        if is_read:
            def op(offset: int) -> Awaitable[Any]:
                return ctx.read(size, fd, offset)
        else:
            def op(offset: int) -> Awaitable[Any]:
                return ctx.write(payload, fd, offset)

        perf = time.perf_counter
        ops = 0
        deadline = 0.0

        async def worker() -> None:
            nonlocal ops
            while True:  # at least one operation each, however short the share
                await op(next_offset())
                ops += 1
                if perf() >= deadline:
                    return

        async def redraw() -> None:
            while True:
                await flavor.sleep(PROGRESS_INTERVAL)
                progress.draw((perf() - row_start) / row_seconds)

        async def warm_up_and_measure() -> None:
            nonlocal deadline, ops
            workers = [worker] * concurrency
            # Unmeasured warm-up: thread pools and kernel workers start on first use.
            deadline = row_start + seconds * WARMUP_FRACTION
            await flavor.run_all(workers)
            ops = 0
            cpu_start = time.process_time()
            start = perf()
            deadline = start + seconds
            await flavor.run_all(workers)
            result.elapsed = perf() - start
            result.cpu = time.process_time() - cpu_start

        row_start = perf()
        row_seconds = seconds * (1 + WARMUP_FRACTION)
        if progress.tty:
            await flavor.with_background(redraw, warm_up_and_measure)
        else:
            await warm_up_and_measure()
        result.ops = ops
        result.nbytes = ops * size
    finally:
        os.close(fd)


def _describe_error(exc: BaseException) -> str:
    # A trio nursery wraps what its tasks raise in an exception group: show the first.
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


async def _run_backend_on_loop(flavor: _Flavor, backend: str, files: DataFiles,
                               seconds: float, concurrency: int,
                               progress: Progress) -> list[Result]:
    loop_name = flavor.loop_name
    results = []
    ctx = None
    setup_error = None
    try:
        ctx = flavor.adapter_class(backend)()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        setup_error = _describe_error(exc)
    try:
        for workload in WORKLOADS:
            result = Result(backend, loop_name, workload.name, error=setup_error)
            progress.start(f"{backend} {loop_name} {workload.name}")
            if ctx is not None:
                try:
                    await flavor.with_timeout(seconds + CELL_TIMEOUT_EXTRA, partial(
                        _measure, flavor, ctx, workload, files, seconds, concurrency, progress,
                        result))
                except TimeoutError:
                    result.error = f"timed out after {seconds + CELL_TIMEOUT_EXTRA:g} s"
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    result.error = _describe_error(exc)
            progress.finish_row(result.error or f"{result.ops_per_s:,.0f} ops/s")
            results.append(result)
    finally:
        if ctx is not None:
            ctx.close()
    return results


def run(backends: list[str], loops: list[str], files: DataFiles, seconds: float,
        concurrency: int, progress: Progress) -> list[Result]:
    """Every workload on every backend x loop, each for ``seconds / rows``."""
    share = seconds / (len(backends) * len(loops) * len(WORKLOADS))
    results = []
    flavors = [_flavor(name) for name in loops]
    for backend in backends:
        for flavor in flavors:
            results += flavor.run(partial(_run_backend_on_loop, flavor, backend, files, share,
                                          concurrency, progress))
    return results


# --- output -----------------------------------------------------------------------------


def _micro_sign(stream: TextIO) -> str:
    try:
        "µ".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "u"
    return "µ"


def format_table(results: list[Result], micro: str = "µ") -> list[str]:
    headers = ["backend", "loop", "workload", "ops/s", "MB/s", f"CPU {micro}s/op"]
    rows = []
    for r in results:
        if r.error is not None:
            rows.append([r.backend, r.loop, r.workload, f"error: {r.error}"])
            continue
        rows.append([r.backend, r.loop, r.workload, f"{r.ops_per_s:,.0f}", f"{r.mb_per_s:,.1f}",
                     f"{r.cpu_us_per_op:,.1f}"])
    widths = [len(h) for h in headers]
    for row in rows:
        if not row[3].startswith("error: "):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    left = 3  # text columns; figures align right

    def line(cells: list[str]) -> str:
        out = [cell.ljust(w) if i < left else cell.rjust(w)
               for i, (cell, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])]
    for row in rows:
        if row[3].startswith("error: "):  # the message runs on past the figures' columns
            lines.append(line([*row[:3], ""]) + "  " + row[3])
        else:
            lines.append(line(row))
    return lines


def print_table(results: list[Result], stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    for text in format_table(results, _micro_sign(out)):
        out.write(text + "\n")
    out.flush()
