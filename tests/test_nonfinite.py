"""NaN and Inf in x, scales and bias are data: every kernel propagates them to exactly the
outputs they feed, per IEEE 754; valid arrays of any layout, read-only included, are accepted
and never written (see docs/reliability.md)."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.kernels import KERNELS, Problem

from .utils import assert_matches_reference, random_problem

#: A shape every kernel supports (K and group_size multiples of 32), M not a multiple of 4.
M, N, K, GS = 5, 40, 128, 32
ROW, COL, KK = 2, 5, 37  # the poisoned x[ROW, KK]; COL: the output feature whose q at KK is 0


def case(kernel, runtime, seed=0, bias=True):
    """A random problem for the shape above, skipping kernels the adapter cannot run."""
    reason = KERNELS[kernel].supports(Problem(M, N, K, GS, bias), runtime.caps)
    if reason:
        pytest.skip(reason)
    c = random_problem(np.random.default_rng(seed), M, N, K, GS, bias=bias)
    # q[n, KK] = 0 (stored 8) for n = COL only, non-zero for every other n
    byte, high = KK // 2, KK % 2
    nib = np.where(np.arange(N) == COL, 8, np.where(np.arange(N) % 2, 3, 12)).astype(np.uint8)
    keep = 0x0F if high else 0xF0
    c.weights[:, byte] = (c.weights[:, byte] & keep) | (nib << 4 if high else nib)
    c.pw = q4gsw.PackedWeight(c.weights, c.scales, GS, in_features=K)
    return c


def others_match(y, c, rows=None, cols=None):
    """Outputs outside the poisoned rows / columns match the reference of unpoisoned data."""
    keep_r = [m for m in range(M) if rows is None or m not in rows]
    keep_c = [n for n in range(N) if cols is None or n not in cols]
    x = c.x.copy()
    x[~np.isfinite(x)] = 0
    sub = q4gsw.PackedWeight(c.weights[keep_c], np.ascontiguousarray(np.nan_to_num(c.scales[:, keep_c])), GS,
                             in_features=K)
    bias = None if c.bias is None else c.bias[keep_c]
    assert_matches_reference(np.ascontiguousarray(y[np.ix_(keep_r, keep_c)]), x[keep_r], sub, bias)


@pytest.mark.parametrize("kernel", list(KERNELS))
class TestNonFinite:
    def test_nan_in_x_poisons_its_row(self, runtime, kernel):
        """A NaN in x[m, k] gives NaN in all of out[m, :] and nowhere else (even where q = 0)."""
        c = case(kernel, runtime)
        c.x[ROW, KK] = np.nan
        y = q4gsw.linear(c.x, c.pw, c.bias, kernel=kernel)
        assert np.isnan(y[ROW]).all()
        others_match(y, c, rows=[ROW])

    @pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+inf", "-inf"])
    def test_inf_in_x(self, runtime, kernel, sign):
        """An Inf in x[m, k] makes all of out[m, :] non-finite and nothing else: Inf * 0 (q = 0) is
        NaN, other features are +-Inf with the sign of x * q * scale; decode gives NaN for all
        (its fold 16 sum x (1 + u/16) - 24 sum x is Inf - Inf)."""
        c = case(kernel, runtime)
        c.x[ROW, KK] = sign * np.inf
        y = q4gsw.linear(c.x, c.pw, c.bias, kernel=kernel)
        others_match(y, c, rows=[ROW])
        if kernel.startswith("decode"):
            assert np.isnan(y[ROW]).all()
            return
        q = c.pw.unpack()[:, KK].astype(np.float64)
        s = c.scales[KK // GS, :N].astype(np.float64)
        with np.errstate(invalid="ignore"):
            expected = sign * np.inf * np.sign(q * s)  # inf * 0 = NaN where q = 0
        np.testing.assert_array_equal(y[ROW], expected.astype(np.float32))

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
    def test_scale_poisons_its_column(self, runtime, kernel, value):
        """A NaN or Inf scale of feature n (a used group) makes out[:, n] non-finite and nothing else
        (NaN stays NaN; Inf gives +-Inf or, where a q of the group is 0, NaN, per kernel)."""
        c = case(kernel, runtime)
        c.scales[1, COL] = value
        y = q4gsw.linear(c.x, c.pw, c.bias, kernel=kernel)
        assert not np.isfinite(y[:, COL]).any()
        if np.isnan(value):
            assert np.isnan(y[:, COL]).all()
        others_match(y, c, cols=[COL])

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
    def test_bias_poisons_its_column(self, runtime, kernel, value):
        """bias[n] = NaN / +-Inf gives exactly NaN / +-Inf in out[:, n] and nothing else."""
        c = case(kernel, runtime)
        c.bias[COL] = value
        y = q4gsw.linear(c.x, c.pw, c.bias, kernel=kernel)
        np.testing.assert_array_equal(y[:, COL], np.full(M, value, np.float32))
        others_match(y, c, cols=[COL])

    @pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
    def test_padding_scales_unused(self, runtime, kernel, value):
        """NaN or Inf in the padding of weight_scales (rows past ceil(K/gs), columns past N) is never read."""
        c = case(kernel, runtime)
        c.scales[-1, :] = value
        c.scales[:, N:] = value
        y = q4gsw.linear(c.x, c.pw, c.bias, kernel=kernel)
        assert_matches_reference(y, c.x, c.pw, c.bias)


class TestLayouts:
    """Valid data is not an error: any layout is accepted (non-contiguous arrays are copied),
    read-only arrays are accepted, and no input is ever written."""

    def test_non_contiguous_inputs(self, runtime):
        """Transposed, strided and reversed views give the result of their contiguous copies."""
        c = random_problem(np.random.default_rng(1), 6, 20, 64, 32)
        expected = q4gsw.linear(c.x, c.pw, c.bias)
        xt = np.asfortranarray(c.x)
        wide_b = np.repeat(c.bias, 2)[::2]
        rev_x = np.ascontiguousarray(c.x[::-1])[::-1]
        for x, b in ((xt, c.bias), (rev_x, wide_b), (c.x[:, None, :][:, 0, :], c.bias[::-1][::-1])):
            np.testing.assert_array_equal(q4gsw.linear(x, c.pw, b), expected)
        w_view = np.ascontiguousarray(c.weights[::-1])[::-1]
        s_view = np.asfortranarray(c.scales)
        np.testing.assert_array_equal(q4gsw.linear_q4gsw(c.x, w_view, s_view, 32, c.bias), expected)

    def test_read_only_inputs_never_written(self, runtime):
        """Read-only x, weights, scales and bias are accepted; all inputs keep their values and flags."""
        c = random_problem(np.random.default_rng(2), 3, 12, 64, 32)
        arrays = (c.x, c.weights, c.scales, c.bias)
        for a in arrays:
            a.flags.writeable = False
        saved = [a.copy() for a in arrays]
        y1 = q4gsw.linear(c.x, q4gsw.PackedWeight(c.weights, c.scales, 32), c.bias)
        y2 = q4gsw.linear_q4gsw(c.x, c.weights, c.scales, 32, c.bias)
        np.testing.assert_array_equal(y1, y2)
        assert_matches_reference(y1, c.x, c.pw, c.bias)
        for a, s in zip(arrays, saved):
            np.testing.assert_array_equal(a, s)
            assert not a.flags.writeable

    def test_packed_weight_views_read_only(self, runtime):
        """PackedWeight keeps read-only views of writable inputs: the caller's arrays stay writable."""
        c = random_problem(np.random.default_rng(3), 1, 4, 8, 8)
        pw = q4gsw.PackedWeight(c.weights, c.scales, 8)
        assert not pw.weights.flags.writeable and not pw.scales.flags.writeable
        assert c.weights.flags.writeable and c.scales.flags.writeable
