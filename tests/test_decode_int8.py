"""Tests of decode_int8 (q4gsw.kernels.decode.DecodeInt8: small M with 8-bit activations in one
dispatch, x quantized per 32 k inside the kernel): fresh random data, poisoned outputs, odd and
edge shapes, both reductions and every row count, against the float64 product of x quantized as
quantize_activations(x, 32) quantizes it; NaN and zero rows; the routing among int8 kernels."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import q4gsw
from q4gsw.kernels import INT8_KERNELS, KERNELS, DecodeInt8, Problem, select
from q4gsw.kernels.int8 import linear_int8_reference

from .test_int8 import H200, LAVAPIPE, assert_matches_int8_reference
from .utils import fake_capabilities, random_problem

log = logging.getLogger("q4gsw.tests")

SPECS = {
    "subgroup": lambda: DecodeInt8("subgroup", 32768),
    "workgroup": lambda: DecodeInt8("workgroup", 4096),
    "subgroup-r8": lambda: DecodeInt8("subgroup", 32768, 8),
    "subgroup-r32": lambda: DecodeInt8("subgroup", 32768, 32),
    "subgroup-r64": lambda: DecodeInt8("subgroup", 32768, 64),
    "workgroup-r32": lambda: DecodeInt8("workgroup", 4096, 32),
}


@pytest.mark.parametrize("which", list(SPECS))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(("m", "n", "k", "gs", "extra_cols"), [
    (1, 5, 64, 32, 3),       # fewer features than a step of 4; scale stride not a multiple of 4
    (3, 67, 96, 32, 3),      # odd M and N; 3 invocations of 32 in a workgroup of 32
    (1, 129, 320, 64, 0),    # N one past a multiple of 4 with a 16-byte scale row: N*K/2 % 4 != 0 rows
    (2, 132, 256, 128, 0),   # 16-byte scale loads (stride 132)
    (8, 33, 512, 256, 1),    # M = 8; a group of 256 spans 8 invocations
    (1, 31, 160, 96, 3),     # group size not a power of two, a short last group
    (5, 70, 4128, 128, 2),   # K past 4096: 129 invocations, the last workgroup warp one lane
    (7, 45, 1024, 64, 0),    # a block of 8 rows of x with one past M
])
def test_matches_reference(runtime, rng, which, with_bias, m, n, k, gs, extra_cols):
    """Every output matches the float64 product of the per-32-k quantized x with the weight."""
    case = random_problem(rng, m, n, k, gs, bias=with_bias, extra_cols=extra_cols)
    spec = SPECS[which]().bind(runtime.caps)
    reason = spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps)
    if reason:
        pytest.skip(reason)
    y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")
    rel = assert_matches_int8_reference(y, case.x, case.pw, case.bias, x_group=32)
    log.info("decode_int8 %s M=%d N=%d K=%d gs=%d: rel. error vs exact float64 %.2e", which, m, n, k, gs, rel)
    assert rel < 5e-2  # int8 x: ~5e-3 at K in the thousands, up to ~2e-2 at K = 64


def test_nan_inf_and_zero_rows(runtime, make_problem):
    """A NaN or Inf in x makes its row NaN; a zero row (and a row of x below 2^-100) gives the bias."""
    case = make_problem(6, 40, 256, 64)
    case.x[1, 37] = np.nan
    case.x[2, 200] = np.inf
    case.x[3] = 0
    case.x[4] = 1e-35
    for name in ("decode_int8_subgroup", "decode_int8_workgroup"):
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=name, activations="int8")
        assert np.isnan(y[1]).all() and np.isnan(y[2]).all(), name
        np.testing.assert_array_equal(y[3], case.bias)
        np.testing.assert_array_equal(y[4], case.bias)
        assert_matches_int8_reference(np.ascontiguousarray(y[[0, 5]]), case.x[[0, 5]], case.pw, case.bias, x_group=32)


def test_quantizes_per_32_k(runtime, make_problem):
    """One large element moves only its own 32 k's scale: the result follows the per-32-k
    reference, and differs from the per-group one (group of 128)."""
    case = make_problem(1, 64, 512, 128, bias=False)
    case.x[0, 5] = 300.0
    y = q4gsw.linear(case.x, case.pw, kernel="decode_int8_subgroup", activations="int8")
    ref32 = linear_int8_reference(case.x, case.pw, x_group=32)
    ref128 = linear_int8_reference(case.x, case.pw)
    assert np.abs(y - ref32).max() < 1e-4 * np.abs(ref32).max()
    assert np.abs(y - ref128).max() > 10 * np.abs(y - ref32).max()


def test_routing():
    """decode_int8 is the int8 route at decode sizes and never chosen for f32; the GEMM takes over
    at prefill sizes; K or group sizes off a multiple of 32 are refused with the reason."""
    for caps in (H200, LAVAPIPE):
        for m in (1, 2, 8):
            assert select(Problem(m, 4096, 4096, 128), caps, activations="int8").name == "decode_int8_subgroup"
        assert select(Problem(512, 4096, 4096, 128), caps, activations="int8").name == "bcast_int8_k64"
        assert select(Problem(1, 4096, 4096, 128), caps).activations == "f32"
    assert select(Problem(9, 4096, 4096, 128), H200, activations="int8").name != "decode_int8_subgroup"  # max_m
    assert "decode_int8_subgroup" not in KERNELS
    spec = INT8_KERNELS["decode_int8_subgroup"]
    assert "multiple of 32" in spec.supports(Problem(1, 64, 48, 16), LAVAPIPE)
    assert "multiple of 32" in spec.supports(Problem(1, 64, 64, 16), LAVAPIPE)


def test_one_dispatch_and_label():
    """No quantize dispatch: the key names decode_int8 and its reduction only."""
    spec = INT8_KERNELS["decode_int8_subgroup"]
    p = Problem(1, 64, 256, 64)
    assert not spec.separate_quantize and INT8_KERNELS["bcast_int8_k64"].separate_quantize
    assert spec.key(p).label == "linear_q4gsw/decode_int8_subgroup"
    assert spec.key(p).sources == ("decode_int8", "reduce_subgroup")


def test_rows_per_workgroup_defaults():
    """32 rows for M >= 2 and the LM head, 8 for M = 1 up to 2^24 weights on a GPU, else 16."""
    gpu = fake_capabilities(adapter_type="DiscreteGPU")
    spec = INT8_KERNELS["decode_int8_subgroup"]
    assert spec.bind(gpu).features(Problem(1, 4096, 4096, 128)) == 8
    assert spec.bind(LAVAPIPE).features(Problem(1, 4096, 4096, 128)) == 16
    assert spec.bind(gpu).features(Problem(1, 14336, 4096, 128)) == 16
    assert spec.bind(gpu).features(Problem(1, 128256, 4096, 128)) == 32
    assert spec.bind(gpu).features(Problem(2, 4096, 4096, 128)) == 32
    assert spec.bind(gpu).with_settings({"features_per_workgroup": 64}).features(Problem(1, 4096, 4096, 128)) == 64
