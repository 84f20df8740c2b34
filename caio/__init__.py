"""Asynchronous file I/O for Python: io_uring, Linux AIO, thread pool and pure Python.

Importing the package finds which backends work on this machine, in order of
preference ``linux_uring``, ``linux_aio``, ``thread_aio``, ``python_aio``, and
re-exports ``Context``, ``Operation`` and ``AsyncioContext`` of the first one. The
choice can be overridden with the ``CAIO_IMPL`` environment variable (``uring``,
``linux``, ``thread`` or ``python``) or, when that is unset, by the first valid line of
a ``default_implementation`` file next to this module. Run ``python -m caio`` to see
what is available here and why.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from importlib.metadata import Distribution
from pathlib import Path
from types import ModuleType

from . import python_aio, python_aio_asyncio
from .abstract import AbstractContext, AbstractOperation
from .errors import OperationError, SubmitError

__version__ = Distribution.from_name("caio").version
__author__ = "caio-rs developers"

# Why a backend could not be imported: backend module name -> ImportError text.
_import_errors: dict[str, str] = {}


def _describe_import_error(exc: ImportError) -> str:
    return str(exc) or type(exc).__name__


linux_uring: ModuleType | None
linux_uring_asyncio: ModuleType | None
try:
    from . import linux_uring, linux_uring_asyncio
except ImportError as exc:
    linux_uring = linux_uring_asyncio = None
    _import_errors["linux_uring"] = _describe_import_error(exc)

linux_aio: ModuleType | None
linux_aio_asyncio: ModuleType | None
try:
    from . import linux_aio, linux_aio_asyncio
except ImportError as exc:
    linux_aio = linux_aio_asyncio = None
    _import_errors["linux_aio"] = _describe_import_error(exc)

thread_aio: ModuleType | None
thread_aio_asyncio: ModuleType | None
try:
    from . import thread_aio, thread_aio_asyncio
except ImportError as exc:
    thread_aio = thread_aio_asyncio = None
    _import_errors["thread_aio"] = _describe_import_error(exc)


variants: tuple[ModuleType, ...] = tuple(
    m for m in (linux_uring, linux_aio, thread_aio, python_aio) if m is not None
)
variants_asyncio: tuple[ModuleType, ...] = tuple(
    m
    for m in (linux_uring_asyncio, linux_aio_asyncio, thread_aio_asyncio, python_aio_asyncio)
    if m is not None
)

preferred: ModuleType = variants[0]
preferred_asyncio: ModuleType = variants_asyncio[0]

# How the backend was chosen, for ``python -m caio``:
# None (first available), "CAIO_IMPL" or "default_implementation".
_selected_by: str | None = None
_DEFAULT_IMPLEMENTATION_FILE = Path(__file__).resolve().parent / "default_implementation"


def _read_default_implementation(valid: Mapping[str, object]) -> str | None:
    """First stripped line of the default_implementation file naming a valid backend."""
    try:
        with _DEFAULT_IMPLEMENTATION_FILE.open("r", encoding="utf-8") as fp:
            for raw_line in fp:
                line = raw_line.strip()
                if not line or line.startswith("#"):
                    continue
                if line in valid:
                    return line
    except (OSError, UnicodeDecodeError):
        # An unreadable file is treated like a file without a valid line.
        return None
    return None


def __select_implementation() -> None:
    global preferred, preferred_asyncio, _selected_by

    implementations = {
        "uring": (linux_uring, linux_uring_asyncio),
        "linux": (linux_aio, linux_aio_asyncio),
        "thread": (thread_aio, thread_aio_asyncio),
        "python": (python_aio, python_aio_asyncio),
    }
    available = {
        name: pair for name, pair in implementations.items() if None not in pair
    }

    requested = os.getenv("CAIO_IMPL")
    selected_by = "CAIO_IMPL"

    if not requested:
        requested = None
        if _DEFAULT_IMPLEMENTATION_FILE.is_file():
            requested = _read_default_implementation(available)
            selected_by = "default_implementation"
    elif requested not in available:
        warnings.warn(
            f"CAIO_IMPL contains unsupported value '{requested}'. "
            f"Use one of {tuple(available)}",
            RuntimeWarning,
            stacklevel=2,
        )
        return

    if requested is None:
        return

    native, adapter = available[requested]
    assert native is not None and adapter is not None
    preferred, preferred_asyncio = native, adapter
    _selected_by = selected_by


__select_implementation()

Context = preferred.Context
Operation = preferred.Operation
AsyncioContext = preferred_asyncio.AsyncioContext

__all__ = (
    "AbstractContext",
    "AbstractOperation",
    "AsyncioContext",
    "Context",
    "Operation",
    "OperationError",
    "SubmitError",
    "__author__",
    "__version__",
    "linux_aio",
    "linux_aio_asyncio",
    "linux_uring",
    "linux_uring_asyncio",
    "python_aio",
    "python_aio_asyncio",
    "thread_aio",
    "thread_aio_asyncio",
    "variants",
    "variants_asyncio",
)
