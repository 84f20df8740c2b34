"""Linux kernel AIO backend (Rust, ``caio._native``).

Importing this module probes the kernel once (kernel version, ``io_setup``): when kernel
AIO cannot be used here it raises ImportError saying why, and ``import caio`` moves on to
the next backend.
"""

from . import _native

_reason = _native.aio_probe()
if _reason is not None:
    raise ImportError(_reason)

Context = _native.AioContext
Operation = _native.AioOperation

__all__ = ("Context", "Operation")
