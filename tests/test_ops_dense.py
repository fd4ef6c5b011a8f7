"""Tests of q4gsw.dense_linear, Chain.dense_linear and the dense kernels (q4gsw.kernels.dense):
every kernel and storage type against the float64 reference, the checks, the cache, the split."""

from __future__ import annotations

import gc
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import q4gsw
from q4gsw.chain import Chain
from q4gsw.kernels.dense import DENSE_KERNELS, GEMV_MAX_M, DenseProblem, select_dense

from .utils import ATOL, RTOL

DTYPES = ("float32", "float16")
#: (id, M, N, K): every edge the kernels have (odd K, odd N, N * K not a multiple of 4, K not a
#: multiple of 32, M = 1, M past one 128-row tile, N past one 128-feature tile).
SHAPES = [
    ("M1", 1, 37, 64),
    ("odd-K", 3, 9, 61),
    ("odd-N-K4", 5, 13, 36),
    ("K-not-32", 9, 17, 100),
    ("large-M", 130, 200, 96),
    ("large-M-odd-K", 131, 7, 45),
    ("K1", 2, 3, 1),
]


def random_dense(rng, n, k, dtype):
    return q4gsw.DenseWeight(rng.standard_normal((n, k)).astype(dtype))


def assert_matches(y, x, w, bias):
    """y float32 (..., N), every element written, within RTOL of sum |x * w| + |bias| (tests.utils.RTOL)."""
    ref = q4gsw.linear_reference(x, w, bias)
    magnitude = np.abs(np.asarray(x, np.float64)).reshape(-1, w.in_features) @ np.abs(w.dequantize()).T
    if bias is not None:
        magnitude += np.abs(bias)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.isfinite(y).all(), "an output element was not written"
    err = np.abs(y.astype(np.float64) - ref).reshape(magnitude.shape)
    assert (err <= RTOL * magnitude + ATOL).all(), float((err / (RTOL * magnitude + ATOL)).max())


