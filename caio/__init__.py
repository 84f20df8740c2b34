"""Asynchronous file I/O for Python: io_uring, Linux AIO, thread pool and pure Python.

Importing the package finds which backends work on this machine, in order of
preference ``linux_uring``, ``linux_aio``, ``thread_aio``, ``python_aio``, and
re-exports ``Context``, ``Operation`` and ``AsyncioContext`` of the first one. The
choice can be overridden with the ``CAIO_IMPL`` environment variable (``uring``,
``linux``, ``thread`` or ``python``) or, when that is unset, by the first valid line of
a ``default_implementation`` file next to this module. Run ``python -m caio`` to see
what is available here and why.

``caio.AsyncioContext`` is the selected backend's adapter, made to degrade: when a kernel
or process limit stops that backend (``fs.aio-max-nr``, ``RLIMIT_NOFILE``, locked memory,
io_uring disabled at run time...), it uses the next one in the order above and warns with
a ``ResourceLimitWarning`` that names the limit and how to raise it. The backends' own
adapters (``caio.linux_aio_asyncio.AsyncioContext``...) raise instead.
"""

from __future__ import annotations

import asyncio
import errno
import os
import warnings
from collections.abc import Mapping
from importlib.metadata import Distribution
from pathlib import Path
from types import ModuleType
from typing import Any

from . import python_aio, python_aio_asyncio
from ._aligned import aligned_buffer, direct_alignment
from ._rwflags import RWF_DSYNC, RWF_NOWAIT, RWF_SYNC
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


class ResourceLimitWarning(RuntimeWarning):
    """``caio.AsyncioContext()`` runs on a lower backend because a kernel or process limit
    stopped the preferred one; the message names the limit and how to raise it."""


# What a Context constructor fails with when a limit is hit (not a bad argument).
_LIMIT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EPERM, errno.EACCES,
    errno.ENOSYS,
})


def _hit_a_limit(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in _LIMIT_ERRNOS


def _backend_name(adapter: ModuleType) -> str:
    return adapter.__name__.rpartition(".")[2].removesuffix("_asyncio")


_Preferred: Any = preferred_asyncio.AsyncioContext


class _AutoSelectedMeta(type(_Preferred)):  # type: ignore[misc]
    """Makes a fallback instance an ``isinstance`` of ``caio.AsyncioContext``, and of
    nothing else it is not (ABC registration would also make it one of the preferred
    backend's adapter, through ``caio.AsyncioContext``)."""

    def __instancecheck__(cls, instance: object) -> bool:
        if cls is AsyncioContext and type(instance) in _FALLBACKS:
            return True
        return super().__instancecheck__(instance)


class AsyncioContext(_Preferred, metaclass=_AutoSelectedMeta):
    __doc__ = (preferred_asyncio.AsyncioContext.__doc__ or "") + """
    Created with no backend-specific arguments, it falls back to the next backend (with a
    ``ResourceLimitWarning``) when a kernel or process limit stops this one; the instance
    is then the lower backend's adapter, still an instance of ``caio.AsyncioContext``.
    Subclasses do not fall back.
    """

    def __init__(
        self,
        max_requests: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        deferred: bool = False,
        **kwargs: Any,
    ) -> None:
        try:
            super().__init__(max_requests, loop, deferred, **kwargs)
        except Exception as exc:
            # Backend arguments (sqpoll=...) or overridden behaviour of a subclass may
            # not suit another backend: only the plain class falls back.
            if type(self) is not AsyncioContext or kwargs or not _hit_a_limit(exc):
                raise
            _fall_back(self, exc, max_requests, loop, deferred)


def _fallback_class(adapter: ModuleType) -> Any:
    name = _backend_name(adapter)
    cls = type("AsyncioContext", (adapter.AsyncioContext,), {
        "__module__": __name__,
        "__qualname__": f"AsyncioContext[{name}]",
        "__doc__": f"caio.AsyncioContext falling back to {adapter.__name__}.",
        "_backend_name": name,
    })
    return cls


# The lower backends' adapters, in order, as seen by isinstance(ctx, caio.AsyncioContext).
_FALLBACKS = tuple(
    _fallback_class(m)
    for m in variants_asyncio[variants_asyncio.index(preferred_asyncio) + 1:]
)


def _fall_back(ctx: Any, exc: Exception, *args: Any) -> None:
    """Re-initialises ``ctx`` as the first lower backend's adapter that no limit stops,
    warning with what stopped the others; raises the last error if every one is stopped."""
    failed = [f"{_backend_name(preferred_asyncio)}: {exc}"]
    for cls in _FALLBACKS:
        ctx.__class__ = cls  # the same plain-Python layout: only the behaviour changes
        try:
            cls.__init__(ctx, *args)
        except Exception as next_exc:
            if not _hit_a_limit(next_exc):
                raise
            failed.append(f"{cls._backend_name}: {next_exc}")
            exc = next_exc
            continue
        warnings.warn(ResourceLimitWarning(
            f"caio.AsyncioContext runs on {cls._backend_name}, as a limit stopped the "
            f"backends before it: {'; '.join(failed)}",
        ), stacklevel=3)
        return
    raise exc


__all__ = (
    "RWF_DSYNC",
    "RWF_NOWAIT",
    "RWF_SYNC",
    "AbstractContext",
    "AbstractOperation",
    "AsyncioContext",
    "Context",
    "Operation",
    "OperationError",
    "ResourceLimitWarning",
    "SubmitError",
    "__author__",
    "__version__",
    "aligned_buffer",
    "direct_alignment",
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
