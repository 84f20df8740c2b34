"""The measuring machinery the benchmark scripts share.

- process counters: CPU time of the whole process, CPU per operation, RSS, fds, threads;
- which ``caio`` (and which event loops, asyncio's and trio) this interpreter has, and
  running a coroutine function on one of them;
- the worker protocol: a measurement runs in a fresh subprocess (a script re-run with a
  hidden ``--worker SPEC`` argument) under a given ``PYTHONPATH`` and hands its result
  back as one marked JSON line on stdout;
- the two sides, "ours" (this project, optionally a frozen snapshot) and "theirs" (caio
  0.12.10 from a ``pip install --target`` folder);
- paired, alternating, interleaved repeats;
- statistics (median and [min-max] over repeats, ratios of paired runs), table
  rendering and the JSON output file.

It has no workloads (those live in ``benchlib.py`` and the scripts) and imports nothing
from them. Nothing here imports ``caio`` at module level: the subprocess's
``PYTHONPATH`` decides which ``caio`` a worker gets.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import ctypes.util
import gc
import json
import math
import mmap
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

KiB = 1024
MiB = 1024 * KiB

UPSTREAM_VERSION = "0.12.10"
RESULT_MARK = "@@RESULT@@ "

# Backend short names as the scripts and the pytest suite spell them.
BACKEND_MODULES = {
    "uring": "linux_uring_asyncio",
    "linux": "linux_aio_asyncio",
    "thread": "thread_aio_asyncio",
    "python": "python_aio_asyncio",
}
MODULE_TO_BACKEND = {v: k for k, v in BACKEND_MODULES.items()}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ process counters

_libc: Any = None


def libc() -> Any:
    """libc through ctypes (mmap/mincore for page-cache checks, malloc_trim)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long]
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.restype = ctypes.c_int
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _libc = lib
    return _libc


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread, io_uring's included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Stopwatch:
    """Wall-clock and process CPU time of a measured window, from its creation on."""

    def __init__(self) -> None:
        self.cpu_start = cpu_seconds()
        self.start = time.perf_counter()

    def read(self) -> tuple[float, float]:
        """(elapsed seconds, CPU seconds) so far."""
        return time.perf_counter() - self.start, cpu_seconds() - self.cpu_start


def cpu_us_per_op(cpu_s: float, ops: int) -> float | None:
    return cpu_s / ops * 1e6 if ops else None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fp:
            return int(fp.read().split()[1]) * mmap.PAGESIZE / MiB
    except (OSError, ValueError, IndexError):
        return float("nan")


def anon_rss_bytes() -> int:
    """Resident anonymous memory: the heap, stacks and mappings a leak would grow (the
    pages of shared libraries, first touched late by some code path, do not count)."""
    with open("/proc/self/status", encoding="ascii") as fp:
        for line in fp:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def settled_anon_rss_bytes() -> int:
    """``anon_rss_bytes`` after ``gc.collect()`` and ``malloc_trim(0)``, so that free heap
    the allocator keeps does not count."""
    gc.collect()
    lib = libc()
    if hasattr(lib, "malloc_trim"):
        lib.malloc_trim(0)
    return anon_rss_bytes()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    # includes the kernel's io_uring threads (iou-sqp-*, iou-wrk-*), which belong to us
    return len(os.listdir("/proc/self/task"))


# ----------------------------------------------------------- caio and loops of this process


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def available_loops(with_trio: bool = False) -> list[str]:
    """asyncio, and uvloop and (``with_trio``) trio when installed."""
    loops = ["asyncio"]
    if _importable("uvloop"):
        loops.append("uvloop")
    if with_trio and _importable("trio"):
        loops.append("trio")
    return loops


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


T = TypeVar("T")


