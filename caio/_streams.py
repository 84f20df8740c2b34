"""Descriptor helpers shared by the pure-Python backend and the asyncio adapters."""

from __future__ import annotations

import errno
import os


def is_stream(fd: int) -> bool:
    """True for a descriptor without a file position (pipe, FIFO, socket): there a request
    at offset 0 means "the next bytes", as io_uring and kernel AIO treat it."""
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError as exc:
        return exc.errno == errno.ESPIPE
    return False
