#!/usr/bin/env python3
"""This project's caio against the libraries a user would pick instead (issue 13).

Participants, each from its own ``pip install --target`` folder under
``benchmarks/.peers/<python tag>/`` and all run by one interpreter (``--python``, by
default a CPython 3.12: turbofile and urio ship 3.12 wheels only), so every row is on the
same Python:

* ours: this checkout built for that interpreter (``pip install --target`` of the repo
  root, one folder per commit plus a hash of uncommitted changes), ``caio.AsyncioContext()``
  and each native backend's adapter; ``ctx.read(size, fd, offset)`` / ``ctx.write(data, fd,
  offset)`` on one fd;
* caio 0.12.10 from PyPI, the same calls, default and per backend;
* turbofile 0.1.5: ``f.read_at(offset, size)`` on one shared file (its README's positional
  read); it has no positional write, so writes use a file per task with ``seek`` + ``write``;
* urio 0.3.0: no positional API in its README: a file per task, ``seek`` + ``read``/``write``;
* ayafileio 2.0.0: ``f.read_at(offset, size)`` / ``f.write_at(offset, data)`` on one file;
* py-asyncfiles 1.7.0, ``backend="io_uring"`` and ``backend="libuv"``: a file per task,
  ``f.seek(offset)`` (synchronous there) + ``read``/``write``;
* aiofiles 25.1.0: a file per task (``buffering=0``), ``seek`` + ``read``/``write``;
* ``loop.run_in_executor(None, os.pread/os.pwrite)`` on one fd.

Every participant is first verified on the workload's own concurrency: reads at random
offsets of a file whose every 8-byte word holds its own offset (so a wrong read says where
it came from) are compared with ``os.pread``, and writes of unique payloads are checked
with ``os.pread`` afterwards (a payload found elsewhere says where it landed). One that
fails is reported and not timed for that workload. Timed runs are the page-cache workloads
of ``benchlib`` in fresh subprocesses with ``harness``'s paired, alternating, interleaved
repeats; ratios are ours (default ``AsyncioContext()``) over the participant, run by run.

Examples::

    python benchmarks/peers.py --repeat 3                  # the full run (3-4 minutes on 2 cores)
    python benchmarks/peers.py --quick                     # one short repeat
    python benchmarks/peers.py --participants ours,turbofile,urio --workloads rand4k
    python benchmarks/peers.py --quick --python "$(which python3)" --ours-from-import \\
        --participants ours,executor                       # no download (the smoke test)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import glob
import hashlib
import mmap
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import benchlib
import harness
from harness import MiB, fmt_num, fmt_stat, log, paired_ratios, parse_str_list, stats

SCRIPT = Path(__file__).resolve()
PEERS_DIR = harness.HERE / ".peers"
OURS = "ours"  # the participant every ratio is taken against
VERIFY_FILE_SIZE = 16 * MiB


@dataclass(frozen=True)
class Participant:
    name: str
    title: str
    group: str  # "ours", "caio" (0.12.10), "peer", "ref"
    adapter: str  # key of ADAPTERS
    arg: str = ""  # the adapter's backend
    requirement: str | None = None  # what pip installs into its folder; None: nothing
    module: str | None = None  # what it imports (for the version and the import check)
    # ours-<backend> rows are also compared with caio 0.12.10's same backend
    twin: str | None = None

    @property
    def dist(self) -> str | None:
        return self.requirement.split("==")[0] if self.requirement else None


NATIVE = ("uring", "linux", "thread")
CAIO_REQ = f"caio=={harness.UPSTREAM_VERSION}"
PARTICIPANTS: dict[str, Participant] = {p.name: p for p in [
    Participant(OURS, "ours AsyncioContext()", "ours", "caio", "default", module="caio"),
    *(Participant(f"ours-{b}", f"ours {b}", "ours", "caio", b, module="caio",
                  twin=f"caio-{b}") for b in NATIVE),
    Participant("caio", f"caio {harness.UPSTREAM_VERSION} AsyncioContext()", "caio", "caio",
                "default", CAIO_REQ, "caio"),
    *(Participant(f"caio-{b}", f"caio {harness.UPSTREAM_VERSION} {b}", "caio", "caio", b,
                  CAIO_REQ, "caio") for b in NATIVE),
    Participant("turbofile", "turbofile read_at", "peer", "turbofile", "",
                "turbofile==0.1.5", "turbofile"),
    Participant("urio", "urio seek+read", "peer", "urio", "", "urio==0.3.0", "urio"),
    Participant("ayafileio", "ayafileio read_at/write_at", "peer", "ayafileio", "",
                "ayafileio==2.0.0", "ayafileio"),
    Participant("asyncfiles-uring", "py-asyncfiles io_uring", "peer", "asyncfiles", "io_uring",
                "py-asyncfiles==1.7.0", "asyncfiles"),
    Participant("asyncfiles-libuv", "py-asyncfiles libuv", "peer", "asyncfiles", "libuv",
                "py-asyncfiles==1.7.0", "asyncfiles"),
    Participant("aiofiles", "aiofiles seek+read", "peer", "aiofiles", "", "aiofiles==25.1.0",
                "aiofiles"),
    Participant("executor", "run_in_executor(os.pread/pwrite)", "ref", "executor"),
]}


@dataclass(frozen=True)
class Row:
    """One line of the issue's table: a workload at one concurrency."""

    key: str
    workload: str  # benchlib.WORKLOADS
    concurrency: int