def run_on_loop(name: str, main: Callable[[], Awaitable[T]]) -> T:
    """``await main()`` on a new event loop of that name ("trio": under ``trio.run``)."""
    if name == "trio":
        import trio

        return trio.run(main)
    loop = new_loop(name)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def caio_backends() -> dict[str, Any]:
    """Asyncio adapter modules of the imported ``caio``, by short name.

    Discovered from ``caio.variants_asyncio`` so backends that are absent on one side
    (or not built yet) simply do not show up.
    """
    import caio

    found = {}
    for module in getattr(caio, "variants_asyncio", ()):
        short = module.__name__.rsplit(".", 1)[-1]
        found[MODULE_TO_BACKEND.get(short, short)] = module
    return found


def caio_info() -> dict[str, Any]:
    import caio

    # caio.AsyncioContext is ours a subclass of the selected backend's adapter (it can fall
    # back when a limit is hit); caio 0.12's is the adapter itself.
    default_cls = next(c for c in caio.AsyncioContext.__mro__ if c.__module__ != "caio")
    default_mod = default_cls.__module__.rsplit(".", 1)[-1]
    try:
        from importlib.metadata import version

        dist_version = version("caio")
    except Exception:  # noqa: BLE001 - metadata may be missing for a --target install
        dist_version = None
    return {
        "file": os.path.dirname(os.path.abspath(caio.__file__)),
        "version": getattr(caio, "__version__", None) or dist_version,
        "backends": sorted(caio_backends()),
        "default": MODULE_TO_BACKEND.get(default_mod, default_mod),
    }


async def close_context(ctx: Any) -> None:
    """``ctx.close()``, awaited where it returns a coroutine."""
    result = ctx.close()
    if asyncio.iscoroutine(result):
        await result


def trio_backends() -> tuple[list[str], str | None]:
    """Short names of the backends ``caio.trio_adapter`` has, or why it is not there."""
    try:
        from caio import trio_adapter
    except ImportError as exc:
        return [], f"caio.trio_adapter is not importable ({type(exc).__name__}: {exc})"
    names = [MODULE_TO_BACKEND.get(f"{name}_asyncio", name)
             for name in getattr(trio_adapter, "TRIO_CONTEXTS", {})]
    return sorted(names), None


def probe() -> dict[str, Any]:
    """What a side's subprocess sees: its caio, the file APIs, event loops, Python."""
    info = caio_info()
    for module in ("aiofiles", "anyio"):
        info[module] = _importable(module)
    info["loops"] = available_loops(with_trio=True)
    info["trio_backends"], info["trio_error"] = trio_backends()
    info["python"] = sys.version.split()[0]
    info["aligned_buffer"] = aligned_buffer_factory() is not None
    return info


# CAIO_BENCH_ALIGNED_STANDIN=1: an anonymous mmap (page-aligned) stands in for
# caio.aligned_buffer, so that the O_DIRECT row is exercised before that helper exists.
ALIGNED_STANDIN_ENV = "CAIO_BENCH_ALIGNED_STANDIN"


def aligned_buffer_factory() -> Any:
    """``caio.aligned_buffer`` (size -> writable, page-aligned buffer), the stand-in, or None."""
    import caio

    factory = getattr(caio, "aligned_buffer", None)
    if factory is None and os.environ.get(ALIGNED_STANDIN_ENV) == "1":
        import mmap

        return lambda size: mmap.mmap(-1, size)
    return factory


# ------------------------------------------------------------------------ worker protocol

WorkerMain = Callable[[dict[str, Any]], dict[str, Any]]


