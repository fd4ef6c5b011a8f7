"""Tests of q4gsw.tools.yardsticks: the dense fp32 WGSL GEMM against a float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from q4gsw.tools.yardsticks import dense_gemm, dense_matmul


class TestDenseMatmul:
    @pytest.mark.parametrize("m, k, n", [
        (1, 64, 40),      # one row of x, N below one tile
        (9, 100, 130),    # odd M, K % 32 != 0, N just past one tile
        (130, 96, 200),   # M past one tile, N not a multiple of 128
        (131, 36, 257),   # odd M and N past two tiles, K below one step
    ])
    def test_matches_float64(self, runtime, rng, m, k, n):
        """Every element of x @ w.T matches float64 numpy (the output starts as NaN, so an
        element the kernel leaves unwritten fails)."""
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        y = dense_matmul(runtime, x, w)
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        assert y.shape == (m, n)
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * np.sqrt(k) * np.abs(ref).max())

    def test_rejects_k_not_multiple_of_4(self, runtime):
        """K % 4 != 0 raises ValueError naming the shapes."""
        with pytest.raises(ValueError, match="K % 4 == 0"):
            dense_matmul(runtime, np.ones((2, 6), np.float32), np.ones((3, 6), np.float32))


class TestDenseGemm:
    def test_result_fields(self, runtime, rng):
        """A timed run reports positive µs, its weight copies and a small error, like dense_gemv."""
        r = dense_gemm(runtime, 33, 64, 72, rng, rotate_bytes=1 << 20)
        assert r["kernel"] == "dense_gemm"
        assert r["median_us"] > 0 and r["tflop_per_s"] > 0
        assert r["weight_copies"] >= 1 and r["rotated_bytes"] == r["weight_copies"] * 4 * 64 * 72
        assert r["bytes"] == 4 * (72 * 64 + 33 * 64 + 33 * 72)
        assert r["rel_error"] < 1e-5

    def test_skips_k_not_multiple_of_4(self, runtime, rng):
        """K % 4 != 0 is reported as skipped, with the reason, and nothing is timed."""
        r = dense_gemm(runtime, 16, 30, 8, rng, rotate_bytes=0)
        assert "median_us" not in r
        assert "multiple of 4" in r["skipped"]
