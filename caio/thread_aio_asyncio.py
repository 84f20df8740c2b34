"""asyncio adapter for the thread-pool backend (``caio.thread_aio``).

It runs on a ``thread_aio.EventfdContext``: worker threads never take the GIL, they queue
completions and signal an eventfd that the event loop watches. Completions are then
delivered in batches by ``process_events()`` on the loop thread, so callbacks resolve
their futures directly instead of going through ``call_soon_threadsafe``.

Small reads whose data is already in the page cache are completed inside ``submit``
by ``EventfdContext.run_inline()`` and return without a future or a loop round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .asyncio_base import EventfdAsyncioContextBase, _resolve
from .thread_aio import Context, EventfdContext, Operation


class AsyncioContext(EventfdAsyncioContextBase[EventfdContext, Operation]):
    """asyncio front end of ``caio.thread_aio`` (on an ``EventfdContext``).

    ``deferred`` is accepted and ignored; extra keyword arguments (``pool_size``)
    go to the Context.
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = EventfdContext

    def _create_context(self, max_requests: int, **kwargs: Any) -> EventfdContext:
        context = self.CONTEXT_CLASS(max_requests=max_requests, **kwargs)
        try:
            self._watch(context)
        except BaseException:
            context.close()
            raise
        return context

    def _on_done(self, future: asyncio.Future[Any], result: Any) -> None:
        if future.done():
            return
        # Callbacks normally run on the loop thread (inside process_events or
        # run_inline). close() from another thread delivers leftovers there too,
        # so only touch the future directly when we are on the loop.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            future.set_result(True)
        else:
            # After close() the rest completes on the drainer's thread; a loop that has
            # been closed meanwhile has nobody waiting.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_resolve, future)


__all__ = ("AsyncioContext", "Context", "EventfdContext", "Operation")
