"""asyncio adapter for the io_uring backend (``caio.linux_uring``).

Completions are delivered on the loop thread by ``flush()``/``process_events()`` (see
``caio.adapter_base.EventfdAdapterBase``); small page-cache reads and small buffered
file writes complete inside ``submit``, and requests over 64 KiB run on the kernel's
workers, so one large read does not stall the loop.
"""

from __future__ import annotations

from .adapter_base import UringAdapter
from .asyncio_base import EventfdAsyncioContextBase
from .linux_uring import SQPOLL_ALLOWED, Context, Operation


class AsyncioContext(UringAdapter[Context, Operation], EventfdAsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.linux_uring.Context``, without SQPOLL unless asked
    (``sqpoll=True``; see ``UringAdapter.DEFAULT_SQPOLL``).

    ``deferred=True`` batches one loop iteration's submissions into a single
    ``flush()`` (unless SQPOLL was negotiated).
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context


__all__ = ("SQPOLL_ALLOWED", "AsyncioContext", "Context", "Operation")
