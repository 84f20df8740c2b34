"""asyncio adapter for the kernel AIO backend (``caio.linux_aio``).

Completions are delivered on the loop thread by ``process_events()`` (see
``EventfdAsyncioContextBase``); small page-cache reads complete inside ``submit``.

Submission policy:

- ``deferred=True``: the operations submitted during one loop iteration go to the
  kernel in a single ``io_submit`` (caio's behaviour).
- default: an operation goes to the kernel at once, in its own ``io_submit``, while
  fewer than ``EAGER_BELOW`` (64) of this adapter's operations are in flight; with more,
  submissions are coalesced: they go out together when the loop next gets control, or
  as soon as ``BATCH_LIMIT`` have gathered; those of the tasks a batch of completions
  resumed go out right after those tasks ran, in the same loop iteration (not one
  iteration later). Fewer ``io_submit`` calls cost less CPU, but a coalesced request
  waits for the tasks resumed with it, which with 32 O_DIRECT reads in flight cost more
  device time than the calls saved (benchmarks/results/2026-12-01-aio-eager-ab.txt). An
  operation the kernel refuses fails alone either way.
"""

from __future__ import annotations

from .adapter_base import AioAdapter
from .asyncio_base import EventfdAsyncioContextBase
from .linux_aio import Context, Operation


class AsyncioContext(AioAdapter[Context, Operation], EventfdAsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.linux_aio.Context``."""

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context


__all__ = ("AsyncioContext", "Context", "Operation")
