"""Tests of q4gsw.tools.bench: every shape gets the plain read of its weight bytes, the routed
kernel and the ratios, in the JSON and the Markdown."""

from __future__ import annotations

import numpy as np
import pytest

from q4gsw.kernels import Problem, select
from q4gsw.tools.bench import bench, markdown
from q4gsw.tools.plain_read import weight_bytes
from q4gsw.tools.workload import random_weight


@pytest.fixture(scope="module")
def result(runtime):
    """One small run: M = 1 (routed to a decode kernel, listed) and M = 4 with only tiled
    listed (the routed kernel is timed as an extra row)."""
    return bench([(1, 128, 96), (4, 64, 40)], ["decode_subgroup", "decode_workgroup", "tiled"], repeats=2,
                 log=lambda *a: None)


class TestBench:
    def test_plain_read_per_shape(self, result, runtime):
        """Each shape's yardstick entry holds the plain read of exactly its weight + scale bytes,
        through as many copies as the kernels rotate, without --yardsticks."""
        assert [(y["m"], y["k"], y["n"]) for y in result["yardsticks"]] == [(1, 128, 96), (4, 64, 40)]
        for y in result["yardsticks"]:
            w = random_weight(np.random.default_rng(0), y["n"], y["k"], 128)
            assert y["plain_read_bytes"] == weight_bytes(w).nbytes
            assert y["plain_read_us"] > 0 and y["plain_read_gb_per_s"] > 0
            assert y["plain_read_copies"] == 1  # a CPU adapter rotates nothing
            assert y["plain_read_workgroups"] == -(-y["plain_read_bytes"] // 16 // 256)
            assert "dense_f32_wgsl" not in y  # yardsticks=False: no dense or torch timings

    def test_rows_over_plain_read(self, result):
        """Every row's over_plain_read is its median over the shape's plain read."""
        plain = {(y["m"], y["k"], y["n"]): y["plain_read_us"] for y in result["yardsticks"]}
        for r in result["rows"]:
            assert r["over_plain_read"] == pytest.approx(r["median_us"] / plain[(r["m"], r["k"], r["n"])])

    def test_routed_kernel(self, result, runtime):
        """The routed kernel is marked (one row per shape) and its ratio copied into the entry; a
        route that is not listed is timed as '<name> (routed)'."""
        for y in result["yardsticks"]:
            routed = [r for r in result["rows"] if r["routed"] and (r["m"], r["k"], r["n"]) == (y["m"], y["k"], y["n"])]
            assert len(routed) == 1
            assert y["routed_kernel"] == select(Problem(y["m"], y["n"], y["k"], 128), runtime.caps,
                                                tuned=runtime.tuned).name
            assert y["routed_us"] == routed[0]["median_us"]
            assert y["routed_over_plain_read"] == routed[0]["over_plain_read"]
        m4 = [r["kernel"] for r in result["rows"] if r["m"] == 4]
        assert m4[:3] == ["decode_subgroup", "decode_workgroup", "tiled"] and m4[3].endswith(" (routed)")
        assert all(r["rel_error"] < 1e-5 for r in result["rows"])

    def test_markdown(self, result):
        """The Markdown has the '× plain read' column, the routed kernel in bold, and the plain
        read section with each shape's routed / plain read ratio."""
        text = markdown(result)
        assert "| × plain read |" in text and "## Plain read of the same bytes (same run)" in text
        for y in result["yardsticks"]:
            assert f"| {y['routed_over_plain_read']:.2f}× |" in text
            assert f"**{y['routed_kernel']}" in text
        assert "## Yardsticks" not in text

    def test_markdown_of_older_results(self, result):
        """Results written before the plain read (no over_plain_read, dense-only yardsticks) still render."""
        old = {**result, "rows": [{k: v for k, v in r.items() if k not in ("over_plain_read", "routed")}
                                  for r in result["rows"]],
               "yardsticks": [{"m": 1, "k": 128, "n": 96, "dense_f32_wgsl": {"median_us": 1.0}}]}
        text = markdown(old)
        assert "## Plain read" not in text and "## Yardsticks" in text
