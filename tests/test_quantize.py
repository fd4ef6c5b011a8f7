"""Tests of q4gsw.quantize: torchao's symmetric int4 rule, its error bound, quantization_error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import q4gsw
from q4gsw import DTypeError, GroupSizeError, ShapeError
from q4gsw.quantize import corrected_bias, quantize_with_scales, search_scales

from .strategies import float_weights, seeds
from .utils import assert_matches_reference

EPS32 = np.float32(np.finfo(np.float32).eps)
#: |w - q * scale| / scale allowed: half a step, plus fp32 rounding. q = round(fl(fl(1/s) * w))
#: deviates from w / s by at most |w / s| * 2 u <= 7.5 * 2**-23 steps, and at w = +amax
#: (7.5 steps, clamped to 7) the float32 scale's own rounding adds 7.5 * 2**-24; 2**-19
#: (1.9e-6) covers both.
STEP_BOUND = 0.5 + 2.0**-19


def torchao_symmetric(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """An independent transcription of torchao's choose_qparams_affine + quantize_affine for
    MappingType.SYMMETRIC, quant_min=-8, quant_max=7, eps=finfo(float32).eps, one group at a
    time; the remainder of a row that group_size does not divide is its own group.

    Returns (scales (num_groups, N) float32, q (N, K) int64).
    """
    quant_min, quant_max = -8, 7
    w = np.asarray(w, np.float32)
    n, k = w.shape
    num_groups = -(-k // group_size)
    scales = np.empty((num_groups, n), np.float32)
    q = np.empty((n, k), np.int64)
    for row in range(n):
        for g in range(num_groups):
            block = w[row, g * group_size:(g + 1) * group_size]
            min_val_neg = np.minimum(block.min(), np.float32(0))
            max_val_pos = np.maximum(block.max(), np.float32(0))
            max_val_pos = np.maximum(-min_val_neg, max_val_pos)
            scale = max_val_pos / np.float32((quant_max - quant_min) / 2)
            scale = np.maximum(scale, EPS32)
            scales[g, row] = scale
            quant = np.round(block * (np.float32(1.0) / scale))  # half to even, as torch.round
            q[row, g * group_size:(g + 1) * group_size] = np.clip(quant, quant_min, quant_max)
    return scales, q


def scale_per_element(pw: q4gsw.PackedWeight) -> np.ndarray:
    """(N, K) float64: the scale each element uses."""
    k = pw.in_features
    return pw.scales[np.arange(k) // pw.group_size, : pw.out_features].T.astype(np.float64)


class TestQuantize:
    @given(float_weights())
    def test_error_bound(self, case):
        """|w - dequantize(quantize(w))| <= scale / 2 (plus fp32 rounding) everywhere, amax included."""
        w, gs = case
        pw = q4gsw.quantize(w, gs)
        err = np.abs(w.astype(np.float64) - pw.dequantize())
        assert (err <= STEP_BOUND * scale_per_element(pw)).all()

    @given(float_weights())
    def test_matches_torchao_rule(self, case):
        """Scales and q equal an independent implementation of torchao's symmetric rule, exactly."""
        w, gs = case
        pw = q4gsw.quantize(w, gs)
        scales, q = torchao_symmetric(w, gs)
        np.testing.assert_array_equal(pw.scales, scales)
        np.testing.assert_array_equal(pw.unpack(), q)

    def test_output_format(self, rng):
        """The PackedWeight has (ceil(K/gs), N) scales, K = in_features, and the given group size."""
        w = rng.standard_normal((5, 37)).astype(np.float32)
        pw = q4gsw.quantize(w, 16)
        assert pw.weights.shape == (5, 19) and pw.weights.dtype == np.uint8
        assert pw.scales.shape == (3, 5) and pw.scales.dtype == np.float32
        assert (pw.in_features, pw.out_features, pw.group_size) == (37, 5, 16)

    def test_default_group_size(self, rng):
        """The default group size is 128."""
        assert q4gsw.quantize(rng.standard_normal((2, 300)).astype(np.float32)).group_size == 128

    def test_extremes_and_ties(self):
        """With amax = 7.5 (scale 1): +amax clamps to 7, -amax rounds to -8 (both half a step off), ties go to even."""
        w = np.array([[7.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -7.5]], np.float32)
        pw = q4gsw.quantize(w, 8)
        assert pw.scales[0, 0] == np.float32(1.0)
        np.testing.assert_array_equal(pw.unpack(), [[7, 0, 2, 2, 0, -2, -2, -8]])
        err = np.abs(w - pw.dequantize())
        assert err[0, 0] == 0.5
        assert err[0, -1] == 0.5
        assert err.max() == 0.5

    def test_positive_amax_error_is_half_step(self, rng):
        """A group whose amax is positive quantizes +amax to 7, half a step off."""
        w = rng.uniform(-1.0, 1.0, (4, 32)).astype(np.float32)
        w[:, 5] = 3.0  # the amax of group 0 of every row, positive
        pw = q4gsw.quantize(w, 16)
        np.testing.assert_array_equal(pw.unpack()[:, 5], 7)
        err_steps = np.abs(w[:, 5] - pw.dequantize()[:, 5]) / pw.scales[0].astype(np.float64)
        np.testing.assert_allclose(err_steps, 0.5, rtol=1e-6)

    def test_zero_group(self, rng):
        """An all-zero group gets scale eps and q = 0; other groups are untouched by it."""
        w = rng.standard_normal((3, 24)).astype(np.float32)
        w[1, 8:16] = 0.0
        pw = q4gsw.quantize(w, 8)
        assert pw.scales[1, 1] == EPS32
        np.testing.assert_array_equal(pw.unpack()[1, 8:16], 0)
        assert (pw.scales[[0, 2], 1] > EPS32).all()

    def test_tiny_group_uses_eps(self):
        """A group with amax / 7.5 below eps gets scale eps (torchao's clamp)."""
        w = np.array([[1e-7, -3e-7, 2e-7, 0.0]], np.float32)
        pw = q4gsw.quantize(w, 4)
        assert pw.scales[0, 0] == EPS32
        np.testing.assert_array_equal(pw.unpack(), np.clip(np.round(w / EPS32), -8, 7))

    def test_remainder_group(self, rng):
        """The last group of a K that group_size does not divide uses only the row's remainder."""
        w = rng.uniform(-1.0, 1.0, (2, 10)).astype(np.float32)
        w[:, 9] = [4.0, -6.0]
        pw = q4gsw.quantize(w, 4)  # groups [0, 4), [4, 8), [8, 10)
        np.testing.assert_array_equal(pw.scales[2], np.float32([4.0, 6.0]) / np.float32(7.5))

    def test_float64_input(self, rng):
        """A float64 weight quantizes exactly as its float32 rounding does."""
        w = rng.standard_normal((4, 40))
        a, b = q4gsw.quantize(w, 16), q4gsw.quantize(w.astype(np.float32), 16)
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.scales, b.scales)

    def test_float64_beyond_float32_range(self):
        """A finite float64 weight that float32 cannot hold is refused, not quantized to inf scales."""
        w = np.array([[1e300, 1.0, -2.0, 0.5]])
        with pytest.raises(q4gsw.ValueRangeError, match="'w'"):
            q4gsw.quantize(w, 4)

    def test_linear_close_to_float_matmul(self, runtime, rng):
        """linear on the quantized weight is within 13% (Frobenius) of x @ w.T for normal data at gs=32.

        Rounding to a step s = amax / 7.5 errs by about s / sqrt(12) per element, uniformly; the
        amax of 32 standard normals is about 2.3, so the relative error of w, and so of x @ w.T
        for independent x, is about 2.3 / 7.5 / sqrt(12) = 0.09 (measured: 0.091 to 0.098 over
        seeds, with a spread of 0.002 at this size). 0.13 leaves room without hiding a wrong step.
        """
        w = rng.standard_normal((64, 256)).astype(np.float32)
        x = rng.standard_normal((8, 256)).astype(np.float32)
        pw = q4gsw.quantize(w, 32)
        y = q4gsw.linear(x, pw)
        assert_matches_reference(y, x, pw)
        exact = x.astype(np.float64) @ w.T.astype(np.float64)
        assert np.linalg.norm(y - exact) / np.linalg.norm(exact) < 0.13

    @pytest.mark.parametrize("w,error,match", [
        ([[1.0, 2.0]], DTypeError, "'w'"),
        (np.ones((2, 4), np.int32), DTypeError, "'w'"),
        (np.ones((2, 4), np.float16), DTypeError, "'w'"),
        (np.ones(4, np.float32), ShapeError, "'w'"),
        (np.ones((2, 2, 4), np.float32), ShapeError, "'w'"),
        (np.ones((0, 4), np.float32), ShapeError, "'w'"),
        (np.ones((2, 0), np.float32), ShapeError, "'w'"),
        (np.array([[1.0, np.nan]], np.float32), q4gsw.ValueRangeError, "'w'"),
        (np.array([[1.0, np.inf]], np.float32), q4gsw.ValueRangeError, "'w'"),
    ], ids=["list", "int32", "float16", "1-D", "3-D", "N=0", "K=0", "nan", "inf"])
    def test_invalid_weight(self, w, error, match):
        """A malformed weight raises its ArgumentError subclass naming 'w'."""
        with pytest.raises(error, match=match):
            q4gsw.quantize(w, 4)

    @pytest.mark.parametrize("gs", [0, -1, 1.5, True, None])
    def test_invalid_group_size(self, rng, gs):
        """A group size that is not a positive int raises GroupSizeError naming 'group_size'."""
        with pytest.raises(GroupSizeError, match="'group_size'"):
            q4gsw.quantize(rng.standard_normal((2, 8)).astype(np.float32), gs)


