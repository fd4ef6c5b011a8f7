"""The one place that encodes, submits and times dispatches.

submit() is the normal path: dispatches as compute passes in one command buffer, one submit.
While a profiler is active (q4gsw.profile) it hands the dispatches to it instead, and the
profiler times each through timed_passes(), which is also what benchmarks use: every
timestamp query set is created, resolved and read back here and nowhere else.
"""

from __future__ import annotations

import contextvars
import time

import numpy as np

from .dispatch import Dispatch, record



def _native():
    """(lib, ffi): wgpu-py's cffi bindings of wgpu-native, for the light encoding path of
    record_pass() and submission indices; (None, None) where wgpu-py lays them out otherwise
    (the public API is used then). Imported on first use: importing q4gsw imports no wgpu."""
    global _NATIVE
    if _NATIVE is None:
        try:
            from wgpu.backends.wgpu_native._ffi import ffi, lib
            _NATIVE = (lib, ffi)
        except ImportError:
            _NATIVE = (None, None)
    return _NATIVE


_NATIVE: tuple | None = None

#: The active profiler (set by q4gsw.profile): an object with .run(dispatches), or None.
active_profiler: contextvars.ContextVar = contextvars.ContextVar("q4gsw_profiler", default=None)


def submit(runtime, dispatches: list[Dispatch], *, label: str = "q4gsw", one_pass: bool = False,
           copies: tuple = ()) -> None:
    """Encode dispatches and submit them in one command buffer; returns without waiting.

    Args:
        dispatches: in order (each with its follow-ups, e.g. a split-K reduction).
        one_pass: all of them in one compute pass (a chain: WebGPU orders the storage writes
            of a dispatch before the next one of the same pass reads them); else one
            compute pass each, labelled with its kernel key.
        copies: (source, source_offset, destination, destination_offset, size) buffer copies
            encoded after the dispatches, in the same command buffer.
    While a profiler is active, the profiler runs the dispatches instead, one timed pass each
    (the copies follow in a command buffer of their own).
    """
    profiler = active_profiler.get()
    encoder = runtime.device.create_command_encoder(label=label)
    if profiler is not None:
        profiler.run(dispatches)
    elif one_pass:
        cpass = encoder.begin_compute_pass(label=label)
        record_pass(cpass, dispatches)
        cpass.end()
    else:
        for d in dispatches:
            cpass = encoder.begin_compute_pass(label=str(d.key))
            record(cpass, d)
            cpass.end()
    for copy in copies:
        encoder.copy_buffer_to_buffer(*copy)
    if profiler is None or copies:
        runtime.device.queue.submit([encoder.finish()])


def timed_passes(runtime, passes: list[list[Dispatch]], *, label: str = "q4gsw/timed") -> list[float]:
    """GPU nanoseconds of each pass: every list of dispatches is one compute pass with
    timestamp writes at its start and end, all in one command buffer and one submit.

    Without `timestamp-query`, every pass gets the wall-clock time of the whole submit and
    its wait divided by the number of passes (host overhead included; say so when reporting).
    """
    if runtime.caps.has_timestamps:
        return _collect_timed(runtime, _submit_timed(runtime, passes, (), label))
    encoder = runtime.device.create_command_encoder(label=label)
    for dispatches in passes:
        cpass = encoder.begin_compute_pass(label=str(dispatches[0].key) if len(dispatches) == 1 else label)
        record_pass(cpass, dispatches)
        cpass.end()
    t0 = time.perf_counter_ns()
    runtime.device.queue.submit([encoder.finish()])
    wait(runtime)
    return [(time.perf_counter_ns() - t0) / len(passes)] * len(passes)


def timed_batches(runtime, batches, *, filler: list[Dispatch] = (), label: str = "q4gsw/timed") -> list[list[float]]:
    """GPU nanoseconds of each pass of each batch (a batch: a list of passes, each a list of
    dispatches, as timed_passes takes), with the GPU kept busy from one batch to the next.

    Each batch is one submit: its passes with timestamp writes, then `filler` (untimed, one
    pass), then the resolved timestamps copied into a mappable buffer. The next batch is
    encoded and queued before this one's timestamps are read, and the read waits for this
    submission alone, so while the host encodes, the GPU runs the filler: no gaps in which
    its clocks fall (an H200's SM clock drops to 345-1300 MHz when short submits leave the
    GPU idle between them; docs/kernels-decode.md). Needs timestamp queries; without them,
    each batch goes through timed_passes (host-timed, no filler).
    """
    if not runtime.caps.has_timestamps:
        return [timed_passes(runtime, passes, label=label) for passes in batches]
    results, pending = [], None
    for passes in batches:
        queued = _submit_timed(runtime, passes, filler, label)
        if pending is not None:
            results.append(_collect_timed(runtime, pending))
        pending = queued
    if pending is not None:
        results.append(_collect_timed(runtime, pending))
    return results


