"""Tests of q4gsw.tools.plain_read: the grid rule, the bytes read, and on the adapter that a
plain read loads every word (control runs whose sentinel one invocation meets)."""

from __future__ import annotations

import numpy as np
import pytest

from q4gsw.runtime.submit import submit, wait
from q4gsw.tools.plain_read import (MAX_WORKGROUPS, NEVER, WG, PlainRead, invocation_xor, plain_read_workgroups,
                                    weight_bytes)


def run(runtime, data, sentinel=NEVER) -> int:
    """sink[0] after one plain read of data with sentinel."""
    plain = PlainRead.of_bytes(runtime, data, sentinel=sentinel)
    try:
        submit(runtime, plain.dispatches)
        wait(runtime)
        return plain.sink_value()
    finally:
        plain.release()


class TestPlainReadWorkgroups:
    @pytest.mark.parametrize(("words", "workgroups"), [
        (1, 1), (256, 1), (257, 2), (256 * 4096, 4096), (256 * 4096 + 1, 4096), (10**8, 4096)])
    def test_issue_grid(self, words, workgroups):
        """min(ceil(words / 256), 4096) workgroups of 256 invocations."""
        assert WG == 256 and MAX_WORKGROUPS == 4096
        assert plain_read_workgroups(words) == workgroups


class TestWeightBytes:
    @pytest.mark.parametrize(("n", "k", "gs", "extra_groups", "extra_cols"), [(5, 64, 32, 1, 3), (8, 100, 64, 0, 0)])
    def test_weights_then_used_scale_rows(self, make_problem, n, k, gs, extra_groups, extra_cols):
        """The packed weights, then the num_groups used scale rows (padded_N wide), zero-padded to 16."""
        pw = make_problem(1, n, k, gs, extra_groups=extra_groups, extra_cols=extra_cols).pw
        got = weight_bytes(pw)
        want = pw.weights.tobytes() + np.ascontiguousarray(pw.scales[: pw.num_groups]).tobytes()
        assert got.nbytes % 16 == 0 and got.nbytes - len(want) < 16
        assert got.tobytes() == want + bytes(got.nbytes - len(want))


@pytest.fixture(scope="module")
def data():
    """Random bytes of 2 * 4096 * 256 + 777 words: the grid is capped, so invocations loop 2 or
    3 times."""
    words = 2 * MAX_WORKGROUPS * WG + 777
    return np.random.default_rng(13).integers(0, 256, 16 * words, dtype=np.uint8)


class TestPlainRead:
    def test_never_writes(self, runtime, data):
        """With the timed run's sentinel nothing is written."""
        assert run(runtime, data) == 0

    @pytest.mark.parametrize("invocation", [0, 776, 777, 123_456, MAX_WORKGROUPS * WG - 1])
    def test_control_meets_sentinel_once(self, runtime, data, invocation):
        """A sentinel equal to one invocation's XOR of its whole stride (3 words for the first
        777 invocations, 2 after) makes exactly that invocation write its index + 1."""
        invocations = plain_read_workgroups(data.nbytes // 16) * WG
        assert run(runtime, data, invocation_xor(data, invocation, invocations)) == invocation + 1

    @pytest.mark.parametrize("invocation", [0, 777, MAX_WORKGROUPS * WG - 1])
    def test_every_word_counts(self, runtime, data, invocation):
        """Changing any one word of the control invocation's stride (first, last) breaks the
        match: the kernel loaded that word."""
        invocations = plain_read_workgroups(data.nbytes // 16) * WG
        sentinel = invocation_xor(data, invocation, invocations)
        strided = list(range(invocation, data.nbytes // 16, invocations))
        for word in (strided[0], strided[-1]):
            changed = data.copy()
            changed[16 * word] ^= 1
            assert run(runtime, changed, sentinel) == 0, word

    def test_small_buffer(self, runtime):
        """Fewer words than one workgroup's invocations: the grid is one workgroup."""
        data = (np.arange(4 * 37, dtype=np.uint32) * np.uint32(2654435761)).view(np.uint8)
        assert run(runtime, data, invocation_xor(data, 36, WG)) == 37

    def test_copies_and_release(self, runtime):
        """`copies` buffers, one dispatch each, all freed by release()."""
        live = runtime.buffers.live
        plain = PlainRead.of_bytes(runtime, np.ones(64, np.uint8), 3)
        assert len(plain.data) == len(plain.dispatches) == 3 and plain.nbytes == 64 and plain.workgroups == 1
        plain.release()
        assert runtime.buffers.live == live

    @pytest.mark.parametrize(("nbytes", "copies", "match"), [(0, 1, "multiple of 16"), (20, 1, "multiple of 16"),
                                                             (16, 0, "copies")])
    def test_refuses(self, runtime, nbytes, copies, match):
        """Sizes that are not a positive multiple of 16 and copies < 1 raise ValueError."""
        with pytest.raises(ValueError, match=match):
            PlainRead.of_bytes(runtime, np.zeros(nbytes, np.uint8), copies)

    def test_of_weight(self, runtime, make_problem):
        """of_weight reads weight_bytes(weight)."""
        pw = make_problem(1, 33, 96, 32).pw
        plain = PlainRead.of_weight(runtime, pw, 2)
        try:
            assert plain.nbytes == weight_bytes(pw).nbytes and len(plain.dispatches) == 2
        finally:
            plain.release()
