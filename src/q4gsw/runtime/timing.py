"""Benchmark timing: GPU timestamps around one dispatch (or a chain of them in one pass), repeated."""

from __future__ import annotations

import time

import numpy as np

from .dispatch import Dispatch, encode, record


def time_dispatch(runtime, dispatch: Dispatch | list[Dispatch], *, repeats: int = 30, warmup: int = 3,
                  batch: int = 10, warmup_s: float = 0.0) -> list[float]:
    """GPU nanoseconds of a dispatch, one compute pass per run, `repeats` runs after `warmup`.

    `dispatch` may be a list of equivalent dispatches over different copies of the inputs;
    runs cycle through them, so with copies that together exceed the L2 cache each pass
    reads its weights from device memory. (Clearing a scratch buffer between passes does
    not evict reliably: nothing orders the clear before the pass, and the two overlap.)
    Passes that write the same output are ordered by the implementation, so they never
    overlap one another. warmup_s > 0 first runs the dispatches for that long (GPU clocks
    drop while the host computes references; a few warm-up runs do not bring them back).
    Without `timestamp-query` the wall-clock time of a submit + wait per run is returned
    (host overhead included; say so when reporting).
    """
    wgpu = runtime.wgpu
    device = runtime.device
    rotation = dispatch if isinstance(dispatch, list) else [dispatch]
    done = 0
    sink = _sync_buffer(runtime)

    def one_batch(count: int, timed: bool) -> list[float]:
        encoder = device.create_command_encoder(label="q4gsw/bench")
        query_set = resolved = None
        if timed and runtime.caps.has_timestamps:
            query_set = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * count)
            resolved = runtime.buffers.create(16 * count, wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC, "q4gsw/timestamps")
        nonlocal done
        for i in range(count):
            writes = None
            if query_set is not None:
                writes = {"query_set": query_set, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}
            encode(encoder, rotation[done % len(rotation)], writes)
            done += 1
        if query_set is not None:
            encoder.resolve_query_set(query_set, 0, 2 * count, resolved, 0)
        t0 = time.perf_counter_ns()
        runtime.submit(encoder)
        if query_set is None:
            runtime.buffers.read(sink, 4, np.uint32)  # wait for the GPU
            return [(time.perf_counter_ns() - t0) / count] * count
        stamps = runtime.buffers.read(resolved, 16 * count, np.uint64).astype(np.int64)
        runtime.buffers.destroy(resolved)
        query_set.destroy()
        return [float(stamps[2 * i + 1] - stamps[2 * i]) for i in range(count)]

    if warmup_s:
        _warm_up(runtime, rotation, warmup_s)
    if warmup:
        one_batch(warmup, timed=False)
        runtime.buffers.read(sink, 4, np.uint32)
    times: list[float] = []
    while len(times) < repeats:
        times += one_batch(min(batch, repeats - len(times)), timed=True)
    return times


def time_chain(runtime, dispatches: list[Dispatch], *, per_pass: int = 32, repeats: int = 10,
               warmup_s: float = 0.2) -> list[float]:
    """GPU nanoseconds per dispatch when `per_pass` dispatches (cycling through `dispatches`)
    run back to back in one compute pass, as a chain of layers would: the pass is timed and
    divided by per_pass. One value per repeat."""
    wgpu = runtime.wgpu
    device = runtime.device
    query_set = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * repeats)
    resolved = runtime.buffers.create(16 * repeats, wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC, "q4gsw/timestamps")
    _warm_up(runtime, dispatches, warmup_s)
    encoder = device.create_command_encoder(label="q4gsw/chain")
    for i in range(repeats):
        cpass = encoder.begin_compute_pass(label="q4gsw/chain", timestamp_writes={
            "query_set": query_set, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1})
        for j in range(per_pass):
            d = dispatches[(i * per_pass + j) % len(dispatches)]
            record(cpass, d)
        cpass.end()
    encoder.resolve_query_set(query_set, 0, 2 * repeats, resolved, 0)
    runtime.submit(encoder)
    stamps = runtime.buffers.read(resolved, 16 * repeats, np.uint64).astype(np.int64)
    runtime.buffers.destroy(resolved)
    query_set.destroy()
    return [float(stamps[2 * i + 1] - stamps[2 * i]) / per_pass for i in range(repeats)]


def _warm_up(runtime, dispatches: list[Dispatch], seconds: float) -> None:
    """Run the dispatches for about `seconds` of wall-clock time, so clocks are up."""
    t_end = time.perf_counter() + seconds
    while True:
        encoder = runtime.device.create_command_encoder(label="q4gsw/warm-up")
        for d in dispatches[:8]:
            encode(encoder, d)
        runtime.submit(encoder)
        runtime.device.queue.read_buffer(_sync_buffer(runtime), 0, 4)
        if time.perf_counter() >= t_end:
            return


def _sync_buffer(runtime):
    """A 4-byte buffer kept on the runtime, read back to wait for the GPU."""
    buf = getattr(runtime, "_q4gsw_sync", None)
    if buf is None:
        buf = runtime.buffers.create(4, runtime.wgpu.BufferUsage.COPY_SRC | runtime.wgpu.BufferUsage.COPY_DST, "q4gsw/sync")
        runtime._q4gsw_sync = buf
    return buf
