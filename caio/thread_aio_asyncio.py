"""asyncio adapter for the thread-pool backend (``caio.thread_aio``).

It runs on a ``thread_aio.EventfdContext``: worker threads never take the GIL, they queue
completions and signal an eventfd that the event loop watches. Completions are then
delivered in batches by ``process_events()`` on the loop thread, so callbacks resolve
their futures directly instead of going through ``call_soon_threadsafe``.

Small reads whose data is already in the page cache are completed inside ``submit``
by ``EventfdContext.run_inline()`` and return without a future or a loop round trip.
"""

from __future__ import annotations

from .adapter_base import ThreadAdapter
from .asyncio_base import EventfdAsyncioContextBase
from .thread_aio import Context, EventfdContext, Operation


class AsyncioContext(
    ThreadAdapter[EventfdContext, Operation],
    EventfdAsyncioContextBase[EventfdContext, Operation],
):
    """asyncio front end of ``caio.thread_aio`` (on an ``EventfdContext``).

    ``deferred`` is accepted and ignored; extra keyword arguments (``pool_size``)
    go to the Context.
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = EventfdContext


__all__ = ("AsyncioContext", "Context", "EventfdContext", "Operation")
