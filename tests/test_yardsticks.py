"""Tests of q4gsw.tools.yardsticks: the dense fp32 WGSL GEMM against a float64 numpy reference,
and the ONNX Runtime MatMulNBits yardstick (its model on the CPU EP; the WebGPU EP where installed)."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw

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


class TestMatmulNbitsModel:
    """The ONNX Runtime yardstick's one-node MatMulNBits model, run here on ORT's CPU EP."""

    @pytest.mark.parametrize(("level", "fp16", "bound"), [(0, False, 1e-5), (4, False, 2e-2), (0, True, 2e-3)])
    def test_cpu_matches_reference(self, rng, level, fp16, bound):
        """The model computes linear_q4gsw of the same PackedWeight (symmetric, zero point 8):
        to fp32 rounding at accuracy_level 0, to int8-activation error at level 4."""
        pytest.importorskip("onnx")
        ort = pytest.importorskip("onnxruntime")
        from q4gsw.tools.workload import random_weight
        from q4gsw.tools.yardsticks import ort_matmul_nbits

        weight = random_weight(rng, 40, 256, 64)
        x = rng.standard_normal((5, 256)).astype(np.float32)
        r = ort_matmul_nbits(x, weight, provider="CPUExecutionProvider", accuracy_level=level, fp16=fp16,
                             iterations=2)
        ref = q4gsw.linear_reference(x, weight)
        assert r["y"].shape == (5, 40) and r["provider"] == "CPUExecutionProvider" and r["median_us"] > 0
        assert np.abs(r["y"] - ref).max() <= bound * np.abs(ref).max()
        assert "CPUExecutionProvider" in ort.get_available_providers()

    def test_refuses_blocks_it_cannot_express(self, rng):
        """K not a multiple of the group size, or a group size that is no power of two, raises ValueError."""
        pytest.importorskip("onnx")
        from q4gsw.tools.workload import random_weight
        from q4gsw.tools.yardsticks import matmul_nbits_model

        with pytest.raises(ValueError, match="power-of-two"):
            matmul_nbits_model(random_weight(rng, 4, 96, 64))
        with pytest.raises(ValueError, match="power-of-two"):
            matmul_nbits_model(random_weight(rng, 4, 96, 96))


class TestOrtWebgpu:
    def test_empty_without_the_webgpu_ep(self, rng, monkeypatch):
        """Without ORT's WebGPU execution provider the yardstick is {} (nothing runs)."""
        ort = pytest.importorskip("onnxruntime")
        from q4gsw.tools.yardsticks import ort_webgpu

        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
        assert ort_webgpu(4, 128, 32, 128, rng) == {}

    def test_rows_where_installed(self, rng):
        """With onnxruntime-webgpu installed, every row ran on the WebGPU EP with GPU times and an error."""
        ort = pytest.importorskip("onnxruntime")
        from q4gsw.tools.yardsticks import ORT_CONFIGS, ORT_WEBGPU, ort_webgpu

        if ORT_WEBGPU not in ort.get_available_providers():
            pytest.skip("onnxruntime has no WebGPU EP here (package onnxruntime-webgpu)")
        r = ort_webgpu(16, 256, 64, 128, rng, iterations=3)
        for row, level, dtype in ORT_CONFIGS:
            assert r[row]["provider"] == ORT_WEBGPU and r[row]["median_us"] > 0, r[row]
            assert r[row]["rel_error"] < (2e-2 if level == 4 or dtype == "fp16" else 1e-5)
