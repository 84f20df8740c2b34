"""Memory for ``O_DIRECT``: ``aligned_buffer`` and ``direct_alignment`` (re-exported by
``caio``).

An ``O_DIRECT`` transfer from or into memory aligned for the device goes straight between
the kernel and that memory; any other memory (a ``bytes`` object never is aligned) is
copied through an aligned bounce buffer by the native backends.
"""

from __future__ import annotations

import mmap
import operator
import os
from typing import Any, Protocol

PAGESIZE: int = mmap.PAGESIZE

_native: Any
try:
    from . import _native
except ImportError:  # the pure Python backend only
    _native = None


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def aligned_buffer(size: int, alignment: int | None = None) -> mmap.mmap:
    """A zero-filled, writable buffer of ``size`` bytes whose memory is aligned for
    ``O_DIRECT``: an anonymous private ``mmap``, so page-aligned.

    ``alignment`` (a power of two, at most ``mmap.PAGESIZE``; default the page size)
    states what the caller needs, e.g. ``direct_alignment(fd)[0]``; a page satisfies every
    device's memory alignment in practice. Writing from it, or ``read_into`` it, on a
    descriptor opened with ``O_DIRECT`` uses the memory in place (no copy) when the offset
    and size are multiples of the file's block size; a ``memoryview`` slice of it starting
    at a multiple of the device's memory alignment stays usable in place too.
    """
    size = operator.index(size)
    if size <= 0:
        raise ValueError(f"size must be positive (got {size})")
    if alignment is not None:
        alignment = operator.index(alignment)
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two (got {alignment})")
        if alignment > PAGESIZE:
            raise ValueError(
                f"alignment above the page size ({PAGESIZE}) is not supported "
                f"(got {alignment})"
            )
    # Private: it behaves like ordinary memory across fork().
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)


def direct_alignment(fd: int | _HasFileno) -> tuple[int, int]:
    """``(memory, offset_and_size)``: the alignment ``O_DIRECT`` needs on ``fd`` (an int or
    an object with ``fileno()``) for the memory transferred and for the file offset and
    size, from ``statx(STATX_DIOALIGN)`` (Linux 6.1+); ``(4096, 4096)`` where the kernel
    does not say, which suits every common device."""
    os.fstat(fd if isinstance(fd, int) else fd.fileno())  # a bad descriptor raises OSError
    if _native is None:
        return (4096, 4096)
    memory, block = _native.direct_alignment(fd)
    return (int(memory), int(block))

