"""asyncio adapter for the pure-Python backend (``caio.python_aio``)."""

from __future__ import annotations

from .adapter_base import PythonAdapter
from .asyncio_base import AsyncioContextBase
from .python_aio import Context, Operation


class AsyncioContext(PythonAdapter[Context, Operation], AsyncioContextBase[Context, Operation]):
    """asyncio front end of ``caio.python_aio.Context``.

    Callbacks arrive on the thread pool's result-handler thread, so the inherited
    ``_on_done`` hands results to the loop with ``call_soon_threadsafe``.
    ``deferred`` is accepted and ignored; extra keyword arguments (``pool_size``)
    go to the Context.
    """

    OPERATION_CLASS = Operation
    CONTEXT_CLASS = Context


__all__ = ("AsyncioContext", "Context", "Operation")
