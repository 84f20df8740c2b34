"""asyncio adapter for the io_uring backend (``caio.linux_uring``).

Completions are delivered on the loop thread by ``flush()``/``process_events()`` (see
``caio.adapter_base.EventfdAdapterBase``); small page-cache reads complete inside
``submit``, and requests over 64 KiB run on the kernel's workers, so one large read does
not stall the loop.
"""

from __future__ import annotations

from .adapter_base import UringAdapter
from .asyncio_base import EventfdAsyncioContextBase
from .linux_uring import SQPOLL_ALLOWED, Context, Operation

# As in caio, SQPOLL is on whenever this process may use it: cached reads complete inline
# without the ring either way, but writes and syncs (which ext4 cannot start without
# blocking, so the kernel hands each one to a worker) run about 1.6x faster when the
# polling thread submits them (see README, Performance). Pass sqpoll=False to save the
# polling thread's CPU time.
DEFAULT_SQPOLL = SQPOLL_ALLOWED


class AsyncioContext(UringAdapter[Context, Operation], EventfdAsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.linux_uring.Context``.

    ``deferred=True`` batches one loop iteration's submissions into a single
    ``flush()`` (unless SQPOLL was negotiated).
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context
    DEFAULT_SQPOLL = DEFAULT_SQPOLL


__all__ = ("SQPOLL_ALLOWED", "AsyncioContext", "Context", "Operation")