class TestQuantizationError:
    def test_fields(self, rng):
        """The fields are the relative Frobenius error, max |error|, and max |error| / scale."""
        w = rng.standard_normal((6, 50)).astype(np.float32)
        pw = q4gsw.quantize(w, 16)
        diff = np.abs(w.astype(np.float64) - pw.dequantize())
        result = q4gsw.quantization_error(w, pw)
        assert isinstance(result, q4gsw.QuantizationError)
        assert result.relative_frobenius == pytest.approx(np.linalg.norm(diff) / np.linalg.norm(w.astype(np.float64)))
        assert result.max_abs == pytest.approx(diff.max())
        assert result.max_abs_over_scale == pytest.approx((diff / scale_per_element(pw)).max())
        assert 0.0 < result.max_abs_over_scale <= STEP_BOUND
        assert "%" in str(result)

    def test_zero_weight(self):
        """An all-zero weight has zero error, reported as 0 rather than NaN."""
        w = np.zeros((2, 8), np.float32)
        result = q4gsw.quantization_error(w, q4gsw.quantize(w, 4))
        assert (result.relative_frobenius, result.max_abs, result.max_abs_over_scale) == (0.0, 0.0, 0.0)

    def test_shape_mismatch(self, rng):
        """A weight of another shape than the PackedWeight raises ShapeError naming 'w'."""
        w = rng.standard_normal((4, 16)).astype(np.float32)
        with pytest.raises(ShapeError, match="'w'"):
            q4gsw.quantization_error(w[:, :15], q4gsw.quantize(w, 8))


