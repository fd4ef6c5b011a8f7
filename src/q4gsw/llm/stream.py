"""TokenStream: run a step's chain and read its new token back without stalling the queue.

Each step copies its token (generated[step]) into a small mappable buffer in the same submit
and maps it right away; the map completes when that step's work does, so the host can queue
the next step before it waits for this one's token."""

from __future__ import annotations

import numpy as np

from ..runtime.submit import active_profiler, submit_for_index, wait_for

#: Mappable 4-byte buffers in the ring (steps in flight at most).
RING = 8


class TokenStream:
    """Submit step chains and read their tokens back in order."""

    def __init__(self, runtime, generated):
        usage = runtime.wgpu.BufferUsage
        self.runtime = runtime
        self.generated = generated
        self.staging = [runtime.buffers.create(4, usage.MAP_READ | usage.COPY_DST, "llm/token") for _ in range(RING)]
        self.pending: dict[int, tuple] = {}  # step -> (map promise, submission index)

    def submit(self, chain, step: int) -> None:
        """Run chain (one submit) and start reading generated[step] back."""
        if len(self.pending) >= RING:
            raise RuntimeError("TokenStream: more steps in flight than staging buffers")
        buf = self.staging[step % RING]
        copies = ((self.generated.buffer, 4 * step, buf, 0, 4),)
        if active_profiler.get() is not None:  # every dispatch timed on its own
            chain.run(copies=copies)
            index = None
        else:
            index = submit_for_index(self.runtime, chain.command_buffer(copies=copies))
        # "READ_NOSYNC": wgpu-py would otherwise submit an empty command buffer before each map
        # (one more submit a token); the copy that fills buf is already submitted
        self.pending[step] = (buf.map_async("READ_NOSYNC"), index)

    def read(self, step: int) -> int:
        """The token of `step` (waits for that step's work only, not the steps queued after it)."""
        promise, index = self.pending.pop(step)
        wait_for(self.runtime, index)
        promise.sync_wait()
        buf = self.staging[step % RING]
        token = int(np.frombuffer(buf.read_mapped(copy=True), np.uint32)[0])
        buf.unmap()
        return token

    def drain(self) -> None:
        """Wait for every step still in flight (their tokens are dropped) and free the ring."""
        for step in sorted(self.pending):
            self.read(step)
        self.runtime.buffers.destroy(*self.staging)
