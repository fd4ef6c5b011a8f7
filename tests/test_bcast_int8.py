"""Tests of bcast_int8 (q4gsw.kernels.bcast_int8: the int8-activation GEMM in ONNX Runtime's DP4A
shape), as tests/test_int8.py tests tiled_int8: fresh random data, poisoned outputs, edge shapes,
every setting (scales once a step where the step lies in one group: group sizes 64-256 with 64-
and 128-k steps; else every 32 k), against the float64 product of the quantized x."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import q4gsw
from q4gsw.kernels import INT8_KERNELS, Problem, select
from q4gsw.kernels.bcast_int8 import BcastInt8, workgroup_bytes

from .test_int8 import H200, LAVAPIPE, assert_matches_int8_reference

log = logging.getLogger("q4gsw.tests")

SETTINGS = [
    dict(),
    dict(double_buffer=False),
    dict(k_step=64),
    dict(k_step=64, double_buffer=False),
    dict(features_per_tile=128),
    dict(features_per_tile=128, k_step=64, double_buffer=False),
    dict(split=3),
    dict(k_step=64, split=2, features_per_tile=128),
    dict(x_group=32),
    dict(x_group=32, k_step=64, split=2),
    dict(k_step=128),                                    # 36 KiB: refused on lavapipe, runs on the H200
    dict(k_step=128, features_per_tile=128, split=2),
    dict(k_step=128, x_group=32, double_buffer=False),
    dict(k_step=128, double_buffer=False),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(("m", "n", "k", "gs"), [
    (1, 5, 64, 32),        # one row; fewer features than a vec4 of them
    (17, 67, 96, 32),      # odd M and N; K not a multiple of a 64-k step
    (65, 130, 320, 64),    # M past a 64-row tile, N past a 64- and a 128-feature tile
    (130, 129, 256, 128),  # M past two tiles
    (20, 40, 512, 256),    # group of 256 spans several steps
    (33, 31, 160, 96),     # group size not a power of two, a short last group
])
def test_matches_reference(runtime, make_problem, settings, with_bias, m, n, k, gs):
    """Every output matches the float64 product of the quantized x with the dequantized weight."""
    case = make_problem(m, n, k, gs, bias=with_bias)
    spec = BcastInt8(**settings).bind(runtime.caps)
    p = Problem(m, n, k, gs, with_bias)
    if spec.supports(p, runtime.caps):
        pytest.skip(spec.supports(p, runtime.caps))
    y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")
    rel = assert_matches_int8_reference(y, case.x, case.pw, case.bias, settings.get("x_group"))
    log.info("bcast_int8 %s M=%d N=%d K=%d gs=%d: rel. error vs exact float64 %.2e", settings, m, n, k, gs, rel)
    assert rel < 2e-2


def test_presets_run_and_nan_rows(runtime, make_problem):
    """Each bcast_int8 preset runs by name; a NaN in x makes its row NaN, a zero row gives the bias."""
    case = make_problem(70, 136, 192, 64)
    case.x[2, 37] = np.nan
    case.x[4] = 0
    keep = [i for i in range(70) if i not in (2, 4)]
    for name in [n for n in INT8_KERNELS if n.startswith("bcast_int8")]:
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=name, activations="int8")
        assert np.isnan(y[2]).all(), name
        np.testing.assert_array_equal(y[4], case.bias)
        assert_matches_int8_reference(np.ascontiguousarray(y[keep]), case.x[keep], case.pw, case.bias)


def test_routed_for_int8_only_and_fits():
    """bcast_int8_k64 is the int8 route at prefill sizes (session 5; decode_int8 below them) and
    never chosen for f32; the other bcast presets are baselines; the workgroup memory fits both
    devices."""
    for p in (Problem(512, 4096, 4096, 128), Problem(128, 4096, 14336, 32), Problem(32, 4096, 4096, 32)):
        assert select(p, H200, activations="int8").name == "bcast_int8_k64"
        assert select(p, H200).activations == "f32"
    assert all(spec.baseline for name, spec in INT8_KERNELS.items() if name.startswith("bcast") and name != "bcast_int8_k64")
    assert workgroup_bytes(64, 32, True) == 9216
    assert workgroup_bytes(128, 64, True) <= 32768 and workgroup_bytes(64, 128, False) == 18432
    p = Problem(512, 4096, 4096, 128)
    assert dict(BcastInt8(k_step=128).constants(p))["STEP_SCALES"]
    assert not dict(BcastInt8(k_step=128).constants(Problem(512, 4096, 4096, 32)))["STEP_SCALES"]
    assert not dict(INT8_KERNELS["bcast_int8"].constants(p))["STEP_SCALES"]
    for name in [n for n in INT8_KERNELS if n.startswith("bcast_int8")]:
        assert INT8_KERNELS[name].bind(LAVAPIPE).supports(Problem(512, 4096, 4096, 128), LAVAPIPE) is None

