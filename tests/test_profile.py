"""Tests of q4gsw.profile: GPU-timestamp rows per kernel label and the table."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

import q4gsw
from q4gsw.kernels import KERNELS, Problem, select


@pytest.fixture
def timestamps(runtime):
    """The runtime, or a skip when the adapter has no timestamp-query."""
    if not runtime.caps.has_timestamps:
        pytest.skip(f"{runtime.caps.adapter_name} has no timestamp-query")
    return runtime


class TestProfile:
    def test_rows_per_label(self, timestamps, make_problem):
        """One row per kernel label, counting every call, with positive times and bandwidth."""
        case = make_problem(3, 24, 64, 32)
        label = f"linear_q4gsw/{select(Problem(3, 24, 64, 32, True), timestamps.caps).name}"
        with q4gsw.profile() as prof:
            for _ in range(3):
                q4gsw.linear(case.x, case.pw, case.bias)
        rows = prof.rows()
        assert [r["label"] for r in rows] == [label]
        row = rows[0]
        assert row["calls"] == 3
        assert row["mean_us"] > 0 and row["median_us"] > 0 and row["total_us"] > 0
        assert row["total_us"] == pytest.approx(3 * row["mean_us"])
        assert row["gb_per_s"] > 0 and row["tflop_per_s"] > 0
        assert math.isfinite(row["pct_of_peak"]) and row["pct_of_peak"] > 0

    def test_bytes_counted(self, timestamps, make_problem):
        """GB/s counts weight bytes, used scales, x and the output, over the GPU time."""
        m, n, k, gs = 2, 16, 48, 16
        case = make_problem(m, n, k, gs)
        with q4gsw.profile() as prof:
            q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
        (record,) = prof.records
        assert record.nbytes == n * 24 + 4 * 3 * n + 4 * m * k + 4 * m * n
        assert record.flops == 2 * m * n * k
        assert prof.rows()[0]["gb_per_s"] == pytest.approx(record.nbytes / record.ns)

    def test_forced_kernels_labelled(self, timestamps, make_problem):
        """Each forced kernel gets its own 'linear_q4gsw/<kernel>' row, in call order."""
        case = make_problem(2, 12, 64, 32)
        p = Problem(2, 12, 64, 32, True)
        names = [name for name, spec in KERNELS.items() if spec.supports(p, timestamps.caps) is None]
        assert "rowwise" in names
        with q4gsw.profile() as prof:
            for name in names:
                q4gsw.linear(case.x, case.pw, case.bias, kernel=name)
            q4gsw.linear(case.x, case.pw, case.bias, kernel="rowwise")
        rows = {r["label"]: r for r in prof.rows()}
        assert list(rows) == [f"linear_q4gsw/{name}" for name in names]
        assert rows["linear_q4gsw/rowwise"]["calls"] == 2

    def test_table(self, timestamps, make_problem):
        """table() shows the header with '% peak', each label, and the peak it compares with."""
        case = make_problem(2, 12, 64, 32)
        with q4gsw.profile() as prof:
            q4gsw.linear(case.x, case.pw, case.bias, kernel="rowwise")
        table = prof.table()
        assert "% peak" in table.splitlines()[0] and "GB/s" in table.splitlines()[0]
        assert "linear_q4gsw/rowwise" in table
        assert timestamps.caps.adapter_name in table

    def test_results_unchanged(self, timestamps, make_problem):
        """Profiling does not change what linear computes."""
        case = make_problem(3, 10, 40, 8)
        plain = q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
        with q4gsw.profile():
            profiled = q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
        np.testing.assert_array_equal(plain, profiled)

    def test_only_inside_block(self, timestamps, make_problem):
        """Calls before and after the block are not recorded, and an empty profile has an empty table."""
        case = make_problem(2, 8, 16, 8)
        with q4gsw.profile() as prof:
            pass
        q4gsw.linear(case.x, case.pw)
        assert prof.rows() == [] and prof.records == []
        assert "no dispatches" in prof.table()

    def test_without_timestamps(self, runtime):
        """An adapter without timestamp-query raises ProfilerError naming the feature."""
        fake = SimpleNamespace(caps=dataclasses.replace(runtime.caps, features=frozenset()))
        with pytest.raises(q4gsw.ProfilerError, match="timestamp-query"):
            with q4gsw.profile(fake):
                pass