ROWS: dict[str, Row] = {r.key: r for r in [
    Row("rand4k-c1", "rand4k", 1),
    Row("rand4k-c64", "rand4k", 64),
    Row("seq64k-c16", "seq64k", 16),
    Row("seq1m-c16", "seq1m", 16),
    Row("write4k-c16", "write4k", 16),
]}


# =============================================================================
# adapters (worker side): one library's way to do positional I/O
# =============================================================================


class Adapter:
    """``read(handle, size, offset)`` and ``write(handle, data, offset)`` return awaitables;
    ``handle(worker)`` is what a worker passes: the one shared handle, or its own when the
    library has no positional call (``per_task``: a file object has one position)."""

    per_task = False

    def __init__(self, arg: str) -> None:
        self.arg = arg
        self.handles: list[Any] = []

    async def open(self, path: str, writable: bool, workers: int) -> None:
        for _ in range(workers if self.per_task else 1):
            self.handles.append(await self.open_handle(path, writable))

    def handle(self, worker: int) -> Any:
        return self.handles[worker if self.per_task else 0]

    async def close(self) -> None:
        while self.handles:
            await self.close_handle(self.handles.pop())

    async def open_handle(self, path: str, writable: bool) -> Any:
        raise NotImplementedError

    async def close_handle(self, handle: Any) -> None:
        await handle.close()

    def read(self, handle: Any, size: int, offset: int) -> Awaitable[bytes]:
        raise NotImplementedError

    def write(self, handle: Any, data: bytes, offset: int) -> Awaitable[Any]:
        raise NotImplementedError


class FdAdapter(Adapter):
    async def open_handle(self, path: str, writable: bool) -> int:
        return os.open(path, os.O_RDWR if writable else os.O_RDONLY)

    async def close_handle(self, handle: int) -> None:
        os.close(handle)


class CaioAdapter(FdAdapter):
    """Ours and caio 0.12.10: one context, ``ctx.read(size, fd, offset)``."""

    async def open(self, path: str, writable: bool, workers: int) -> None:
        self.ctx = benchlib.caio_context_class(self.arg)()
        await super().open(path, writable, workers)

    async def close(self) -> None:
        await super().close()
        await harness.close_context(self.ctx)

    def read(self, handle: int, size: int, offset: int) -> Awaitable[bytes]:
        return self.ctx.read(size, handle, offset)

    def write(self, handle: int, data: bytes, offset: int) -> Awaitable[Any]:
        return self.ctx.write(data, handle, offset)


class ExecutorAdapter(FdAdapter):
    async def open(self, path: str, writable: bool, workers: int) -> None:
        self.submit = partial(asyncio.get_running_loop().run_in_executor, None)
        await super().open(path, writable, workers)

    def read(self, handle: int, size: int, offset: int) -> Awaitable[bytes]:
        return self.submit(os.pread, handle, size, offset)

    def write(self, handle: int, data: bytes, offset: int) -> Awaitable[Any]:
        return self.submit(os.pwrite, handle, data, offset)


class SeekAdapter(Adapter):
    """A file object per task, ``await seek(offset)`` then ``read``/``write``."""

    per_task = True

    async def read(self, handle: Any, size: int, offset: int) -> bytes:
        await handle.seek(offset)
        return await handle.read(size)

    async def write(self, handle: Any, data: bytes, offset: int) -> Any:
        await handle.seek(offset)
        return await handle.write(data)


class AiofilesAdapter(SeekAdapter):
    async def open_handle(self, path: str, writable: bool) -> Any:
        return await benchlib.open_file_api("aiofiles", path, "r+b" if writable else "rb")


class UrioAdapter(SeekAdapter):
    async def open_handle(self, path: str, writable: bool) -> Any:
        import urio  # type: ignore[import-not-found]

        return await urio.open(path, "r+b" if writable else "rb")


class AsyncfilesAdapter(SeekAdapter):
    """py-asyncfiles: ``open()`` is an async context manager only; ``seek`` is synchronous."""

    async def open_handle(self, path: str, writable: bool) -> Any:
        import asyncfiles  # type: ignore[import-not-found]

        return await asyncfiles.open(path, "r+b" if writable else "rb",
                                     backend=self.arg).__aenter__()

    async def close_handle(self, handle: Any) -> None:
        await handle.__aexit__(None, None, None)

    def read(self, handle: Any, size: int, offset: int) -> Awaitable[bytes]:
        handle.seek(offset)
        return handle.read(size)

    def write(self, handle: Any, data: bytes, offset: int) -> Awaitable[Any]:
        handle.seek(offset)
        return handle.write(data)


