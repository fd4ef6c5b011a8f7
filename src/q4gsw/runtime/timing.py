"""Benchmark timing on top of submit.timed_passes: one dispatch per pass, or a chain of them."""

from __future__ import annotations

import time

from .dispatch import Dispatch
from .submit import submit, timed_batches, timed_passes, wait

#: GPU time a timed submit aims at once clocks are up (see time_dispatch).
BATCH_NS = 3e6
#: With a filler: GPU time of the timed passes of one submit (the filler covers the host's
#: encoding of the next), and the fewest and most passes a submit.
BUSY_BATCH_NS, BUSY_MIN_PASSES, BUSY_MAX_PASSES = 1e6, 8, 100


def time_dispatch(runtime, dispatch: Dispatch | list[Dispatch], *, repeats: int = 30, warmup: int = 3,
                  batch: int = 10, warmup_s: float = 0.0, filler: list[Dispatch] | None = None) -> list[float]:
    """GPU nanoseconds of a dispatch, one compute pass per run, `repeats` runs after `warmup`.

    `dispatch` may be a list of equivalent dispatches over different copies of the inputs;
    runs cycle through them, so with copies that together exceed the L2 cache each pass
    reads its weights from device memory. (Clearing a scratch buffer between passes does
    not evict reliably: nothing orders the clear before the pass, and the two overlap.)
    Passes that write the same output are ordered by the implementation, so they never
    overlap one another. warmup_s > 0 first runs the dispatches for that long (GPU clocks
    drop while the host computes references; a few warm-up runs do not bring them back).
    Runs are submitted `batch` passes at a time; with warmup_s > 0, at least enough passes to
    keep the GPU busy for BATCH_NS a submit (up to 200, and `repeats` grows to one such batch):
    clocks sag when short submits leave the GPU idle between them.
    With a `filler` (dispatches of a few ms of GPU work, e.g. a plain read of a large buffer)
    and timestamp queries, every submit is timed passes + the filler, queued before the
    previous submit is read (submit.timed_batches): the GPU never idles, so its clocks stay
    up; warm-up is warmup_s of the same (at least 0.5 s) and `warmup`/`batch` are unused.
    """
    rotation = dispatch if isinstance(dispatch, list) else [dispatch]
    done = 0

    def next_passes(count: int) -> list[list[Dispatch]]:
        nonlocal done
        passes = [[rotation[(done + i) % len(rotation)]] for i in range(count)]
        done += count
        return passes

    if filler and runtime.caps.has_timestamps:
        return _time_busy(runtime, next_passes, repeats, max(0.5, warmup_s), filler)
    if warmup_s:
        warm_up(runtime, rotation, warmup_s)
        pass_ns = _until_steady(runtime, next_passes)
        if pass_ns:
            batch = max(batch, min(200, int(BATCH_NS / pass_ns)))
            repeats = max(repeats, batch)
    if warmup:
        submit(runtime, [p[0] for p in next_passes(warmup)], label="q4gsw/warm-up")
        wait(runtime)
    times: list[float] = []
    while len(times) < repeats:
        times += timed_passes(runtime, next_passes(min(batch, repeats - len(times))), label="q4gsw/bench")
    return times


def _time_busy(runtime, next_passes, repeats: int, warmup_s: float, filler: list[Dispatch]) -> list[float]:
    """time_dispatch with a filler: batches of ~BUSY_BATCH_NS of passes, each followed by the
    filler, the GPU never idle; warmup_s of untimed batches first."""
    estimate = sorted(timed_passes(runtime, next_passes(4), label="q4gsw/warm-up"))[1]
    count = min(repeats, int(min(BUSY_MAX_PASSES, max(BUSY_MIN_PASSES, BUSY_BATCH_NS / max(estimate, 1.0)))))
    t_end = time.perf_counter() + warmup_s

    def warm_batches():
        while time.perf_counter() < t_end:
            yield next_passes(count)

    timed_batches(runtime, warm_batches(), filler=filler, label="q4gsw/warm-up")
    batches = -(-repeats // count)
    times = [t for b in timed_batches(runtime, (next_passes(count) for _ in range(batches)), filler=filler,
                                      label="q4gsw/bench") for t in b]
    return times


def _until_steady(runtime, next_passes, *, tolerance: float = 0.03, limit_s: float = 3.0) -> float | None:
    """Time batches of 10 passes until two in a row agree within `tolerance` (or limit_s):
    an idle H200 runs its SMs at 345 MHz and takes a second or more of sustained work to
    reach 1980 MHz, and a fixed warm-up left some kernels measured on the way up. Returns the
    last batch's median (ns), or None when no batch ran."""
    t_end = time.perf_counter() + limit_s
    last = None
    while time.perf_counter() < t_end:
        times = sorted(timed_passes(runtime, next_passes(10), label="q4gsw/warm-up"))
        median = times[len(times) // 2]
        if last is not None and abs(median - last) <= tolerance * median:
            return median
        last = median
    return last


def time_chain(runtime, dispatches: list[Dispatch], *, per_pass: int = 32, repeats: int = 10,
               warmup_s: float = 0.2) -> list[float]:
    """GPU nanoseconds per dispatch when `per_pass` dispatches (cycling through `dispatches`)
    run back to back in one compute pass, as a chain of layers would: the pass is timed and
    divided by per_pass. One value per repeat."""
    warm_up(runtime, dispatches, warmup_s)
    passes = [[dispatches[(i * per_pass + j) % len(dispatches)] for j in range(per_pass)] for i in range(repeats)]
    return [t / per_pass for t in timed_passes(runtime, passes, label="q4gsw/chain")]


def warm_up(runtime, dispatches: list[Dispatch], seconds: float) -> None:
    """Run the dispatches (the first 8, a pass each) for about `seconds` of wall-clock time,
    so that clocks are up."""
    t_end = time.perf_counter() + seconds
    while True:
        submit(runtime, dispatches[:8], label="q4gsw/warm-up")
        wait(runtime)
        if time.perf_counter() >= t_end:
            return
