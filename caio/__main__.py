"""``python -m caio``: which backends work here, which one is used, and do they work.

Prints the versions involved, one line per backend (available or the reason it is
not), the backend ``import caio`` selects and why, then runs a short read/write
self-check through each available backend's ``AsyncioContext`` on a temporary file.
Exit status: 0 when every check passed, 1 otherwise.

``python -m caio bench [options]`` runs a quick benchmark of the available backends and
event loops instead (``caio/_bench.py``); ``python -m caio bench --help`` lists its options.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import caio
from caio import _bench
from caio._bench import filesystem_type as _filesystem_type

BACKENDS = ("linux_uring", "linux_aio", "thread_aio", "python_aio")
SELECTOR_NAMES = {
    "uring": "linux_uring",
    "linux": "linux_aio",
    "thread": "thread_aio",
    "python": "python_aio",
}
CHECK_TIMEOUT = 30.0  # seconds per backend

KiB = 1024
MiB = 1024 * KiB


class CheckFailedError(Exception):
    """A self-check step returned something other than expected."""


# --- environment ----------------------------------------------------------------------


def _python_description() -> str:
    text = f"{platform.python_implementation()} {platform.python_version()}"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
        gil = "enabled" if is_gil_enabled is None or is_gil_enabled() else "disabled"
        text += f" (free-threading build, GIL {gil})"
    return text


# --- backend report ---------------------------------------------------------------------


def _backend_module(name: str) -> ModuleType | None:
    module: ModuleType | None = getattr(caio, name)
    return module


def _print_backends() -> None:
    print("backends, in order of preference:")
    for name in BACKENDS:
        module = _backend_module(name)
        if module is not None:
            extra = ""
            sqpoll = getattr(module, "SQPOLL_ALLOWED", None)
            if sqpoll is not None:
                extra = "  (SQPOLL allowed)" if sqpoll else "  (SQPOLL not allowed)"
            print(f"  {name:<12} available{extra}")
            continue
        reason = caio._import_errors.get(name, "unknown reason")
        lines = reason.splitlines() or ["unknown reason"]
        print(f"  {name:<12} unavailable: {lines[0]}")
        for line in lines[1:]:
            print(f"  {'':<12} {line}")


def _selected_backend() -> str:
    return caio.preferred.__name__.rpartition(".")[2]


def _print_selection() -> None:
    selected = _selected_backend()
    requested = os.environ.get("CAIO_IMPL", "")
    defaults_file = caio._DEFAULT_IMPLEMENTATION_FILE

    if caio._selected_by == "CAIO_IMPL":
        why = f"CAIO_IMPL={requested}"
    elif caio._selected_by == "default_implementation":
        why = f"first valid line of {defaults_file}"
    else:
        why = "first available"
        if requested:
            names = ", ".join(
                short for short, full in SELECTOR_NAMES.items()
                if _backend_module(full) is not None
            )
            why += f"; CAIO_IMPL={requested!r} ignored, use one of: {names}"
        elif defaults_file.is_file():
            why += f"; {defaults_file} names no available backend"
    print(f"default: {selected} ({why})")


# --- self-check -------------------------------------------------------------------------


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def _describe_value(value: Any) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return repr(value)


async def _exercise(adapter: ModuleType, path: str) -> None:
    head = os.urandom(64 * KiB)
    tail = os.urandom(4 * KiB)
    chunks = [os.urandom(4 * KiB) for _ in range(16)]
    chunks_at = 256 * KiB

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        ctx = adapter.AsyncioContext(max_requests=64)
        try:
            n = await ctx.write(head, fd, 0)
            _expect(n == len(head), f"write of 64 KiB at 0 returned {n!r}")
            n = await ctx.write(tail, fd, MiB)
            _expect(n == len(tail), f"write of 4 KiB at 1 MiB returned {n!r}")

            data = await ctx.read(len(head), fd, 0)
            _expect(data == head, f"read of 64 KiB at 0 returned other data ({_describe_value(data)})")
            data = await ctx.read(len(tail), fd, MiB)
            _expect(data == tail, f"read of 4 KiB at 1 MiB returned other data ({_describe_value(data)})")

            data = await ctx.read(8 * KiB, fd, MiB)
            _expect(data == tail, f"8 KiB read at 1 MiB (4 KiB before EOF) returned {_describe_value(data)}")
            data = await ctx.read(4 * KiB, fd, 512 * KiB)
            _expect(data == bytes(4 * KiB), "read of the hole at 512 KiB is not all zeros")

            written = await asyncio.gather(*(
                ctx.write(chunk, fd, chunks_at + i * len(chunk)) for i, chunk in enumerate(chunks)
            ))
            _expect(all(n == 4 * KiB for n in written), "16 concurrent 4 KiB writes came up short")
            read_back = await asyncio.gather(*(
                ctx.read(4 * KiB, fd, chunks_at + i * 4 * KiB) for i in range(len(chunks))
            ))
            _expect(read_back == chunks, "16 concurrent 4 KiB reads returned other data")

            await ctx.fsync(fd)
            await ctx.fdsync(fd)

            data = await ctx.read(4 * KiB, fd, 2 * MiB)
            _expect(data == b"", f"read past EOF gave {_describe_value(data)}, expected b''")
        finally:
            ctx.close()

        # Independent of the backend: the bytes must really be in the file.
        _expect(os.pread(fd, len(head), 0) == head, "file content at 0 differs (os.pread)")
        _expect(os.pread(fd, len(tail), MiB) == tail, "file content at 1 MiB differs (os.pread)")
    finally:
        os.close(fd)


async def _exercise_with_timeout(adapter: ModuleType, path: str) -> None:
    await asyncio.wait_for(_exercise(adapter, path), CHECK_TIMEOUT)


def _check_backend(name: str, directory: str) -> tuple[bool, float, str]:
    adapter: ModuleType = getattr(caio, f"{name}_asyncio")
    fd, path = tempfile.mkstemp(prefix=f"caio-check-{name}-", dir=directory)
    os.close(fd)
    started = time.perf_counter()
    try:
        asyncio.run(_exercise_with_timeout(adapter, path))
    except CheckFailedError as exc:
        return False, time.perf_counter() - started, str(exc)
    except asyncio.TimeoutError:
        return False, time.perf_counter() - started, f"timed out after {CHECK_TIMEOUT:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return True, time.perf_counter() - started, ""


# --- command line -------------------------------------------------------------------------


def _backend_name(value: str) -> str:
    name = SELECTOR_NAMES.get(value, value)
    if name not in BACKENDS:
        choices = ", ".join((*BACKENDS, *SELECTOR_NAMES))
        raise argparse.ArgumentTypeError(f"unknown backend {value!r} (choose from {choices})")
    return name


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m caio",
        description="Show which caio backends work here and run a short self-check.",
        epilog="python -m caio bench [--help]: a quick benchmark of the backends instead.",
    )
    parser.add_argument(
        "--dir",
        help="directory for the temporary test file (default: a new tempfile.mkdtemp())",
    )
    parser.add_argument(
        "--backend",
        type=_backend_name,
        metavar="NAME",
        help="check only this backend (linux_uring, linux_aio, thread_aio, python_aio, "
             "or uring, linux, thread, python)",
    )
    args = parser.parse_args(argv)
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir!r} is not a directory")
    return args


# --- bench ----------------------------------------------------------------------------


def _backend_list(value: str) -> list[str]:
    return [_backend_name(item.strip()) for item in value.split(",") if item.strip()]


def _loop_list(value: str) -> list[str]:
    loops = [item.strip() for item in value.split(",") if item.strip()]
    for loop in loops:
        if loop not in _bench.LOOPS:
            raise argparse.ArgumentTypeError(
                f"unknown loop {loop!r} (choose from {', '.join(_bench.LOOPS)})")
        reason = _bench.loop_unavailable(loop)
        if reason is not None:
            raise argparse.ArgumentTypeError(f"cannot measure {loop}: {reason}")
    return loops


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number
    return parse


def _parse_bench_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m caio bench",
        description="Measure each available backend's adapter on each event loop: "
                    "4 KiB random and 1 MiB sequential reads from the page cache, 4 KiB "
                    "writes. Progress on stderr, results as a table on stdout.",
    )
    parser.add_argument("--seconds", type=_positive(float), default=3.0,
                        help="measured time in all, shared equally by the rows, each after a "
                             "warm-up a fifth as long (default 3)")
    parser.add_argument("--backend", type=_backend_list, metavar="NAMES",
                        help="comma list of backends (default: every available one): "
                             "linux_uring, linux_aio, thread_aio, python_aio, "
                             "or uring, linux, thread, python")
    parser.add_argument("--loop", type=_loop_list, metavar="NAMES",
                        help=f"comma list of event loops (default: those installed of "
                             f"{', '.join(_bench.LOOPS)})")
    parser.add_argument("--size", type=_positive(int), default=32, metavar="MIB",
                        help="size of the file read, in MiB (default 32; the file "
                             f"overwritten is at most {_bench.WRITE_FILE_MAX // MiB} MiB)")
    parser.add_argument("--concurrency", type=_positive(int), default=8,
                        help="operations in flight at a time (default 8)")
    parser.add_argument("--dir",
                        help="directory for the temporary data files (default: the system's "
                             "temporary directory, or the current one if that is in memory)")
    args = parser.parse_args(argv)
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir!r} is not a directory")
    return args


def _bench_base_directory(requested: str | None) -> str:
    """--dir, else the temporary directory unless it is in memory (tmpfs is common
    for /tmp, and its "page cache" is all there is), else the current directory."""
    if requested is not None:
        return requested
    default = tempfile.gettempdir()
    if _bench.is_memory_filesystem(_filesystem_type(default)):
        here = os.getcwd()
        if os.access(here, os.W_OK) and not _bench.is_memory_filesystem(_filesystem_type(here)):
            return here
    return default


def _bench_main(argv: list[str]) -> int:
    args = _parse_bench_args(argv)
    available = [name for name in BACKENDS if _backend_module(name) is not None]
    names = available
    if args.backend is not None:
        names = [name for name in dict.fromkeys(args.backend) if name in available]
        for name in dict.fromkeys(args.backend):
            if name not in available:
                reason = caio._import_errors.get(name, "unknown reason").splitlines()
                print(f"bench: {name} is unavailable ({reason[0] if reason else ''}); skipped",
                      file=sys.stderr)
    if not names:
        print("bench: no backend to measure", file=sys.stderr)
        return 1
    loops = list(dict.fromkeys(args.loop)) if args.loop else _bench.available_loops()

    directory = tempfile.mkdtemp(prefix="caio-bench-", dir=_bench_base_directory(args.dir))
    fs_type = _filesystem_type(directory)
    if _bench.is_memory_filesystem(fs_type):
        print(f"bench: warning: {directory} is on {fs_type}, not a disk filesystem: the "
              "figures are not those of files on disk (use --dir)", file=sys.stderr)
    try:
        files = _bench.create_files(directory, args.size * MiB)
        rows = len(names) * len(loops) * len(_bench.WORKLOADS)
        print(f"caio {caio.__version__}, {_python_description()}, {platform.system()} "
              f"{platform.release()} {platform.machine()}, {os.cpu_count()} CPUs")
        print(f"files in {directory}" + (f" ({fs_type})" if fs_type else "")
              + f": {args.size} MiB read, {files.write_size // MiB} MiB written; "
              f"concurrency {args.concurrency}; {args.seconds / rows * 1000:.0f} ms per row")
        print(flush=True)
        progress = _bench.Progress(rows)
        try:
            results = _bench.run(names, loops, files, args.seconds, args.concurrency, progress)
        finally:
            progress.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _bench.print_table(results)
    return 1 if any(r.error is not None for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["bench"]:
        return _bench_main(argv[1:])
    args = _parse_args(argv)

    print(f"caio {caio.__version__} from {Path(caio.__file__).parent}")
    print(f"Python {_python_description()}")
    print(f"{platform.system()} {platform.release()} {platform.machine()}")
    print()
    _print_backends()
    _print_selection()
    print()

    if args.backend is not None:
        if _backend_module(args.backend) is None:
            print(f"self-check: {args.backend} is unavailable, nothing to check")
            return 1
        names = [args.backend]
    else:
        names = [name for name in BACKENDS if _backend_module(name) is not None]

    own_directory = args.dir is None
    directory = tempfile.mkdtemp(prefix="caio-check-") if own_directory else args.dir
    fs_type = _filesystem_type(directory)
    print(f"self-check in {directory}" + (f" ({fs_type})" if fs_type else "") + ":")

    failures = 0
    try:
        for name in names:
            ok, elapsed, reason = _check_backend(name, directory)
            status = "PASS" if ok else "FAIL"
            line = f"  {name:<12} {status} {elapsed * 1000:8.1f} ms"
            if not ok:
                failures += 1
                line += f"  {reason}"
            print(line, flush=True)
    finally:
        if own_directory:
            shutil.rmtree(directory, ignore_errors=True)

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