class TurbofileAdapter(SeekAdapter):
    """``read_at(offset, size)`` on a shared file; writes: seek + write, a file per task."""

    async def open(self, path: str, writable: bool, workers: int) -> None:
        self.per_task = writable
        await super().open(path, writable, workers)

    async def open_handle(self, path: str, writable: bool) -> Any:
        import turbofile  # type: ignore[import-not-found]

        return await turbofile.open(path, "r+b" if writable else "rb", buffering=0)

    def read(self, handle: Any, size: int, offset: int) -> Awaitable[bytes]:
        return handle.read_at(offset, size)


class AyafileioAdapter(Adapter):
    async def open_handle(self, path: str, writable: bool) -> Any:
        import ayafileio  # type: ignore[import-not-found]

        return ayafileio.open(path, "rb+" if writable else "rb")

    def read(self, handle: Any, size: int, offset: int) -> Awaitable[bytes]:
        return handle.read_at(offset, size)

    def write(self, handle: Any, data: bytes, offset: int) -> Awaitable[Any]:
        return handle.write_at(offset, data)


ADAPTERS: dict[str, type[Adapter]] = {
    "caio": CaioAdapter, "executor": ExecutorAdapter, "aiofiles": AiofilesAdapter,
    "urio": UrioAdapter, "asyncfiles": AsyncfilesAdapter, "turbofile": TurbofileAdapter,
    "ayafileio": AyafileioAdapter,
}


def make_adapter(participant: str) -> Adapter:
    p = PARTICIPANTS[participant]
    return ADAPTERS[p.adapter](p.arg)


class PeerRunner:
    """What ``benchlib.run_timed`` drives: per worker an ``op(offset)`` through an adapter."""

    def __init__(self, adapter: Adapter, workload: benchlib.Workload) -> None:
        self.adapter = adapter
        self.workload = workload
        self.lib = benchlib.ASYNCIO
        self.payload = b"\xa5" * workload.size

    def make_op(self, worker: int) -> Callable[[int], Awaitable[Any]]:
        handle, size, payload = self.adapter.handle(worker), self.workload.size, self.payload
        if self.workload.op == "write":
            write = self.adapter.write
            return lambda off: write(handle, payload, off)
        read = self.adapter.read
        return lambda off: read(handle, size, off)


# =============================================================================
# worker side
# =============================================================================


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    if kind == "info":
        return participant_info(spec["participant"])
    if kind == "verify":
        return {key: harness.run_on_loop(spec["loop"], partial(
            verify, make_adapter(spec["participant"]), ROWS[key], spec["files"]))
            for key in spec["rows"]}
    if kind == "timed":
        row = ROWS[spec["row"]]
        workload = benchlib.WORKLOADS[row.workload]
        warm = benchlib.before_run(workload, spec["files"])
        result = harness.run_on_loop(spec["loop"], partial(_timed, spec, row, workload))
        benchlib.after_run(workload, spec["files"])
        result["warm"] = warm
        return result
    raise ValueError(f"unknown worker kind {kind!r}")


def participant_info(name: str) -> dict[str, Any]:
    """Where the participant's module comes from and its version (ImportError: fatal)."""
    p = PARTICIPANTS[name]
    info: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable}
    if p.module is None:
        info.update(version=sys.version.split()[0], file="(standard library)")
        return info
    module = __import__(p.module)
    info["file"] = os.path.dirname(os.path.abspath(module.__file__ or ""))
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["version"] = version(p.dist or p.module)
    except PackageNotFoundError:
        info["version"] = getattr(module, "__version__", None)
    if p.adapter == "caio":
        info["caio"] = harness.caio_info()
        if p.arg != "default" and p.arg not in info["caio"]["backends"]:
            raise LookupError(f"caio from {info['file']} has no backend {p.arg!r}")
    return info


async def _timed(spec: dict[str, Any], row: Row, workload: benchlib.Workload) -> dict[str, Any]:
    adapter = make_adapter(spec["participant"])
    path = benchlib.workload_file(workload, spec["files"])
    await adapter.open(path, workload.op == "write", row.concurrency)
    try:
        runner = PeerRunner(adapter, workload)
        offsets = benchlib.OffsetSource(workload, os.path.getsize(path))
        if spec["warmup"] > 0:
            await benchlib.run_timed(runner, row.concurrency, spec["warmup"], offsets)  # type: ignore[arg-type]
        return await benchlib.run_timed(runner, row.concurrency, spec["seconds"], offsets)  # type: ignore[arg-type]
    finally:
        await adapter.close()


# ------------------------------------------------------------------ verification


