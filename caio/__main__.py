"""``python -m caio``: which backends work here, which one is used, and do they work.

Prints the versions involved, one line per backend (available or the reason it is
not), the backend ``import caio`` selects and why, then runs a short read/write
self-check through each available backend's ``AsyncioContext`` on a temporary file.
Exit status: 0 when every check passed, 1 otherwise.
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
from pathlib import Path
from types import ModuleType
from typing import Any

import caio

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


def _filesystem_type(directory: str) -> str | None:
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


def main(argv: list[str] | None = None) -> int:
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