class TestQuantizeGptq:
    @staticmethod
    def _problem(rng, n=48, k=96, samples=400):
        """Weights and inputs with unequal, correlated channels (where GPTQ should help)."""
        w = rng.standard_normal((n, k)).astype(np.float32)
        mix = rng.standard_normal((k, k)) * 0.3 + np.diag(rng.uniform(0.2, 3.0, k))
        x = (rng.standard_normal((samples, k)) @ mix).astype(np.float32)
        return w, x

    def test_format(self, rng):
        """The result is a valid PackedWeight of the same layout as quantize()'s."""
        w, x = self._problem(rng)
        pw = q4gsw.quantize_gptq(w, x, 32)
        ref = q4gsw.quantize(w, 32)
        assert pw.weights.shape == ref.weights.shape and pw.scales.shape == ref.scales.shape
        assert pw.group_size == 32 and pw.in_features == w.shape[1]
        assert (pw.scales > 0).all()
        assert pw.unpack().min() >= -8 and pw.unpack().max() <= 7

    def test_lower_output_error_than_round_to_nearest(self, rng):
        """On held-out inputs of the same distribution, ||x W^T - x Q^T|| is smaller than with quantize()."""
        w, x = self._problem(rng, samples=800)
        fit, held_out = x[:400], x[400:]
        exact = held_out.astype(np.float64) @ w.T.astype(np.float64)
        err_rtn = np.linalg.norm(q4gsw.linear_reference(held_out, q4gsw.quantize(w, 32)) - exact)
        err_gptq = np.linalg.norm(q4gsw.linear_reference(held_out, q4gsw.quantize_gptq(w, fit, 32)) - exact)
        assert err_gptq < 0.9 * err_rtn

    def test_runs_on_the_gpu(self, runtime, rng):
        """A GPTQ weight runs through linear() like any PackedWeight, matching its reference."""
        w, x = self._problem(rng, n=33, k=64)
        pw = q4gsw.quantize_gptq(w, x, 32)
        x1 = x[:3]
        y = q4gsw.linear(x1, pw)
        ref = q4gsw.linear_reference(x1, pw)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-6

    @pytest.mark.parametrize("bad", ["w-int", "x-wrong-k", "x-empty", "nan", "gs-0"])
    def test_bad_input(self, rng, bad):
        """Malformed arguments raise the matching Q4gswError naming the argument."""
        w, x = self._problem(rng, n=4, k=32, samples=8)
        args = {"w-int": (w.astype(np.int32), x, 32, q4gsw.DTypeError, "'w'"),
                "x-wrong-k": (w, x[:, :16], 32, q4gsw.ShapeError, "'x'"),
                "x-empty": (w, x[:0], 32, q4gsw.ShapeError, "'x'"),
                "nan": (np.where(w > 1, np.nan, w).astype(np.float32), x, 32, q4gsw.ValueRangeError, "'w'"),
                "gs-0": (w, x, 0, q4gsw.GroupSizeError, "'group_size'")}[bad]
        with pytest.raises(args[3], match=args[4]):
            q4gsw.quantize_gptq(*args[:3])