def make_offset_file(path: Path, size: int) -> None:
    """A file whose every 8-byte little-endian word is its own offset."""
    if path.exists() and path.stat().st_size == size:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fp:
        fp.writelines(array.array("Q", range(start, min(start + MiB, size), 8)).tobytes() for start in range(0, size, MiB))
    os.replace(tmp, path)


def where_from(data: bytes) -> str:
    """Where a wrong read of the offset file came from (its first aligned word)."""
    if len(data) < 16:
        return "too short to tell where it came from"
    skip = 0
    while skip < 8 and int.from_bytes(data[skip + 8:skip + 16], "little") - \
            int.from_bytes(data[skip:skip + 8], "little") != 8:
        skip += 1
    if skip == 8:
        return "data not from this file"
    return f"data from offset {int.from_bytes(data[skip:skip + 8], 'little') - skip}"


async def run_spread(concurrency: int, jobs: list[Callable[[Any], Awaitable[None]]],
                     adapter: Adapter) -> None:
    """``jobs`` spread over ``concurrency`` workers (as in a timed run), each worker
    awaiting its share one by one through its own handle."""

    async def worker(index: int) -> None:
        handle = adapter.handle(index)
        for job in jobs[index::concurrency]:
            await job(handle)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def verify(adapter: Adapter, row: Row, files: dict[str, str]) -> dict[str, Any]:
    """Check an adapter's reads (or writes) of ``row``'s size at its concurrency:
    ``{"ok": True}`` or ``{"ok": False, "error": what went wrong}``. ``files``: "verify"
    (``make_offset_file``) and "verify_write" (a scratch copy of it, made here)."""
    workload = benchlib.WORKLOADS[row.workload]
    size, count = workload.size, max(64, 2 * row.concurrency)
    rnd = random.Random(11)
    problems: list[str] = []
    try:
        if workload.op == "write":
            await verify_writes(adapter, row, files, size, count, rnd, problems)
        else:
            await verify_reads(adapter, row, files, size, count, rnd, problems)
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        await adapter.close()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return {"ok": False, "error": problems[0] + more, "problems": problems[:10]}
    return {"ok": True}


async def verify_reads(adapter: Adapter, row: Row, files: dict[str, str], size: int,
                       count: int, rnd: random.Random, problems: list[str]) -> None:
    path = files["verify"]
    fd = os.open(path, os.O_RDONLY)
    try:
        slots = os.fstat(fd).st_size // size
        # the workload's aligned offsets plus a few odd ones
        offsets = [rnd.randrange(slots) * size for _ in range(count)]
        offsets += [rnd.randrange(slots - 1) * size + rnd.randrange(1, size) for _ in range(4)]
        await adapter.open(path, False, row.concurrency)

        def job(off: int) -> Callable[[Any], Awaitable[None]]:
            async def check(handle: Any) -> None:
                data = bytes(await adapter.read(handle, size, off))
                if data != os.pread(fd, size, off):
                    problems.append(f"read of {size} bytes at offset {off} returned "
                                    f"{len(data)} bytes, {where_from(data)}")
            return check

        await run_spread(row.concurrency, [job(off) for off in offsets], adapter)
    finally:
        os.close(fd)


