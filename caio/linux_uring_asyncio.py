"""asyncio adapter for caio.linux_uring (placeholder until the backend lands).

Importing the backend first makes this module fail exactly when it fails.
"""

from . import linux_uring  # noqa: F401
