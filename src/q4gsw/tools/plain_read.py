"""The plain read: one pass over a weight's own bytes (weights + scales), the yardstick that a
memory-bound linear (M = 1 decode) is measured against in the benchmark."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..arith import ceil_div
from ..format import PackedWeight
from ..runtime.dispatch import Dispatch, bind
from ..runtime.pipelines import KernelKey

#: Invocations per workgroup, and the most workgroups a pass gets: min(ceil(words / WG),
#: MAX_WORKGROUPS), the grid of the plain read in issue #13.
WG = 256
MAX_WORKGROUPS = 4096
#: The sentinel of a timed run: random bytes XOR to it with probability 2^-128 per invocation.
NEVER = (0xDEADBEEF, 0x0BADF00D, 0xFEEDFACE, 0x8BADF00D)
KEY = KernelKey("plain_read", (("WG", WG),), family="q4gsw")


def plain_read_workgroups(words: int) -> int:
    """Workgroups of a plain read of `words` vec4<u32> words: min(ceil(words / 256), 4096)."""
    return max(1, min(ceil_div(words, WG), MAX_WORKGROUPS))


def weight_bytes(weight: PackedWeight) -> np.ndarray:
    """The bytes a decode kernel reads for `weight`, as the runtime uploads them: the packed
    weights, then the num_groups used rows of the scales (padded_N wide), zero-padded to a
    multiple of 16. uint8, flat."""
    parts = [weight.weights.reshape(-1), np.ascontiguousarray(weight.scales[: weight.num_groups]).view(np.uint8).reshape(-1)]
    total = sum(p.nbytes for p in parts)
    out = np.zeros(ceil_div(total, 16) * 16, np.uint8)
    out[: parts[0].nbytes] = parts[0]
    out[parts[0].nbytes : total] = parts[1]
    return out


@dataclasses.dataclass
class PlainRead:
    """Buffers and dispatches of a plain read: one data buffer per copy (a rotation like the
    benchmark's weight copies), one dispatch per copy, a 16-byte sink and the params.
    `nbytes` is what one dispatch reads."""

    rt: object
    data: list
    sink: object
    params: object
    dispatches: list[Dispatch]
    nbytes: int

    @classmethod
    def of_bytes(cls, rt, data: np.ndarray, copies: int = 1, *, sentinel=NEVER) -> "PlainRead":
        """A plain read of `data` (bytes, a multiple of 16) uploaded `copies` times.

        Args:
            data: (nbytes,) uint8 with nbytes % 16 == 0, nbytes > 0.
            copies: separate buffers holding the same bytes (>= 1).
            sentinel: four u32: the invocation whose XOR equals it writes its index + 1 to
                the sink (NEVER: none does).
        """
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if data.nbytes == 0 or data.nbytes % 16:
            raise ValueError(f"PlainRead.of_bytes: expected a positive multiple of 16 bytes, got {data.nbytes}")
        if copies < 1:
            raise ValueError(f"PlainRead.of_bytes: expected copies >= 1, got {copies}")
        usage = rt.wgpu.BufferUsage
        words = data.nbytes // 16
        workgroups = plain_read_workgroups(words)
        buffers = [rt.buffers.upload(data, usage.STORAGE, f"q4gsw/plain-read[{i}]", align=16) for i in range(copies)]
        sink = rt.buffers.upload(np.zeros(4, np.uint32), usage.STORAGE | usage.COPY_SRC, "q4gsw/plain-read-sink")
        params = rt.buffers.upload(np.array([words, workgroups * WG, 0, 0, *sentinel], np.uint32), usage.UNIFORM,
                                   "q4gsw/plain-read-params")
        dispatches = [bind(rt, KEY, (sink, buf, params), workgroups, nbytes=data.nbytes) for buf in buffers]
        return cls(rt, buffers, sink, params, dispatches, data.nbytes)

    @classmethod
    def of_weight(cls, rt, weight: PackedWeight, copies: int = 1) -> "PlainRead":
        """A plain read of weight_bytes(weight), `copies` times (as many as the kernel's rotation)."""
        return cls.of_bytes(rt, weight_bytes(weight), copies)

    @property
    def workgroups(self) -> int:
        return self.dispatches[0].grid[0] * self.dispatches[0].grid[1]

    def sink_value(self) -> int:
        """sink[0]: 0 unless an invocation's XOR met the sentinel (then its index + 1)."""
        return int(self.rt.buffers.read(self.sink, 4, np.uint32)[0])

    def release(self) -> None:
        self.rt.buffers.destroy(*self.data, self.sink, self.params)
        self.data.clear()
        self.dispatches.clear()


#: The filler that keeps a GPU busy between timed submits (runtime.timing.time_dispatch):
#: a plain read of FILLER_BYTES, FILLER_PASSES dispatches a submit (~3 ms on an H200).
FILLER_BYTES, FILLER_PASSES = 128 << 20, 96


def filler_read(rt) -> PlainRead | None:
    """A plain read for time_dispatch's `filler` (its .dispatches * FILLER_PASSES), or None on a
    CPU adapter, where clocks do not fall between submits and the read would only cost time."""
    if rt.caps.is_cpu or not rt.caps.has_timestamps:
        return None
    return PlainRead.of_bytes(rt, np.ones(min(FILLER_BYTES, rt.caps.max_binding_size), np.uint8))


def invocation_xor(data: np.ndarray, invocation: int, invocations: int) -> tuple[int, int, int, int]:
    """The XOR a plain read's invocation computes: words invocation, invocation + invocations,
    ... of data (bytes, a multiple of 16) as four u32 (the sentinel that makes it store)."""
    words = np.ascontiguousarray(data).view(np.uint32).reshape(-1, 4)
    acc = np.bitwise_xor.reduce(words[invocation::invocations], axis=0) if invocation < len(words) else np.zeros(4, np.uint32)
    return tuple(int(v) for v in acc)