async def verify_writes(adapter: Adapter, row: Row, files: dict[str, str], size: int,
                        count: int, rnd: random.Random, problems: list[str]) -> None:
    path = Path(files["verify_write"])
    shutil.copyfile(files["verify"], path)  # fresh contents: every word is its offset
    file_size = path.stat().st_size
    # slots two sizes apart, so that the few unaligned offsets at the end overlap nothing
    slots = rnd.sample(range(file_size // (2 * size)), count + 4)
    offsets = [slot * 2 * size for slot in slots[:count]]
    offsets += [slot * 2 * size + rnd.randrange(1, size) for slot in slots[count:]]
    payloads = {off: rnd.randbytes(size) for off in offsets}
    results: dict[int, Any] = {}
    await adapter.open(str(path), True, row.concurrency)

    def job(off: int) -> Callable[[Any], Awaitable[None]]:
        async def write(handle: Any) -> None:
            results[off] = await adapter.write(handle, payloads[off], off)
        return write

    await run_spread(row.concurrency, [job(off) for off in offsets], adapter)
    await adapter.close()  # flushes whatever a library buffers

    fd = os.open(path, os.O_RDONLY)
    try:
        now_size = os.fstat(fd).st_size
        if now_size != file_size:
            problems.append(f"the file grew from {file_size} to {now_size} bytes")
        with mmap.mmap(fd, now_size, prot=mmap.PROT_READ) as view:
            for off in offsets:
                if results[off] not in (None, size):
                    problems.append(f"write of {size} bytes at offset {off} returned "
                                    f"{results[off]!r}")
                if os.pread(fd, size, off) == payloads[off]:
                    continue
                found = view.find(payloads[off])
                there = where_from(os.pread(fd, size, off))
                if found >= 0:
                    problems.append(f"write meant for offset {off} landed at offset {found} "
                                    f"(offset {off} holds {there})")
                else:
                    problems.append(f"write meant for offset {off} is not in the file "
                                    f"(offset {off} holds {there})")
    finally:
        os.close(fd)


# =============================================================================
# driver side: interpreter, installs, participants
# =============================================================================


def find_python(arg: str | None) -> str:
    """The interpreter the workers run: ``--python``, else a CPython 3.12 (``python3.12``
    on PATH or pyenv's); its real ``sys.executable`` (no shim between runs)."""
    candidates = [arg] if arg else [
        "python3.12", *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")))]
    for cand in candidates:
        if cand is None:
            continue
        try:
            out = subprocess.run([cand, "-c", "import sys; print(sys.executable)"],
                                 capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return out.stdout.strip()
    raise SystemExit(f"no interpreter found (tried {', '.join(c for c in candidates if c)}); "
                     "pass --python")


def python_tag(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def source_key() -> str:
    """A hash of the committed sources that get built (so commits elsewhere do not force
    a rebuild), plus one of their uncommitted changes."""
    paths = ["caio", "rust", "Cargo.toml", "Cargo.lock", "setup.py", "pyproject.toml"]

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=harness.REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout

    key = hashlib.sha1(git("ls-tree", "-r", "HEAD", "--", *paths).encode()).hexdigest()[:12]
    dirty = git("status", "--porcelain", "--untracked-files=all", "--", *paths)
    if dirty:
        digest = hashlib.sha1(git("diff", "HEAD", "--", *paths).encode())
        for line in sorted(dirty.splitlines()):
            if line.startswith("??"):  # untracked files: their contents
                with open(harness.REPO_ROOT / line[3:], "rb") as fp:
                    digest.update(fp.read())
        key += "-dirty-" + digest.hexdigest()[:10]
    return key


def ensure_ours(python: str, tag: str, rebuild: bool) -> Path:
    """Our source built for ``python`` into a folder named by ``source_key()``."""
    folder = PEERS_DIR / tag / f"ours-{source_key()}"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    if not (folder / ".complete").exists():
        for old in (PEERS_DIR / tag).glob("ours-*"):
            shutil.rmtree(old, ignore_errors=True)  # builds of other source states
        env = dict(os.environ, CARGO_TARGET_DIR=str(PEERS_DIR / tag / "cargo-target"))
        t0 = time.monotonic()
        harness.pip_install_target(python, str(harness.REPO_ROOT), folder, env=env)
        (folder / ".complete").touch()
        log(f"built ours for {tag} in {time.monotonic() - t0:.0f} s")
    return folder


def ensure_requirement(python: str, tag: str, requirement: str) -> Path:
    folder = PEERS_DIR / tag / requirement.replace("==", "-")
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        harness.pip_install_target(python, requirement, folder)
        (folder / ".complete").touch()
    return folder


@dataclass
class Entrant:
    """A participant of this run: where it imports from, what it is, and its results."""

    participant: Participant
    side: harness.Side
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # failed to install or import: not run
    verified: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.participant.name

    def runs(self, row: str) -> bool:
        return self.error is None and self.verified.get(row, {}).get("ok", False)


def prepare_entrants(args: argparse.Namespace, names: list[str]) -> list[Entrant]:
    """Install (once) and probe every participant; failures are kept as such."""
    tag = python_tag(args.python)
    inherit = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] \
        if os.path.realpath(args.python) == os.path.realpath(sys.executable) else []
    extra: list[str] = []
    if args.loop == "uvloop":
        extra.append(str(ensure_requirement(args.python, tag, "uvloop")))
    ours_folder: Path | None = None
    entrants = []
    for name in names:
        p = PARTICIPANTS[name]
        entrant = Entrant(p, harness.Side(name, SCRIPT, {}, python=args.python))
        try:
            paths: list[str] = []
            if p.group == "ours" and not args.ours_from_import:
                if ours_folder is None:
                    ours_folder = ensure_ours(args.python, tag, args.rebuild_ours)
                paths.append(str(ours_folder))
            elif p.requirement:
                paths.append(str(ensure_requirement(args.python, tag, p.requirement)))
            # PYTHONPATH: the participant's folder only (plus, on this interpreter, what it
            # already has), so no participant sees another's caio
            entrant.side.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                paths + extra + inherit))
            entrant.info = entrant.side.run({"kind": "info", "participant": name}, 60)
            check_origin(entrant, paths)
        except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
            entrant.error = f"{type(exc).__name__}: {exc}"
            log(f"{name}: not run: {entrant.error}")
        else:
            log(f"{name}: {entrant.info.get('version')} from {entrant.info.get('file')}")
        entrants.append(entrant)
    return entrants


def check_origin(entrant: Entrant, paths: list[str]) -> None:
    """A participant must import its module from its own folder (ours: not caio's)."""
    file = os.path.realpath(entrant.info.get("file", ""))
    if paths and entrant.participant.module and \
            not any(file.startswith(os.path.realpath(p)) for p in paths):
        raise RuntimeError(f"imported {entrant.participant.module} from {file}, "
                           f"not from {paths[0]}")
    if entrant.participant.group == "ours" and "caio-" in os.path.basename(os.path.dirname(file)):
        raise RuntimeError(f"our side imports caio from {file}")


def verify_all(args: argparse.Namespace, entrants: list[Entrant], rows: list[Row],
               files: dict[str, str]) -> None:
    for e in entrants:
        if e.error:
            continue
        spec = {"kind": "verify", "participant": e.name, "rows": [r.key for r in rows],
                "files": files, "loop": args.loop}
        try:
            e.verified = e.side.run(spec, 120)
        except (subprocess.SubprocessError, RuntimeError) as exc:
            e.verified = {r.key: {"ok": False, "error": f"verification crashed: {exc}"}
                          for r in rows}
        for key, v in e.verified.items():
            if not v["ok"]:
                log(f"{e.name} {key}: verification FAILED: {v['error']}")


def run_all(args: argparse.Namespace, entrants: list[Entrant], rows: list[Row],
            files: dict[str, str]) -> None:
    for e in entrants:
        e.results = {r.key: [None] * args.repeat for r in rows}
        e.errors = {r.key: [] for r in rows}

    def measure(rep: int, member: tuple[Row, Entrant]) -> str:
        row, e = member
        spec = {"kind": "timed", "participant": e.name, "row": row.key, "files": files,
                "loop": args.loop, "seconds": args.seconds, "warmup": args.warmup}
        try:
            result = e.side.run(spec, 60 + 20 * args.seconds)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            harness.note_failure(e.errors[row.key], str(exc))
            return f"ERROR {exc}"
        e.results[row.key][rep] = result
        return f"{result['ops_per_s']:,.0f} ops/s, {result['cpu_us_per_op']:.1f} us CPU/op"

    groups = [[(row, e) for e in entrants if e.runs(row.key)] for row in rows]
    harness.run_interleaved(args.repeat, [g for g in groups if g], measure,
                            lambda m: f"{m[0].key} {m[1].name}", args.quiet)


# =============================================================================
# aggregation and report
# =============================================================================

KEYS = ("ops_per_s", "cpu_us_per_op", "p50_us", "p99_us", "max_stall_ms", "workers_active")


def aggregate(entrants: list[Entrant], rows: list[Row]) -> list[dict[str, Any]]:
    by_name = {e.name: e for e in entrants}
    ours = by_name.get(OURS)
    out = []
    for row in rows:
        cells: dict[str, Any] = {}
        for e in entrants:
            if not e.runs(row.key):
                continue
            res = e.results[row.key]
            cell: dict[str, Any] = {k: stats(harness.field_values(res, k)) for k in KEYS}
            cell["errors"] = e.errors[row.key]
            cell["warm"] = [r["warm"] for r in res if r is not None and "warm" in r]
            if ours is not None and e is not ours and ours.runs(row.key):
                cell["ours_ratio"] = stats(paired_ratios(ours.results[row.key], res,
                                                         "ops_per_s"))
                cell["ours_cpu_ratio"] = stats(paired_ratios(ours.results[row.key], res,
                                                             "cpu_us_per_op"))
            twin = by_name.get(e.participant.twin or "")
            if twin is not None and twin.runs(row.key):
                cell["twin_ratio"] = stats(paired_ratios(res, twin.results[row.key],
                                                         "ops_per_s"))
            cells[e.name] = cell
        peers = [n for n, c in cells.items() if PARTICIPANTS[n].group != "ours" and
                 c.get("ops_per_s")]
        best = max(peers, key=lambda n: cells[n]["ops_per_s"]["median"], default=None)
        out.append({"row": row.key, "workload": row.workload, "concurrency": row.concurrency,
                    "cells": cells, "best_peer": best,
                    "ours_to_best": cells[best].get("ours_ratio") if best else None})
    return out


def med(cell: dict[str, Any] | None, key: str) -> float | None:
    s = (cell or {}).get(key)
    return s["median"] if s else None


def blocking_note(cell: dict[str, Any], row: Row, seconds: float) -> str:
    """Whether the participant kept the loop to itself (its operations never suspended)."""
    notes = []
    active = med(cell, "workers_active")
    if active is not None and active < row.concurrency:
        notes.append(f"{active:.0f}/{row.concurrency} workers active")
    stall = med(cell, "max_stall_ms")
    if stall is not None and stall >= 0.5 * seconds * 1e3:
        notes.append(f"blocks the loop: 1 ms ticker starved {stall:.0f} ms")
    return ", ".join(notes)


def row_title(row: Row) -> str:
    return f"{benchlib.WORKLOADS[row.workload].description}, c={row.concurrency}"


def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fp:
            model = next(line.split(":", 1)[1].strip() for line in fp
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({model}), Linux {platform.release()}, "
            f"load average at the end {load}")


def print_report(meta: dict[str, Any], entrants: list[Entrant], rows: list[Row],
                 agg: list[dict[str, Any]]) -> str:
    out = ["", f"peers benchmark, {meta['date']}", machine_line(),
           (f"interpreter: {meta['python_version']} ({meta['python']}); loop: {meta['loop']}; "
           f"data on {meta['fstype']} ({meta['data_dir']})"),
           (f"runs: {meta['repeat']} x {meta['seconds']} s per participant and row "
           f"(+{meta['warmup']} s warm-up), fresh subprocess each, interleaved and alternating; "
           "medians [min-max] over repeats; ours/x = ops/s of ours (AsyncioContext()) over x, "
           "run by run"), "", "participants:"]
    for e in entrants:
        where = e.info.get("file", "")
        if e.participant.adapter == "caio" and e.info.get("caio"):
            where += f"; backend {e.participant.arg}"
            if e.participant.arg == "default":
                where += f" = {e.info['caio']['default']}"
        state = f"NOT RUN ({e.error})" if e.error else f"{e.info.get('version')}  {where}"
        out.append(f"  {e.name:<17} {e.participant.title:<34} {state}")

    failed = [(e, key, v) for e in entrants for key, v in e.verified.items() if not v["ok"]]
    out += ["", "verification (reads against os.pread, writes read back with os.pread): " +
            ("all passed" if not failed else f"{len(failed)} failed, not timed:")]
    for e, key, v in failed:
        out.append(f"  {e.name} {key}: {v['error']}")

    by_row = {a["row"]: a for a in agg}
    for row in rows:
        a = by_row[row.key]
        body = []
        for e in entrants:
            cell = a["cells"].get(e.name)
            if cell is None:
                why = "not run" if e.error else \
                    "failed verification" if e.verified.get(row.key) else "-"
                body.append([e.name, why, "", "", "", "", "", ""])
                continue
            note = blocking_note(cell, row, meta["seconds"])
            if cell["errors"]:
                note = (note + "; " if note else "") + f"failed runs: {cell['errors'][0]}"
            if cell.get("twin_ratio"):
                note = f"{fmt_stat(cell['twin_ratio'], ratio=True)} vs " \
                       f"{e.participant.twin}" + ("; " + note if note else "")
            body.append([e.name, fmt_stat(cell.get("ops_per_s")),
                         fmt_num(med(cell, "cpu_us_per_op")), fmt_num(med(cell, "p50_us")),
                         fmt_num(med(cell, "p99_us")), fmt_num(med(cell, "max_stall_ms")),
                         fmt_stat(cell.get("ours_ratio"), ratio=True), note])
        out += ["", f"== {row_title(row)} =="]
        out += harness.render_table(
            ["participant", "ops/s", "CPU us/op", "p50 us", "p99 us", "stall ms", "ours/x",
             "note"], body, "lrrrrrrl")

    out += ["", "== summary: ours (AsyncioContext()) against the best peer of each row =="]
    body = []
    for row in rows:
        a = by_row[row.key]
        o = a["cells"].get(OURS)
        best = a["best_peer"]
        b = a["cells"].get(best) if best else None
        body.append([row.key, fmt_num(med(o, "ops_per_s")), fmt_num(med(o, "cpu_us_per_op")),
                     best or "-", fmt_num(med(b, "ops_per_s")), fmt_num(med(b, "cpu_us_per_op")),
                     fmt_stat(a["ours_to_best"], ratio=True)])
    out += harness.render_table(["row", "ours ops/s", "ours CPU us/op", "best peer",
                                 "its ops/s", "its CPU us/op", "ours/best"], body, "lrrlrrr")

    others = [e for e in entrants if e.name != OURS and any(e.name in a["cells"] for a in agg)]
    if others and any(OURS in a["cells"] for a in agg):
        out += ["", ("== ours/x: ops/s of ours (AsyncioContext()) over x, median of paired runs; "
                "CPU us/op of x in brackets ==")]
        body = []
        for e in others:
            line = [e.name]
            for row in rows:
                c = by_row[row.key]["cells"].get(e.name)
                ratio = (c or {}).get("ours_ratio")
                line.append(f"{ratio['median']:.2f}x ({fmt_num(med(c, 'cpu_us_per_op'))})"
                            if ratio else "-")
            body.append(line)
        ours_line = ["(ours CPU us/op)"] + [fmt_num(med(by_row[r.key]["cells"].get(OURS),
                                                        "cpu_us_per_op")) for r in rows]
        out += harness.render_table(["x", *(r.key for r in rows)], [*body, ours_line],
                                    "l" + "r" * len(rows))

    warm = [(f"{row.key} {name}", w) for row in rows
            for name, c in by_row[row.key]["cells"].items() for w in c["warm"]]
    out.append("")
    out += harness.page_cache_lines(warm)
    return harness.emit_report(out, meta["wall_s"])


def make_plot(agg: list[dict[str, Any]], names: list[str], path: str) -> bool:
    """Bars: ops/s of every participant, relative to the best peer of each row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(agg)), 5.0))
    width = 0.8 / max(len(names), 1)
    colors = plt.get_cmap("tab20").colors
    for i, name in enumerate(names):
        ys = []
        for a in agg:
            best = med(a["cells"].get(a["best_peer"]), "ops_per_s") if a["best_peer"] else None
            mine = med(a["cells"].get(name), "ops_per_s")
            ys.append(mine / best if mine and best else 0.0)
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(agg))]
        ax.bar(xs, ys, width, label=PARTICIPANTS[name].title, color=colors[i % len(colors)],
               edgecolor="black" if name == OURS else None)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(agg)))
    ax.set_xticklabels([a["row"] for a in agg])
    ax.set_ylabel("ops/s relative to the best peer (median)")
    ax.set_title("page cache, asyncio: every participant against the best peer of each row")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# =============================================================================
# main
# =============================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="This project's caio against its peers "
                                "(ours/peer ratios, CPU per operation).")
    p.add_argument("--quick", action="store_true", help="1 repeat of 0.1 s per run")
    p.add_argument("--repeat", type=int, default=None, help="repeats (3)")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds per run (0.4)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first (0.05)")
    p.add_argument("--participants", default=None,
                   help=f"comma list of {','.join(PARTICIPANTS)} (all)")
    p.add_argument("--rows", "--workloads", dest="rows", default=None,
                   help=f"comma list of {','.join(ROWS)} (all; a workload name such as "
                        "rand4k picks its rows)")
    p.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"),
                   help="event loop (uvloop is installed into its own folder for --python)")
    p.add_argument("--python", default=None,
                   help="interpreter of every participant (default: a CPython 3.12, "
                        "python3.12 on PATH or ~/.pyenv/versions/3.12*)")
    p.add_argument("--ours-from-import", action="store_true",
                   help="our side is the caio that --python imports already (no build)")
    p.add_argument("--rebuild-ours", action="store_true",
                   help="rebuild our side for --python even if this source state was built")
    p.add_argument("--data-dir", default=None,
                   help="folder for the data files (default: a temporary one); not tmpfs")
    p.add_argument("--plot", default=None, help="write a bar chart (PNG, needs matplotlib)")
    harness.add_output_options(p, "write all results as JSON")
    args = p.parse_args(argv)
    defaults = {"repeat": 1, "seconds": 0.1, "warmup": 0.02} if args.quick else \
        {"repeat": 3, "seconds": 0.4, "warmup": 0.05}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.repeat < 1 or args.seconds <= 0:
        p.error("--repeat must be >= 1 and --seconds > 0")
    args.names = parse_str_list(args.participants) if args.participants else list(PARTICIPANTS)
    unknown = [n for n in args.names if n not in PARTICIPANTS]
    if unknown:
        p.error(f"unknown participants {', '.join(unknown)}")
    wanted = parse_str_list(args.rows) if args.rows else list(ROWS)
    args.row_list = [r for r in ROWS.values() if r.key in wanted or r.workload in wanted]
    if not args.row_list:
        p.error(f"no rows match {args.rows!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return harness.serve_worker(worker_main, args.worker,
                                    lambda exc: f"{type(exc).__name__}: {exc}")
    t0 = time.monotonic()
    args.python = find_python(args.python)
    entrants = prepare_entrants(args, args.names)
    rows: list[Row] = args.row_list
    with benchlib.data_directory(args.data_dir, prefix="caio-peers-") as data:
        files = benchlib.prepare_data_dir(data.path, big_size=0)
        make_offset_file(data.path / "verify.dat", VERIFY_FILE_SIZE)
        files["verify"] = str(data.path / "verify.dat")
        files["verify_write"] = str(data.path / "verify-write.dat")
        verify_all(args, entrants, rows, files)
        run_all(args, entrants, rows, files)
    agg = aggregate(entrants, rows)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **harness.machine_meta(), "fstype": data.fstype, "data_dir": data.description,
        "python": args.python,
        "python_version": next((e.info["python"] for e in entrants if e.info), "?"),
        "loop": args.loop, "repeat": args.repeat, "seconds": args.seconds,
        "warmup": args.warmup, "argv": sys.argv[1:] if argv is None else argv,
        "participants": {e.name: {"title": e.participant.title, "info": e.info,
                                  "error": e.error, "verified": e.verified}
                         for e in entrants},
        "wall_s": time.monotonic() - t0,
    }
    report = print_report(meta, entrants, rows, agg)
    if args.json_out:
        raw = [{"participant": e.name, "results": e.results, "errors": e.errors}
               for e in entrants]
        harness.write_json(args.json_out, meta, agg, raw, report)
    if args.plot and make_plot(agg, [e.name for e in entrants
                                     if any(e.name in a["cells"] for a in agg)], args.plot):
        log(f"wrote {args.plot}")
    return 1 if any(err for e in entrants for err in e.errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
