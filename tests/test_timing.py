"""Tests of the benchmark timing that keeps the GPU busy (runtime/submit.timed_batches and
time_dispatch's filler): every pass is timed, the filler runs after the timed passes and is
not counted, and every buffer and query set is freed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from q4gsw.runtime.submit import timed_batches
from q4gsw.runtime.timing import time_dispatch
from q4gsw.tools.plain_read import WG, PlainRead, invocation_xor


@pytest.fixture
def reads(runtime):
    """(timed, filler): plain reads of the same random bytes; the filler's sentinel is
    invocation 5's XOR, so its sink says whether (and that completely) it ran."""
    data = np.random.default_rng(3).integers(0, 256, 16 * 3000, dtype=np.uint8)
    timed = PlainRead.of_bytes(runtime, data, 2)
    filler = PlainRead.of_bytes(runtime, data, sentinel=invocation_xor(data, 5, plain_timed_invocations(data)))
    yield timed, filler
    timed.release()
    filler.release()


def plain_timed_invocations(data) -> int:
    """Invocations of a plain read of data (one workgroup of WG per 256 words, capped)."""
    words = data.nbytes // 16
    return -(-words // WG) * WG


def test_every_pass_timed_and_filler_run(runtime, reads):
    """Batches of 3 and 2 passes give 3 and 2 positive times; the filler ran every word of
    its invocation 5 (sink = 6); the timed reads wrote nothing; nothing leaks."""
    if not runtime.caps.has_timestamps:
        pytest.skip("no timestamp queries: timed_batches falls back to timed_passes")
    timed, filler = reads
    live = runtime.buffers.live
    batches = [[[timed.dispatches[i % 2]] for i in range(3)], [[timed.dispatches[0]], [timed.dispatches[1]]]]
    results = timed_batches(runtime, iter(batches), filler=filler.dispatches)
    assert [len(r) for r in results] == [3, 2]
    assert all(math.isfinite(t) and t > 0 for r in results for t in r)
    assert filler.sink_value() == 6
    assert timed.sink_value() == 0
    assert runtime.buffers.live == live


def test_time_dispatch_with_filler(runtime, reads):
    """time_dispatch(filler=...) returns at least `repeats` positive times."""
    timed, filler = reads
    times = time_dispatch(runtime, timed.dispatches, repeats=12, warmup_s=0.01, filler=filler.dispatches)
    assert len(times) >= 12
    assert all(math.isfinite(t) and t > 0 for t in times)