def serve_worker(main: WorkerMain, arg: str,
                 describe_error: Callable[[BaseException], str] | None = None) -> int:
    """The subprocess side: run ``main(spec)`` (or the probe) and print the result line.

    With ``describe_error`` an exception becomes ``{"fatal": describe_error(exc)}``;
    without, it ends the process with a traceback and the driver reports its last line.
    """
    spec = json.loads(arg)
    try:
        result = probe() if spec.get("kind") == "probe" else main(spec)
    except Exception as exc:
        if describe_error is None:
            raise
        result = {"fatal": describe_error(exc)}
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def run_worker(script: Path, env: dict[str, str], spec: dict[str, Any],
               timeout: float, python: str = sys.executable) -> dict[str, Any]:
    """The driver side: ``python script --worker SPEC`` in a fresh interpreter; its result."""
    cmd = [python, str(script), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(HERE), check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            if "fatal" in result:
                raise RuntimeError(result["fatal"])
            return result
    raise RuntimeError(f"worker exited with {proc.returncode}: {last_line(proc.stderr)}")


def last_line(*outputs: str) -> str:
    """The last line of the first of ``outputs`` that has one: what a failed subprocess
    said last, for an error message."""
    for text in outputs:
        lines = text.strip().splitlines()
        if lines:
            return lines[-1]
    return "(no output)"


# ---------------------------------------------------------------------------------- sides


@dataclass
class Side:
    name: str  # "ours" / "theirs"
    script: Path  # what its workers run
    env: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    python: str = sys.executable  # the interpreter its workers run on

    @property
    def title(self) -> str:
        return "ours" if self.name == "ours" else f"caio {UPSTREAM_VERSION}"

    def run(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        return run_worker(self.script, self.env, spec, timeout, self.python)

    def probe(self) -> None:
        self.info = self.run({"kind": "probe"}, timeout=60)


def side_env(prepend: list[str], drop: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    drop_real = {os.path.realpath(p) for p in drop}
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    old = [p for p in old if os.path.realpath(p) not in drop_real]
    env["PYTHONPATH"] = os.pathsep.join(prepend + old)
    if not env["PYTHONPATH"]:
        del env["PYTHONPATH"]
    return env


def upstream_dir(arg: str | None) -> Path:
    """``--upstream-dir`` (or ``$CAIO_UPSTREAM_DIR``), else benchmarks/.upstream/caio-V."""
    return Path(arg or HERE / ".upstream" / f"caio-{UPSTREAM_VERSION}").resolve()


def ensure_upstream(folder: Path, version: str) -> None:
    marker = folder / "caio" / "__init__.py"
    dist = list(folder.glob(f"caio-{version}.dist-info"))
    if marker.exists() and dist:
        return
    pip_install_target(sys.executable, f"caio=={version}", folder)


def pip_install_target(python: str, requirement: str, folder: Path,
                       env: dict[str, str] | None = None) -> None:
    """``python -m pip install --no-deps --target folder requirement`` (a PyPI name or a
    source folder); CalledProcessError when pip fails."""
    log(f"installing {requirement} into {folder} ...")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--upgrade", "--target", str(folder), requirement]
    subprocess.run(cmd, check=True, env=env)


def prepare_ours(script: Path, upstream: Path, extra_paths: list[str], snapshot: bool) -> Side:
    """Our side, probed. With ``snapshot`` it imports a frozen copy of our package, so
    edits or rebuilds of the working tree during the run cannot mix two versions into one
    table."""
    ours = Side("ours", script, side_env(extra_paths, [str(upstream)]))
    ours.probe()
    if os.path.realpath(ours.info["file"]).startswith(str(upstream)):
        raise SystemExit(f"our side imports caio from the upstream folder {ours.info['file']}")
    if snapshot:
        source = ours.info["file"]
        snapshot_dir = Path(tempfile.mkdtemp(prefix="caio-ours-"))
        atexit.register(shutil.rmtree, snapshot_dir, True)
        shutil.copytree(source, snapshot_dir / "caio",
                        ignore=shutil.ignore_patterns("__pycache__"))
        ours.env = side_env([str(snapshot_dir), *extra_paths], [str(upstream)])
        ours.probe()
        if not os.path.realpath(ours.info["file"]).startswith(str(snapshot_dir.resolve())):
            raise SystemExit(f"snapshot of {source} did not load: got {ours.info['file']}")
        ours.info["file"] = f"snapshot of {source}"
    return ours


def prepare_theirs(script: Path, upstream: Path) -> Side:
    """caio 0.12.10 from its ``pip install --target`` folder (installed if missing), probed."""
    ensure_upstream(upstream, UPSTREAM_VERSION)
    theirs = Side("theirs", script, side_env([str(upstream)], []))
    theirs.probe()
    if theirs.info["version"] != UPSTREAM_VERSION or \
            not os.path.realpath(theirs.info["file"]).startswith(str(upstream)):
        raise SystemExit(f"upstream side loaded caio {theirs.info['version']} from "
                         f"{theirs.info['file']}, expected {UPSTREAM_VERSION} from "
                         f"{upstream}")
    return theirs


def prepare_sides(script: Path, args: argparse.Namespace,
                  extra_paths: list[str]) -> dict[str, Side]:
    """"ours" and, unless ``--no-upstream``, "theirs" (options of ``add_side_options``)."""
    upstream = upstream_dir(args.upstream_dir)
    sides = {"ours": prepare_ours(script, upstream, extra_paths, snapshot=not args.no_snapshot)}
    _log_side(sides["ours"])
    if not args.no_upstream:
        sides["theirs"] = prepare_theirs(script, upstream)
        _log_side(sides["theirs"])
    return sides


def _log_side(side: Side) -> None:
    log(f"{side.name}: caio {side.info['version']} from {side.info['file']}, backends "
        f"{side.info['backends']}, default {side.info['default']}")


def add_side_options(p: argparse.ArgumentParser, no_upstream_help: str) -> None:
    p.add_argument("--no-upstream", action="store_true", help=no_upstream_help)
    p.add_argument("--upstream-dir", default=os.environ.get("CAIO_UPSTREAM_DIR"),
                   help=f"pip --target folder with caio {UPSTREAM_VERSION}; created if missing "
                        f"(default benchmarks/.upstream/caio-{UPSTREAM_VERSION})")
    p.add_argument("--no-snapshot", action="store_true",
                   help="import our caio from where it lives instead of a frozen copy taken "
                        "at start (the copy protects a run from concurrent rebuilds)")


def add_output_options(p: argparse.ArgumentParser, json_help: str) -> None:
    p.add_argument("--json", dest="json_out", default=None, help=json_help)
    p.add_argument("--quiet", action="store_true", help="no per-run progress on stderr")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)


def parse_int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# ------------------------------------------------------------------------------- schedule

Member = TypeVar("Member")


def run_interleaved(repeat: int, groups: Sequence[Sequence[Member]],
                    measure: Callable[[int, Member], str],
                    describe: Callable[[Member], str], quiet: bool) -> None:
    """Measure every member of every group ``repeat`` times.

    The members of a group (the sides of one configuration) run back to back, and their
    order reverses from one group to the next and from one repeat to the next, so slow
    drifts of a noisy machine hit every member alike. Repeats are interleaved: all groups
    once, then all again. ``measure(rep, member)`` runs one measurement, records it, and
    returns a one-line summary for the progress log on stderr.
    """
    total = sum(len(g) for g in groups) * repeat
    done = 0
    t_start = time.monotonic()
    for rep in range(repeat):
        for index, group in enumerate(groups):
            order = list(group)
            if (rep + index) % 2 == 1:
                order.reverse()
            for member in order:
                summary = measure(rep, member)
                done += 1
                if not quiet:
                    log(f"[{done}/{total} {time.monotonic() - t_start:5.0f}s] rep {rep + 1} "
                        f"{describe(member)}: {summary}")


def note_failure(failures: list[str], message: str) -> None:
    """Record a failed run's message once (the table says a run failed, not how often)."""
    if message not in failures:
        failures.append(message)


# ----------------------------------------------------------------------------- statistics

Results = Sequence["dict[str, Any] | None"]


def stats(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min, max and count of the values that are there (None and NaN are not)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def field_values(results: Results, key: str) -> list[float]:
    return [r[key] for r in results if r is not None and key in r]


def paired_ratios(a: Results, b: Results, key: str,
                  usable: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[float]:
    """``a[i][key] / b[i][key]`` for the repeats where both runs are there and usable."""
    out = []
    for ra, rb in zip(a, b):
        if ra is not None and rb is not None and rb.get(key) and usable(ra) and usable(rb):
            out.append(ra[key] / rb[key])
    return out


# --------------------------------------------------------------------------------- output


def fmt_num(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_stat(s: dict[str, float] | None, ratio: bool = False) -> str:
    """``median [min-max]`` (just the median for a single repeat)."""
    if not s:
        return "-"
    if ratio:
        core = f"{s['median']:.2f}x"
        rng = f"{s['min']:.2f}-{s['max']:.2f}"
    else:
        core = fmt_num(s["median"])
        rng = f"{fmt_num(s['min'])}-{fmt_num(s['max'])}"
    return core if s["n"] == 1 else f"{core} [{rng}]"


def render_table(headers: list[str], body: list[list[str]], align: str) -> list[str]:
    """Aligned text columns (``align``: one "l" or "r" a column); an empty row is a gap."""
    widths = [len(h) for h in headers]
    for r in body:
        if r:
            widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(cells: list[str]) -> str:
        out = []
        for cell, w, a in zip(cells, widths, align):
            out.append(cell.ljust(w) if a == "l" else cell.rjust(w))
        return "  ".join(out).rstrip()

    lines = [line(headers), line(["-" * w for w in widths])]
    lines += [line(r) if r else "" for r in body]
    return lines


def target_verdict(s: dict[str, float] | None, target: float) -> str:
    """Whether the median of ``s`` reaches ``target``."""
    return "-" if not s else ("met" if s["median"] >= target else "NOT met")


def add_section(out: list[str], title: str, lines: list[str]) -> None:
    """A titled block after a blank line; nothing at all without lines."""
    if lines:
        out += ["", title, *lines]


def page_cache_lines(warm: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What the residency checks before the runs found (``warm``: a run's label and its
    ``benchlib.warm_file`` report): one line when all were resident, else the misses."""
    if not warm:
        return []
    bad = [(label, w) for label, w in warm if not w.get("ok")]
    if not bad:
        fracs = [w["resident"] for _, w in warm if w.get("resident") is not None]
        methods = sorted({w["method"].split(" ")[0] for _, w in warm})
        return [(f"page cache: verified resident before every run ({len(warm)} runs, "
                f"{'/'.join(methods)}, min {min(fracs) * 100:.1f}%)")]
    out = [f"page cache: NOT fully resident in {len(bad)} of {len(warm)} runs:"]
    for label, w in bad[:10]:
        res = "unknown" if w.get("resident") is None else f"{w['resident'] * 100:.1f}%"
        out.append(f"  {label}: {res} ({w['method']})")
    return out


def emit_report(out: list[str], wall_s: float) -> str:
    """End a report with the wall time, print it, return its text."""
    out.append(f"total wall time: {wall_s:.0f} s")
    text = "\n".join(out)
    print(text, flush=True)
    return text


def machine_meta() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def sides_meta(sides: dict[str, Side]) -> dict[str, Any]:
    theirs = sides.get("theirs")
    return {"ours": sides["ours"].info, "theirs": theirs.info if theirs else None,
            "upstream_version": UPSTREAM_VERSION}


def write_json(path: str, meta: dict[str, Any], rows: list[dict[str, Any]],
               runs: list[dict[str, Any]], report: str) -> None:
    with open(path, "w", encoding="utf-8") as fp:
        json.dump({"meta": meta, "rows": rows, "runs": runs, "report": report}, fp, indent=1)
    log(f"wrote {path}")