def group_error(w: np.ndarray, pw: q4gsw.PackedWeight, importance: np.ndarray) -> np.ndarray:
    """(N, groups) float64: sum over each group of importance[k] * (w - q * scale)^2."""
    n, k = w.shape
    gs = pw.group_size
    groups = -(-k // gs)
    sq = np.zeros((n, groups * gs))
    sq[:, :k] = (w.astype(np.float64) - pw.dequantize()) ** 2 * importance
    return sq.reshape(n, groups, gs).sum(axis=2)


class TestSearchScales:
    @given(float_weights(), seeds)
    def test_in_format_and_no_worse_than_round_to_nearest(self, case, seed):
        """On fresh random weights and importances: scales > 0 of the format's shape, q in [-8, 7],
        and every group's weighted error <= quantize()'s (torchao's scale is a candidate)."""
        w, gs = case
        importance = np.random.default_rng(seed).uniform(0.0, 4.0, w.shape[1])
        scales = search_scales(w, gs, importance=importance)
        assert scales.shape == (-(-w.shape[1] // gs), w.shape[0]) and scales.dtype == np.float32
        assert (scales > 0).all() and np.isfinite(scales).all()
        pw = quantize_with_scales(w, scales, gs)
        q = pw.unpack()
        assert q.min() >= -8 and q.max() <= 7
        np.testing.assert_array_equal(pw.scales, scales)
        searched, rtn = group_error(w, pw, importance), group_error(w, q4gsw.quantize(w, gs), importance)
        assert (searched <= rtn * (1 + 1e-12)).all()

    def test_lower_error_on_gaussian_weights(self, rng):
        """On Gaussian weights the searched scales clip the tails: the squared error drops by > 10%."""
        w = rng.standard_normal((64, 512)).astype(np.float32)
        pw = quantize_with_scales(w, search_scales(w, 128), 128)
        ones = np.ones(512)
        assert group_error(w, pw, ones).sum() < 0.9 * group_error(w, q4gsw.quantize(w, 128), ones).sum()

    def test_torchao_scales_reproduce_quantize(self, rng):
        """quantize_with_scales with torchao's scales is quantize(), bit for bit."""
        w = rng.standard_normal((9, 70)).astype(np.float32)
        ref = q4gsw.quantize(w, 32)
        pw = quantize_with_scales(w, ref.scales, 32)
        np.testing.assert_array_equal(pw.weights, ref.weights)

    @pytest.mark.parametrize("bad", ["importance-shape", "importance-negative", "grid-zero", "scales-shape",
                                     "scales-zero", "w-nan"])
    def test_bad_input(self, rng, bad):
        """Malformed arguments raise the matching Q4gswError naming the argument."""
        w = rng.standard_normal((4, 32)).astype(np.float32)
        good = q4gsw.quantize(w, 16).scales
        calls = {
            "importance-shape": (lambda: search_scales(w, 16, importance=np.ones(31)),
                                 q4gsw.ValueRangeError, "'importance'"),
            "importance-negative": (lambda: search_scales(w, 16, importance=-np.ones(32)),
                                    q4gsw.ValueRangeError, "'importance'"),
            "grid-zero": (lambda: search_scales(w, 16, grid=(1.0, 0.0)), q4gsw.ValueRangeError, "'grid'"),
            "scales-shape": (lambda: quantize_with_scales(w, good[:1], 16), ShapeError, "'scales'"),
            "scales-zero": (lambda: quantize_with_scales(w, good * 0, 16),
                            q4gsw.ValueRangeError, "'scales'"),
            "w-nan": (lambda: search_scales(np.where(w > 1, np.nan, w).astype(np.float32), 16),
                      q4gsw.ValueRangeError, "'w'"),
        }
        call, error, match = calls[bad]
        with pytest.raises(error, match=match):
            call()


class TestQuantizeGptqStatic:
    def test_static_scales_are_kept(self, rng):
        """With scales given, the PackedWeight holds exactly them (in order or act-order), q in [-8, 7]."""
        w, x = TestQuantizeGptq._problem(rng)
        scales = search_scales(w, 32, importance=(x.astype(np.float64) ** 2).mean(axis=0))
        for act_order in (False, True):
            pw = q4gsw.quantize_gptq(w, x, 32, scales=scales, act_order=act_order)
            np.testing.assert_array_equal(pw.scales, scales)
            assert pw.unpack().min() >= -8 and pw.unpack().max() <= 7
            assert (pw.group_size, pw.in_features) == (32, w.shape[1])

    @pytest.mark.parametrize("act_order", [False, True])
    def test_lower_output_error_than_round_to_nearest(self, rng, act_order):
        """Searched static scales + GPTQ: held-out ||x W^T - x Q^T|| below quantize()'s and the searched scales' RTN."""
        w, x = TestQuantizeGptq._problem(rng, samples=800)
        fit, held_out = x[:400], x[400:]
        exact = held_out.astype(np.float64) @ w.T.astype(np.float64)
        scales = search_scales(w, 32, importance=(fit.astype(np.float64) ** 2).mean(axis=0))
        err = lambda pw: np.linalg.norm(q4gsw.linear_reference(held_out, pw) - exact)  # noqa: E731
        err_gptq = err(q4gsw.quantize_gptq(w, fit, 32, scales=scales, act_order=act_order))
        assert err_gptq < 0.9 * err(q4gsw.quantize(w, 32))
        assert err_gptq < 0.9 * err(quantize_with_scales(w, scales, 32))

    def test_default_unchanged(self, rng):
        """Without scales, quantize_gptq chooses torchao's scale at each group's start, as before."""
        w, x = TestQuantizeGptq._problem(rng, n=8, k=64)
        pw = q4gsw.quantize_gptq(w, x, 32)
        first = q4gsw.quantize(w[:, :32], 32)  # the first group sees the weights unchanged
        np.testing.assert_array_equal(pw.scales[0], first.scales[0])

    @pytest.mark.parametrize("bad", ["act-order-without-scales", "scales-shape", "scales-nan", "damp"])
    def test_bad_input(self, rng, bad):
        """Malformed static-group arguments raise the matching Q4gswError naming the argument."""
        w, x = TestQuantizeGptq._problem(rng, n=4, k=32, samples=8)
        s = q4gsw.quantize(w, 16).scales
        kwargs, error, match = {
            "act-order-without-scales": ({"act_order": True}, q4gsw.ValueRangeError, "'act_order'"),
            "scales-shape": ({"scales": s[:1]}, ShapeError, "'scales'"),
            "scales-nan": ({"scales": np.full_like(s, np.nan)}, q4gsw.ValueRangeError, "'scales'"),
            "damp": ({"damp": -1.0}, q4gsw.ValueRangeError, "'damp'"),
        }[bad]
        with pytest.raises(error, match=match):
            q4gsw.quantize_gptq(w, x, 16, **kwargs)


class TestCorrectedBias:
    def test_mean_output_matches_float(self, rng):
        """Over the inputs whose mean it was given, the quantized layer's mean output is the float one's."""
        w = rng.standard_normal((16, 64)).astype(np.float32)
        x = (rng.standard_normal((200, 64)) + rng.uniform(-2, 2, 64)).astype(np.float32)
        bias = rng.standard_normal(16).astype(np.float32)
        pw = q4gsw.quantize(w, 32)
        b2 = corrected_bias(w, pw, x.mean(axis=0, dtype=np.float64), bias)
        assert b2.dtype == np.float32 and b2.shape == (16,)
        mean_float = (x.astype(np.float64) @ w.T.astype(np.float64) + bias).mean(axis=0)
        mean_quant = q4gsw.linear_reference(x, pw, b2).mean(axis=0)
        mean_plain = q4gsw.linear_reference(x, pw, bias).mean(axis=0)
        assert np.abs(mean_quant - mean_float).max() < 1e-4 * np.abs(mean_plain - mean_float).max() + 1e-5

    def test_bad_input(self, rng):
        """A mean of the wrong length raises ShapeError naming 'x_mean'."""
        w = rng.standard_normal((4, 32)).astype(np.float32)
        with pytest.raises(ShapeError, match="'x_mean'"):
            corrected_bias(w, q4gsw.quantize(w, 16), np.zeros(31))
