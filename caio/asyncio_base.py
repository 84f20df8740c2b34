"""The asyncio loop primitives of caio's adapters (``caio.*_asyncio.AsyncioContext``).

Everything else (submission, the inline fast path, capacity, cancellation, close) is in
``caio.adapter_base``. Here each awaited operation gets a future that the operation's
completion callback resolves; the awaiting coroutine then returns ``op.get_value()``, so
errors always surface from ``get_value()`` and never from the callback argument. A
bounded semaphore limits how many operations one adapter keeps in flight. Eventfd
Contexts are watched with ``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .adapter_base import (
    AdapterBase,
    ContextType,
    EventfdAdapterBase,
    EventfdContextType,
    OperationType,
    SemaphoreProtocol,
)


class AsyncioContextBase(AdapterBase[ContextType, OperationType]):
    CLOSED_MESSAGE = "AsyncioContext is closed"
    _CANCELLED = (asyncio.CancelledError,)

    def __init__(
        self,
        max_requests: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        deferred: bool = False,
        **kwargs: Any,
    ) -> None:
        self.loop = loop or asyncio.get_event_loop()
        super().__init__(max_requests, deferred, **kwargs)

    def _new_semaphore(self, value: int) -> SemaphoreProtocol:
        return asyncio.BoundedSemaphore(value)

    def _new_waiter(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    def _waiter_done(self, waiter: asyncio.Future[Any]) -> bool:
        return waiter.done()

    def _resolve(self, waiter: asyncio.Future[Any]) -> None:
        # The future may have been cancelled meanwhile.
        if not waiter.done():
            waiter.set_result(True)

    def _fail(self, waiter: asyncio.Future[Any], exc: BaseException) -> None:
        if not waiter.done():
            waiter.set_exception(exc)

    def _wait(self, waiter: asyncio.Future[Any]) -> Awaitable[Any]:
        return waiter  # awaited directly: no coroutine frame

    def _yield(self) -> Awaitable[None]:
        return asyncio.sleep(0)

    def _call_soon(self, callback: Callable[[], Any]) -> None:
        self.loop.call_soon(callback)

    def _call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        # (try/except, not contextlib.suppress: this runs once per thread-pool completion)
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: nobody waits
            pass

    def _on_loop_thread(self) -> bool:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return running is self.loop


class EventfdAsyncioContextBase(
    AsyncioContextBase[EventfdContextType, OperationType],
    EventfdAdapterBase[EventfdContextType, OperationType],
):
    """asyncio adapter base for eventfd Contexts (see ``caio.adapter_base``)."""

    def _watch_eventfd(self, fd: int) -> None:
        self.loop.add_reader(fd, self._on_read_event)

    def _unwatch_eventfd(self, fd: int) -> None:
        self.loop.remove_reader(fd)


__all__ = ("AsyncioContextBase", "ContextType", "EventfdAsyncioContextBase", "OperationType")
