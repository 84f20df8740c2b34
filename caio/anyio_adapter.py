"""anyio: native file I/O whichever loop anyio runs on.

``AnyioContext`` picks, when created, the adapter for the running async library
(``sniffio.current_async_library()``): ``caio.AsyncioContext`` under anyio's asyncio
backend (falling back on limits as it does), ``caio.trio_adapter.TrioContext`` under
its trio backend; both run the backend ``import caio`` selected, unless ``backend=`` names another
(``"linux_uring"``, ``"linux_aio"``, ``"thread_aio"``, ``"python_aio"``). The methods are the
adapters' own (``read``, ``read_into``, ``readv``, ``write``, ``writev``, ``fsync``,
``fdsync``, ``submit``, ``close``)::

    async with AnyioContext() as ctx:
        await ctx.write(b"data", fd, 0)

Cancellation through anyio's cancel scopes is the underlying loop's (see the two
adapters): the task ends at once, the kernel operation is cancelled where the backend
can, and its buffer stays owned until the kernel is done with it.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sniffio

from .adapter_base import AdapterBase

if TYPE_CHECKING:
    from typing_extensions import Self


def _adapter_class(library: str, backend: str | None) -> type[AdapterBase[Any, Any]]:
    if library == "asyncio":
        if backend is None:
            from . import AsyncioContext

            return AsyncioContext
        module = importlib.import_module(f"{__package__}.{backend}_asyncio")
        return module.AsyncioContext
    if library == "trio":
        from .trio_adapter import TRIO_CONTEXTS, TrioContext

        return TrioContext if backend is None else TRIO_CONTEXTS[backend]
    raise RuntimeError(f"caio has no adapter for the {library!r} event loop")


class AnyioContext:
    """The running loop's caio adapter (see the module docs); create it inside the loop."""

    def __init__(self, max_requests: int | None = None, *, backend: str | None = None,
                 **kwargs: Any) -> None:
        self.library = sniffio.current_async_library()
        self.adapter: AdapterBase[Any, Any] = _adapter_class(self.library, backend)(
            max_requests, **kwargs,
        )

    # The adapter's own awaitables are returned: no extra coroutine frame per operation.
    def read(
        self, nbytes: int, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[bytes]:
        return self.adapter.read(nbytes, fd, offset, priority, flags=flags)

    def read_into(
        self, buffer: Any, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[int]:
        return self.adapter.read_into(buffer, fd, offset, priority, flags=flags)

    def readv(
        self, buffers: Sequence[Any], fd: int, offset: int, priority: int = 0, *,
        flags: int = 0,
    ) -> Awaitable[int]:
        return self.adapter.readv(buffers, fd, offset, priority, flags=flags)

    def writev(
        self, buffers: Sequence[Any], fd: int, offset: int, priority: int = 0, *,
        flags: int = 0,
    ) -> Awaitable[int]:
        return self.adapter.writev(buffers, fd, offset, priority, flags=flags)

    def write(
        self, payload: bytes, fd: int, offset: int, priority: int = 0, *, flags: int = 0,
    ) -> Awaitable[int]:
        return self.adapter.write(payload, fd, offset, priority, flags=flags)

    def fsync(self, fd: int) -> Awaitable[None]:
        return self.adapter.fsync(fd)

    def fdsync(self, fd: int) -> Awaitable[None]:
        return self.adapter.fdsync(fd)

    def submit(self, op: Any) -> Awaitable[Any]:
        return self.adapter.submit(op)

    def close(self) -> None:
        self.adapter.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ("AnyioContext",)
