"""Tests of q4gsw.io.from_mlc against MLC LLM's group-quantization rule, written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.io import from_mlc


def mlc_quantize(w, scale_dtype, gs=32):
    """MLC's GroupQuantize._quantize + pack_weight (group_quantization.py, utils.py), NK layout:
    scale = max|w| / 7 per group, u = clip(round(w / scale + 7), 0, 14), element r of a word
    at bits 4 r, padding past K zero. Returns (q_weight uint32 (N, G*gs/8), q_scale (N, G), u)."""
    n, k = w.shape
    groups = -(-k // gs)
    padded = np.zeros((n, groups * gs), np.float64)
    padded[:, :k] = w
    scale = (np.abs(padded.reshape(n, groups, gs)).max(axis=2) / 7).astype(scale_dtype)
    s = scale.astype(np.float64)[:, np.arange(groups * gs) // gs]
    u = np.clip(np.round(padded / s + 7), 0, 14).astype(np.uint32)
    u[:, k:] = 0
    words = (u.reshape(n, -1, 8) << (4 * np.arange(8, dtype=np.uint32))).sum(axis=2, dtype=np.uint32)
    return words, scale, u[:, :k]


def mlc_dequant(u, scale, gs=32):
    """float64 (u - 7) * scale[group] (GroupQuantize._dequantize, without fp16 rounding)."""
    return (u.astype(np.float64) - 7) * scale.astype(np.float64)[:, np.arange(u.shape[1]) // gs]


class TestFromMlc:
    @pytest.mark.parametrize(("scheme", "dtype"), [("q4f16_1", np.float16), ("q4f32_1", np.float32)])
    @pytest.mark.parametrize(("n", "k"), [(5, 64), (3, 70), (8, 33)])
    def test_exact(self, rng, scheme, dtype, n, k):
        """dequantize() equals MLC's (u - 7) * scale exactly, padding past K dropped."""
        w = rng.standard_normal((n, k)) * rng.uniform(0.1, 5, (n, 1))
        words, scale, u = mlc_quantize(w, dtype)
        pw = from_mlc(words, scale, in_features=k, scheme=scheme)
        assert pw.in_features == k and pw.group_size == 32
        np.testing.assert_array_equal(pw.dequantize(), mlc_dequant(u, scale))
        assert len(np.unique(u)) > 10

    def test_kn_layout(self, rng):
        """q4f16_0 stores the transposes (KN); the result is the same weight."""
        w = rng.standard_normal((6, 64))
        words, scale, u = mlc_quantize(w, np.float16)
        pw = from_mlc(words.T.copy(), scale.T.copy(), in_features=64, scheme="q4f16_0")
        np.testing.assert_array_equal(pw.dequantize(), mlc_dequant(u, scale))

    def test_int32_storage(self, rng):
        """Words given as int32 (same bits, as torch has no uint32) are accepted."""
        words, scale, u = mlc_quantize(rng.standard_normal((2, 32)), np.float16)
        pw = from_mlc(words.view(np.int32), scale, in_features=32)
        np.testing.assert_array_equal(pw.dequantize(), mlc_dequant(u, scale))

    def test_bad_inputs(self, rng):
        """u = 15, unknown schemes, wrong dtypes and shapes raise typed errors naming the argument."""
        words, scale, _ = mlc_quantize(rng.standard_normal((2, 64)), np.float16)
        bad = words.copy()
        bad[0, 0] |= np.uint32(0xF)
        with pytest.raises(q4gsw.ValueRangeError, match="'q_weight'.*u = 15"):
            from_mlc(bad, scale, in_features=64)
        with pytest.raises(q4gsw.FormatError, match="'scheme'"):
            from_mlc(words, scale, in_features=64, scheme="q3f16_1")
        with pytest.raises(q4gsw.DTypeError, match="'q_scale'"):
            from_mlc(words, scale.astype(np.float32), in_features=64, scheme="q4f16_1")
        with pytest.raises(q4gsw.DTypeError, match="'q_weight'"):
            from_mlc(words.astype(np.int64), scale, in_features=64)
        with pytest.raises(q4gsw.ShapeError, match="'q_weight'"):
            from_mlc(words, scale, in_features=96)
        with pytest.raises(q4gsw.GroupSizeError, match="'q_scale'"):
            from_mlc(words, scale[:, :1], in_features=64)
