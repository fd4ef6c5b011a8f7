"""Benchmark timing on top of submit.timed_passes: one dispatch per pass, or a chain of them."""

from __future__ import annotations

import time

from .dispatch import Dispatch
from .submit import submit, timed_passes, wait


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
    Runs are submitted `batch` passes at a time.
    """
    rotation = dispatch if isinstance(dispatch, list) else [dispatch]
    done = 0

    def next_passes(count: int) -> list[list[Dispatch]]:
        nonlocal done
        passes = [[rotation[(done + i) % len(rotation)]] for i in range(count)]
        done += count
        return passes

    if warmup_s:
        warm_up(runtime, rotation, warmup_s)
        _until_steady(runtime, next_passes)
    if warmup:
        submit(runtime, [p[0] for p in next_passes(warmup)], label="q4gsw/warm-up")
        wait(runtime)
    times: list[float] = []
    while len(times) < repeats:
        times += timed_passes(runtime, next_passes(min(batch, repeats - len(times))), label="q4gsw/bench")
    return times


def _until_steady(runtime, next_passes, *, tolerance: float = 0.03, limit_s: float = 3.0) -> None:
    """Time batches of 10 passes until two in a row agree within `tolerance` (or limit_s):
    an idle H200 runs its SMs at 345 MHz and takes a second or more of sustained work to
    reach 1980 MHz, and a fixed warm-up left some kernels measured on the way up."""
    t_end = time.perf_counter() + limit_s
    last = None
    while time.perf_counter() < t_end:
        times = sorted(timed_passes(runtime, next_passes(10), label="q4gsw/warm-up"))
        median = times[len(times) // 2]
        if last is not None and abs(median - last) <= tolerance * median:
            return
        last = median


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
