"""The read ceiling: a coalesced read-only kernel over a large buffer, timed on the GPU."""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from ..arith import ceil_div
from .dispatch import bind
from .pipelines import KernelKey
from .timing import time_dispatch

WG = 256


@dataclasses.dataclass(frozen=True)
class ReadBandwidth:
    bytes_per_second: float
    nbytes: int
    median_ns: float


def measure_read_bandwidth(runtime, nbytes: int | None = None, repeats: int = 20) -> ReadBandwidth:
    """Median read bandwidth of the read_bandwidth kernel over one buffer.

    Default size: 1 GiB on a GPU (beyond any L2), 64 MiB on a CPU adapter; never more than
    the adapter's storage binding limit. The buffer holds a non-zero pattern.
    """
    wgpu = runtime.wgpu
    limit = runtime.caps.max_binding_size
    if nbytes is None:
        nbytes = (64 << 20) if runtime.caps.is_cpu else (1 << 30)
    nbytes = min(nbytes, limit) // 16 * 16
    words = nbytes // 16
    data = runtime.buffers.create(nbytes, wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST, "q4gsw/read-bandwidth")
    chunk = (np.arange(min(nbytes, 16 << 20) // 4, dtype=np.uint32) * np.uint32(2654435761)) | np.uint32(1)
    for offset in range(0, nbytes, chunk.nbytes):
        n = min(chunk.nbytes, nbytes - offset)
        runtime.device.queue.write_buffer(data, offset, chunk[: n // 4])
    workgroups = min(ceil_div(words, WG), 4 * 1024 if not runtime.caps.is_cpu else 64)
    invocations = workgroups * WG
    sink = runtime.buffers.create(4 * invocations, wgpu.BufferUsage.STORAGE, "q4gsw/read-bandwidth-sink")
    params = runtime.buffers.upload(np.array([words, invocations, 0, 0], np.uint32), wgpu.BufferUsage.UNIFORM, "params")
    key = KernelKey("read_bandwidth", (("WG", WG),), family="q4gsw")
    dispatch = bind(runtime, key, (sink, data, params), workgroups, nbytes=nbytes)
    try:
        times = time_dispatch(runtime, dispatch, repeats=repeats, warmup=2)
    finally:
        runtime.buffers.destroy(data, sink, params)
    median = statistics.median(times)
    return ReadBandwidth(nbytes / (median * 1e-9), nbytes, median)