def _submit_timed(runtime, passes, filler, label):
    wgpu, device = runtime.wgpu, runtime.device
    count = len(passes)
    queries = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * count)
    usage = wgpu.BufferUsage
    resolved = runtime.buffers.create(16 * count, usage.QUERY_RESOLVE | usage.COPY_SRC, "q4gsw/timestamps")
    staging = runtime.buffers.create(16 * count, usage.MAP_READ | usage.COPY_DST, "q4gsw/timestamps-read")
    encoder = device.create_command_encoder(label=label)
    for i, dispatches in enumerate(passes):
        writes = {"query_set": queries, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1}
        cpass = encoder.begin_compute_pass(label=str(dispatches[0].key) if len(dispatches) == 1 else label,
                                           timestamp_writes=writes)
        record_pass(cpass, dispatches)
        cpass.end()
    if filler:
        cpass = encoder.begin_compute_pass(label="q4gsw/filler")
        record_pass(cpass, list(filler))
        cpass.end()
    encoder.resolve_query_set(queries, 0, 2 * count, resolved, 0)
    encoder.copy_buffer_to_buffer(resolved, 0, staging, 0, 16 * count)
    index = submit_for_index(runtime, encoder.finish())
    # "READ_NOSYNC": the copy that fills staging is already submitted (see llm/stream.py)
    return staging.map_async("READ_NOSYNC"), index, staging, resolved, queries, count


def _collect_timed(runtime, pending) -> list[float]:
    promise, index, staging, resolved, queries, count = pending
    try:
        wait_for(runtime, index)
        promise.sync_wait()
        stamps = np.frombuffer(staging.read_mapped(copy=True), np.uint64)[: 2 * count].astype(np.int64)
        staging.unmap()
    finally:
        runtime.buffers.destroy(staging, resolved)
        queries.destroy()
    return [float(stamps[2 * i + 1] - stamps[2 * i]) for i in range(count)]


def wait(runtime) -> None:
    """Wait until the GPU has finished the work submitted so far (a 4-byte read back: wgpu-py
    0.32's on_submitted_work_done_sync is broken, see ENVIRONMENT.md)."""
    runtime.buffers.read(runtime.sync_buffer, 4, np.uint32)


def record_pass(cpass, dispatches: list[Dispatch]) -> None:
    """Record dispatches (and their follow-ups) into an open compute pass: set_pipeline only
    when it changes, then set_bind_group and dispatch_workgroups. Through wgpu-native's C
    functions directly where wgpu-py exposes them (about half the host time a dispatch of the
    wrapped calls takes: they check arguments and capture errors per call; wgpu-native still
    validates everything and reports it at encoder.finish())."""
    _lib, _ffi = _native()
    if _lib is None:
        for d in dispatches:
            record(cpass, d)
        return
    encoder = cpass._internal
    set_pipeline = _lib.wgpuComputePassEncoderSetPipeline
    set_bind_group = _lib.wgpuComputePassEncoderSetBindGroup
    dispatch_workgroups = _lib.wgpuComputePassEncoderDispatchWorkgroups
    null = _ffi.NULL
    last = None
    stack = list(reversed(dispatches))
    while stack:
        d = stack.pop()
        if d.pipeline is not last:
            set_pipeline(encoder, d.pipeline._internal)
            last = d.pipeline
        set_bind_group(encoder, 0, d.bind_group._internal, 0, null)
        x, y, z = d.grid
        dispatch_workgroups(encoder, x, y, z)
        stack.extend(reversed(d.then))


def submit_for_index(runtime, command_buffer) -> int | None:
    """Submit one finished command buffer; returns wgpu-native's submission index (None where
    wgpu-py's C functions are not reachable), which wait_for() can wait on alone."""
    _lib, _ffi = _native()
    if _lib is None:
        runtime.device.queue.submit([command_buffer])
        return None
    buffers = _ffi.new("WGPUCommandBuffer[1]", [command_buffer._internal])
    return int(_lib.wgpuQueueSubmitForIndex(runtime.device.queue._internal, 1, buffers))


def wait_for(runtime, index: int | None) -> None:
    """Block until submission `index` has completed, not the work submitted after it (None:
    until everything submitted so far has). wgpu-py's own waits (a mapped read, a promise's
    sync_wait) poll for everything, so a step queued behind would be waited for too."""
    _lib, _ffi = _native()
    if index is None or _lib is None:
        wait(runtime)
        return
    _lib.wgpuDevicePoll(runtime.device._internal, True, _ffi.new("WGPUSubmissionIndex *", index))