class TestDenseLinear:
    @pytest.mark.parametrize("kernel", list(DENSE_KERNELS))
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize("m,n,k", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
    def test_matches_reference(self, runtime, rng, kernel, dtype, with_bias, m, n, k):
        """Each kernel that runs the shape matches the float64 reference on fresh data, for fp32
        and fp16 storage, with and without bias (outputs are poisoned, so an unwritten one fails)."""
        w = random_dense(rng, n, k, dtype)
        x = rng.standard_normal((m, k)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
        reason = DENSE_KERNELS[kernel].supports(DenseProblem(m, n, k, dtype, with_bias), runtime.caps)
        if reason:
            assert kernel != "general" and k % 4
            pytest.skip(reason)
        assert_matches(q4gsw.dense_linear(x, w, bias, kernel=kernel), x, w, bias)

    def test_default_kernel_and_batch(self, runtime, rng):
        """Without kernel=, a batched x (2, 3, K) gives (2, 3, N) matching the reference."""
        w = random_dense(rng, 10, 64, "float16")
        x = rng.standard_normal((2, 3, 64)).astype(np.float32)
        y = q4gsw.dense_linear(x, w)
        assert y.shape == (2, 3, 10)
        assert_matches(y, x, w, None)

    def test_raw_array_and_torch(self, runtime, rng):
        """A raw fp16 ndarray or a torch tensor serves as the weight; torch in gives torch out;
        a bfloat16 tensor is taken as float32 exactly."""
        torch = pytest.importorskip("torch")
        w16 = rng.standard_normal((7, 24)).astype(np.float16)
        x = rng.standard_normal((4, 24)).astype(np.float32)
        assert_matches(q4gsw.dense_linear(x, w16), x, q4gsw.DenseWeight(w16), None)
        wt = torch.from_numpy(rng.standard_normal((7, 24)).astype(np.float32)).to(torch.bfloat16)
        y = q4gsw.dense_linear(torch.from_numpy(x), wt)
        assert isinstance(y, torch.Tensor)
        assert_matches(y.numpy(), x, q4gsw.DenseWeight(wt.float().numpy()), None)

    def test_weight_uploaded_once(self, runtime, rng):
        """Repeated calls with one DenseWeight, or one raw array, upload it once; the copy goes
        with the object."""
        w = random_dense(rng, 12, 32, "float32")
        raw = rng.standard_normal((12, 32)).astype(np.float32)
        x = rng.standard_normal((1, 32)).astype(np.float32)
        for weight in (w, raw):
            counts = []
            for _ in range(3):
                before = runtime.buffers.created
                q4gsw.dense_linear(x, weight)
                counts.append(runtime.buffers.created - before)
            assert counts[1] == counts[2] == counts[0] - 1  # the first call also uploads the weight
        cached = len(runtime.weights)
        del w, raw, weight
        gc.collect()
        assert len(runtime.weights) <= cached - 2

    @pytest.mark.parametrize("kernel", list(DENSE_KERNELS))
    def test_split_along_n(self, runtime, rng, fake_limits, kernel):
        """A weight past the binding limit is split along N; each chunk writes its own columns."""
        w = random_dense(rng, 50, 16, "float32")  # 64 bytes a row
        x = rng.standard_normal((2, 16)).astype(np.float32)
        bias = rng.standard_normal(50).astype(np.float32)
        with fake_limits(max_storage_buffer_binding_size=512):
            y = q4gsw.dense_linear(x, w, bias, kernel=kernel)
            assert len(runtime.weights.chunks(w)) == 7  # 8 rows a chunk
        assert_matches(y, x, w, bias)

    def test_empty_batch(self, runtime, rng, no_new_buffers):
        """M = 0 gives (0, N) float32 without touching the GPU."""
        w = random_dense(rng, 5, 8, "float32")
        with no_new_buffers():
            y = q4gsw.dense_linear(np.zeros((0, 8), np.float32), w)
        assert y.shape == (0, 5) and y.dtype == np.float32

    @pytest.mark.parametrize("args,error,match", [
        ((np.ones((2, 8), np.float64), "w"), q4gsw.DTypeError, "'x'"),
        ((np.ones((2, 9), np.float32), "w"), q4gsw.ShapeError, "'x'.*K = 8"),
        ((np.ones((2, 8), np.float32), np.ones((5, 8), np.float64)), q4gsw.DTypeError, "dense_linear: argument 'weight'"),
        ((np.ones((2, 8), np.float32), np.ones(8, np.float32)), q4gsw.ShapeError, "dense_linear: argument 'weight'"),
        ((np.ones((2, 8), np.float32), [[1.0] * 8]), q4gsw.DTypeError, "'weight'"),
        ((np.ones((2, 8), np.float32), "w", np.ones(4, np.float32)), q4gsw.ShapeError, "'bias'"),
        ((np.ones((2, 8), np.float32), "w", np.ones(5, np.float64)), q4gsw.DTypeError, "'bias'"),
    ], ids=["x-float64", "x-wrong-K", "w-float64", "w-1d", "w-list", "bias-shape", "bias-dtype"])
    def test_bad_input(self, runtime, rng, no_new_buffers, args, error, match):
        """Bad input raises a typed error naming the argument, before any GPU buffer exists."""
        args = tuple(random_dense(rng, 5, 8, "float32") if isinstance(a, str) else a for a in args)
        with no_new_buffers(), pytest.raises(error, match=match):
            q4gsw.dense_linear(*args)

    def test_unsupported_kernel(self, runtime, rng, no_new_buffers):
        """A named kernel that cannot run the shape, or an unknown name, raises UnsupportedShapeError."""
        w = random_dense(rng, 5, 9, "float32")
        with no_new_buffers():
            with pytest.raises(q4gsw.UnsupportedShapeError, match="'gemv'.*multiple of 4"):
                q4gsw.dense_linear(np.ones((1, 9), np.float32), w, kernel="gemv")
            with pytest.raises(q4gsw.UnsupportedShapeError, match="unknown dense kernel"):
                q4gsw.dense_linear(np.ones((1, 9), np.float32), w, kernel="tiled")

    def test_profiled(self, runtime, rng):
        """Inside q4gsw.profile() the dispatch is one row labelled dense_linear/<kernel>."""
        if not runtime.caps.has_timestamps:
            pytest.skip("no timestamp-query")
        w = random_dense(rng, 24, 64, "float16")
        x = rng.standard_normal((1, 64)).astype(np.float32)
        with q4gsw.profile() as prof:
            y = q4gsw.dense_linear(x, w)
        assert [r["label"] for r in prof.rows()] == ["dense_linear/gemv"]
        assert prof.rows()[0]["calls"] == 1
        assert_matches(y, x, w, None)

    def test_fp16_without_shader_f16(self, runtime):
        """fp16 storage needs no `shader-f16`: with the feature (and subgroups) off, an fp16
        weight still matches the reference (the kernels widen halves with unpack2x16float)."""
        code = (
            "import numpy as np, q4gsw\n"
            "rt = q4gsw.get_runtime()\n"
            "assert 'shader-f16' not in rt.caps.features\n"
            "rng = np.random.default_rng(7)\n"
            "w = q4gsw.DenseWeight.from_float(rng.standard_normal((19, 40)).astype(np.float32))\n"
            "for m in (1, 20):\n"
            "    x = rng.standard_normal((m, 40)).astype(np.float32)\n"
            "    y = q4gsw.dense_linear(x, w)\n"
            "    ref = q4gsw.linear_reference(x, w)\n"
            "    assert np.abs(y - ref).max() <= 1e-5 * (np.abs(x) @ np.abs(w.dequantize()).T).max(), m\n"
            "print('ok')\n")
        env = {**os.environ, "Q4GSW_DISABLE_FEATURES": "shader-f16,subgroup", "Q4GSW_POISON_OUTPUTS": "1",
               "PYTHONPATH": str(pathlib.Path(q4gsw.__file__).parents[1])}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


class TestDenseWeight:
    def test_from_float(self, rng):
        """from_float stores float16 (rounded to nearest) or float32; nbytes and dequantize follow."""
        w = rng.standard_normal((6, 10)).astype(np.float32)
        h = q4gsw.DenseWeight.from_float(w)
        assert h.dtype == "float16" and h.nbytes == 6 * 10 * 2
        np.testing.assert_array_equal(h.dequantize(), w.astype(np.float16).astype(np.float64))
        f = q4gsw.DenseWeight.from_float(w, "float32")
        assert f.dtype == "float32" and f.nbytes == 240 and (f.in_features, f.out_features) == (10, 6)
        assert not f.weights.flags.writeable

    def test_from_float_refuses(self):
        """Values past fp16's range, NaN, and unknown dtypes raise typed errors naming the argument."""
        with pytest.raises(q4gsw.ValueRangeError, match="'w'.*float32"):
            q4gsw.DenseWeight.from_float(np.full((2, 2), 1e5, np.float32))
        with pytest.raises(q4gsw.ValueRangeError, match="'w'"):
            q4gsw.DenseWeight.from_float(np.full((2, 2), np.nan, np.float32))
        with pytest.raises(q4gsw.DTypeError, match="'dtype'"):
            q4gsw.DenseWeight.from_float(np.ones((2, 2), np.float32), "bfloat16")
        with pytest.raises(q4gsw.ShapeError, match="'weights'"):
            q4gsw.DenseWeight(np.ones((0, 4), np.float32))


class TestSelectDense:
    def test_routing(self):
        """gemv up to GEMV_MAX_M rows, gemm above, general where K % 4 != 0 (pure: no GPU)."""
        assert select_dense(DenseProblem(1, 384, 384), None).name == "gemv"
        assert select_dense(DenseProblem(GEMV_MAX_M, 384, 384), None).name == "gemv"
        assert select_dense(DenseProblem(GEMV_MAX_M + 1, 384, 384), None).name == "gemm"
        assert select_dense(DenseProblem(1, 384, 383), None).name == "general"
        assert select_dense(DenseProblem(500, 384, 383), None).name == "general"

    def test_keys(self):
        """Keys carry the storage type's weight file and label as dense_linear/<kernel>."""
        key = DENSE_KERNELS["gemm"].key(DenseProblem(200, 64, 100, "float16", True))
        assert key.label == "dense_linear/gemm" and key.sources == ("dense_gemm", "dense_weight_f16")
        assert dict(key.constants) == {"HAS_BIAS": True, "K_TAIL": True}


class TestChainDenseLinear:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("m,k", [(1, 64), (20, 96), (3, 45)])
    def test_mixed_chain(self, runtime, rng, dtype, m, k):
        """An int4 linear, then a dense one, in one chain: equal to the ops run one by one and
        to the float64 reference of the two steps."""
        pw = q4gsw.quantize(rng.standard_normal((32, k)).astype(np.float32), 16)
        w = random_dense(rng, 24, 32, dtype)
        bias = rng.standard_normal(24).astype(np.float32)
        x0 = rng.standard_normal((m, k)).astype(np.float32)
        with Chain() as chain:
            x = chain.input((m, k))
            h = chain.linear(x, pw)
            y = chain.dense_linear(h, w, bias)
            chain.run({x: x0})
            h_op = q4gsw.linear(x0, pw)
            np.testing.assert_array_equal(y.numpy(), q4gsw.dense_linear(h_op, w, bias))
            assert_matches(y.numpy(), h_op, w, bias)

    def test_bias_tensor_and_checks(self, runtime, rng, no_new_buffers):
        """A GpuTensor bias is used as it is; a raw array weight or a wrong K is refused before
        any buffer is made."""
        w = random_dense(rng, 6, 8, "float32")
        b = rng.standard_normal(6).astype(np.float32)
        x0 = rng.standard_normal((2, 8)).astype(np.float32)
        with Chain() as chain:
            x, bt = chain.input((2, 8)), chain.constant(b)
            y = chain.dense_linear(x, w, bt)
            chain.run({x: x0})
            assert_matches(y.numpy(), x0, w, b)
            with no_new_buffers():
                with pytest.raises(q4gsw.DTypeError, match="Chain.dense_linear: argument 'weight'"):
                    chain.dense_linear(x, w.weights)
                with pytest.raises(q4gsw.ShapeError, match="'x'"):
                    chain.dense_linear(x, random_dense(rng, 6, 9, "float32"))
