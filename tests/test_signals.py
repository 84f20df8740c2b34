"""Signals arriving at any moment must not break an adapter: syscalls that a signal can
interrupt (EINTR) while nothing is lost are retried, never raised from the loop's reader."""

import asyncio
import os
import signal


def test_adapter_survives_a_storm_of_signals(loop_runner, files, AsyncioContext):
    fd = files.open()
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:

        async def body():
            async with AsyncioContext() as ctx:
                for i in range(200):
                    writes = [ctx.write(b"s" * 512, fd, (i * 8 + k) * 512) for k in range(8)]
                    assert await asyncio.gather(*writes) == [512] * 8
                    await ctx.fdsync(fd)
                    assert await ctx.read(512, fd, i * 8 * 512) == b"s" * 512

        loop_runner.run(body)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert os.pread(fd, 8 * 512, 0) == b"s" * (8 * 512)
