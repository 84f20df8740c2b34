"""asyncio adapter for the io_uring backend (``caio.linux_uring``).

The Context's eventfd is watched with ``loop.add_reader``; completions are delivered on
the loop thread by ``flush()``/``process_events()``, so callbacks resolve their futures
directly. Small page-cache reads complete inside ``submit`` through
``Context.run_inline()`` without a future or a ring round trip, and requests over 64 KiB
run on the kernel's workers, so one large read does not stall the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .asyncio_base import AsyncioContextBase
from .linux_uring import SQPOLL_ALLOWED, Context, Operation

# caio turns SQPOLL on whenever it is allowed. We do not by default: with inline reads
# the kernel polling thread mostly burns a core for nothing (see README, Performance).
# Pass sqpoll=True to get it.
DEFAULT_SQPOLL = False


class AsyncioContext(AsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.linux_uring.Context``.

    ``deferred=True`` batches one loop iteration's submissions into a single
    ``flush()`` (unless SQPOLL was negotiated).
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context

    def _create_context(self, max_requests: int, **kwargs: Any) -> Context:
        kwargs.setdefault("sqpoll", DEFAULT_SQPOLL)
        context = self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)
        self.loop.add_reader(context.fileno, self._on_read_event)
        self._flush_scheduled = False
        return context

    def _destroy_context(self) -> None:
        self.loop.remove_reader(self.context.fileno)
        # Deliver what has already completed; later operations raise (see submit).
        while self.context.process_events():
            pass

    def _on_done(self, future: asyncio.Future[Any], result: Any) -> None:
        # Callbacks run on the loop thread, inside flush()/process_events().
        if not future.done():
            future.set_result(True)

    def _on_submitted(self) -> None:
        if not self.deferred or self.context.sqpoll:
            self.context.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        self.context.flush()

    def _on_read_event(self) -> None:
        try:
            self.context.poll()
        except BlockingIOError:
            pass
        # Drain until empty: the eventfd counter is a wake-up, not a count.
        while self.context.process_events():
            pass

    async def submit(self, op: Operation) -> Any:
        if not isinstance(op, self.OPERATION_CLASS):
            raise ValueError("Operation object expected")  # noqa: TRY004 (contract)
        if self._closed:
            raise RuntimeError("AsyncioContext is closed")
        # Fast path: a small page-cache read completes right here, synchronously.
        if self.context.run_inline(op):
            return op.get_value()
        return await super().submit(op)


__all__ = ("SQPOLL_ALLOWED", "AsyncioContext", "Context", "Operation")
