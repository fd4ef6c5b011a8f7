"""Tests of the 8-bit-activation path (q4gsw.kernels.int8, activations="int8",
linear_dq8ca_q4gsw): the quantizer's numpy emulation, the quantize dispatch against it, the
GEMM against the float64 product of the quantized x (near exact) and, reported, against the
exact float64 linear; the choice among int8 kernels only; errors before any buffer."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import q4gsw
from q4gsw import UnsupportedShapeError, ValueRangeError
from q4gsw.kernels import INT8_KERNELS, KERNELS, Problem, TiledInt8, select, tuning_bucket
from q4gsw.kernels.int8 import (MAX_GROUP_SIZE, dequantize_activations, linear_int8_reference, quantize_activations,
                                team_size, workgroup_bytes)
from q4gsw.ops.plan import gpu_placeholder, plan_linear
from q4gsw.runtime.submit import submit

from .utils import RTOL, ATOL, fake_capabilities

log = logging.getLogger("q4gsw.tests")

LAVAPIPE = fake_capabilities()  # 32 KiB of workgroup memory
H200 = fake_capabilities(limits={**LAVAPIPE.limits, "max-compute-workgroup-storage-size": 49152})


#: WGSL (Vulkan's OpFDiv) lets a device's f32 division be off by up to 2.5 ulp: the quantizer's
#: 127 / amax may then round an element of x to the neighbouring int8 value. The H200 did, in one
#: row of one test (115-119 of 129 outputs moved, up to 19-33x RTOL: a 1-ulp move reproduces it
#: exactly); lavapipe's division is exact.
DIVISION_ULPS = 3


def int8_tolerance(x, pw, bias, x_group=None) -> np.ndarray:
    """RTOL of the sum of |terms| of the quantized product (as tests.utils.tolerance for f32),
    plus how far the reference moves when every group's 127 / amax is 1..DIVISION_ULPS ulp above
    or below numpy's (zero except where such a move flips a rounding of the quantized x)."""
    xg = x_group or pw.group_size
    q, s = quantize_activations(np.asarray(x, np.float32).reshape(-1, pw.in_features), xg)
    xhat = dequantize_activations(q, s, xg)
    magnitude = np.abs(xhat) @ np.abs(pw.dequantize()).T
    if bias is not None:
        magnitude += np.abs(np.asarray(bias, np.float64))
    tol = (RTOL * magnitude + ATOL).reshape(*np.shape(x)[:-1], pw.out_features)
    ref = linear_int8_reference(x, pw, bias, x_group=x_group)
    spread = np.zeros_like(ref)
    for u in (*range(1, DIVISION_ULPS + 1), *range(-DIVISION_ULPS, 0)):  # each: flips of either sign may cancel
        spread = np.maximum(spread, np.abs(linear_int8_reference(x, pw, bias, x_group=x_group, reciprocal_ulps=u) - ref))
    return tol + spread


def assert_matches_int8_reference(y, x, pw, bias=None, x_group=None) -> float:
    """y matches the float64 product of the quantized x (every element written); returns the
    relative error against the exact float64 linear, max |y - ref| / max |ref|, for reports."""
    ref = linear_int8_reference(x, pw, bias, x_group=x_group)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.isfinite(y).all(), f"{np.count_nonzero(~np.isfinite(y))} output elements not written (NaN poison)"
    err = np.abs(y.astype(np.float64) - ref)
    tol = int8_tolerance(x, pw, bias, x_group)
    assert (err <= tol).all(), f"{np.count_nonzero(err > tol)} of {err.size} off; worst error / tolerance {(err / tol).max():.3g}"
    exact = q4gsw.linear_reference(x, pw, bias)
    return float(np.abs(y - exact).max() / np.abs(exact).max())


class TestQuantizeActivations:
    def test_scale_and_range(self, rng):
        """Per (row, group): the largest |q| is 127, every q within [-127, 127], and q * scale
        within half a step of x."""
        x = rng.standard_normal((5, 96)).astype(np.float32)
        q, s = quantize_activations(x, 32)
        assert q.dtype == np.int8 and s.shape == (5, 3) and s.dtype == np.float32
        assert np.abs(q.astype(int)).reshape(5, 3, 32).max(axis=2).min() == 127
        err = np.abs(dequantize_activations(q, s, 32) - x)
        assert (err <= 0.5 * np.repeat(s, 32, axis=1) * (1 + 1e-6)).all()

    def test_short_last_group(self, rng):
        """A group past K is shorter; group_size past K is one group."""
        x = rng.standard_normal((2, 96)).astype(np.float32)
        q, s = quantize_activations(x, 64)
        assert s.shape == (2, 2) and np.abs(q[:, 64:].astype(int)).max(axis=1).min() == 127
        q1, s1 = quantize_activations(x, 256)
        assert s1.shape == (2, 1)

    def test_zero_tiny_and_nonfinite_groups(self):
        """An all-zero or tiny (< 2^-100) group gives scale 0 and q 0; NaN or Inf gives scale NaN, q 0."""
        x = np.ones((4, 64), np.float32)
        x[0, :32] = 0
        x[1, :32] = 1e-31
        x[2, 5] = np.nan
        x[3, 40] = np.inf
        q, s = quantize_activations(x, 32)
        assert s[0, 0] == 0 and s[1, 0] == 0 and (q[:2, :32] == 0).all()
        assert np.isnan(s[2, 0]) and np.isnan(s[3, 1]) and (q[2, :32] == 0).all() and (q[3, 32:] == 0).all()
        assert s[2, 1] == np.float32(1.0) * np.float32(1 / 127) and (q[2, 32:] == 127).all()

    def test_rounds_half_to_even(self):
        """x * 127 / amax exactly halfway rounds to even, as WGSL's round."""
        x = np.array([[127.0, 0.5, 1.5, -2.5, 3.5]], np.float32)
        q, _ = quantize_activations(np.pad(x, ((0, 0), (0, 3))), 8)
        assert q[0, :5].tolist() == [127, 0, 2, -2, 4]

    def test_team_size(self):
        """TEAM is the largest power of two <= group_size / 8, at most 256."""
        assert [team_size(g) for g in (32, 64, 96, 128, 256, 4096)] == [4, 8, 8, 16, 32, 256]


def run_plan(runtime, x, pw, bias, spec):
    """Plan and run one int8 linear by hand; returns (out, xq bytes (M, K), scales (G, M))."""
    usage = runtime.wgpu.BufferUsage
    m, k = x.shape
    p = Problem(m, pw.out_features, k, pw.group_size, bias is not None)
    x_buf = runtime.buffers.upload(x, usage.STORAGE, "test/x")
    out = runtime.buffers.create(4 * m * pw.out_features, usage.STORAGE | usage.COPY_SRC, "test/out")
    b = gpu_placeholder(runtime) if bias is None else runtime.buffers.upload(bias, usage.STORAGE, "test/bias")
    plan = plan_linear(runtime, "test", pw, p, x_buf, out, b, kernel=spec, activations="int8")
    try:
        submit(runtime, plan.dispatches)
        y = runtime.buffers.read(out, 4 * m * pw.out_features).reshape(m, -1)
        xq_buf, xs_buf = plan.owned[:2]  # the scratch buffers, created first (ops/plan.py)
        xq = runtime.buffers.read(xq_buf, m * k, np.int8).reshape(m, k)
        groups = spec.x_groups(p)
        xs = runtime.buffers.read(xs_buf, 4 * m * groups).reshape(groups, m)
    finally:
        plan.release(runtime)
        runtime.buffers.destroy(x_buf, out, b)
    return y, xq, xs


def unpermute(xq: np.ndarray) -> np.ndarray:
    """quantize_int8's octet order (even k, then odd k, of each 8) back to k order."""
    m, k = xq.shape
    octets = xq.reshape(m, k // 8, 2, 4)  # [octet][even/odd][i] = x[8j + 2i + (0|1)]
    return octets.transpose(0, 1, 3, 2).reshape(m, k)


class TestQuantizeKernel:
    @pytest.mark.parametrize(("m", "k", "gs", "x_group"), [(3, 64, 32, None), (5, 96, 64, None), (2, 512, 128, None),
                                                           (3, 256, 256, None), (2, 160, 96, None),
                                                           (1, 2048, 2048, None), (4, 256, 128, 32)])
    def test_matches_emulation(self, runtime, make_problem, m, k, gs, x_group):
        """The int8 x and its scales are exactly what quantize_activations computes (group
        sizes from 32 to 2048, one not a power of two, a short last group; scales per 32 k)."""
        case = make_problem(m, 8, k, gs)
        case.x[0, :gs] *= 1e3  # groups of very different magnitude
        case.x[-1, -min(gs, k):] = 0  # an all-zero group
        _, xq, xs = run_plan(runtime, case.x, case.pw, case.bias, TiledInt8(x_group=x_group))
        q, s = quantize_activations(case.x, x_group or gs)
        np.testing.assert_array_equal(unpermute(xq), q)
        np.testing.assert_array_equal(xs.T, s)


class TestTiledInt8:
    SETTINGS = [
        dict(),
        dict(k_step=32),
        dict(k_step=64, double_buffer=False),
        dict(x_rows_per_tile=64, k_step=64),
        dict(x_rows_per_tile=64, k_step=32, double_buffer=False),
        dict(k_step=32, split=3),
        dict(x_rows_per_tile=64, k_step=64, split=2),
        dict(x_group=32),
        dict(x_group=32, k_step=64, double_buffer=False, split=2),
        dict(features_per_tile=64),
        dict(x_rows_per_tile=64, features_per_tile=64),
        dict(x_rows_per_tile=128, features_per_tile=64, k_step=32, double_buffer=False, split=3),
        dict(x_rows_per_tile=64, features_per_tile=64, k_step=64, split=2, x_group=32),
        dict(x_rows_per_tile=128, invocations_per_workgroup=512),
        dict(x_rows_per_tile=128, invocations_per_workgroup=512, features_per_tile=64, k_step=32, double_buffer=False,
             split=2),
    ]

    @pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [
        (1, 5, 64, 32),        # one row; fewer features than a vec4 of them
        (17, 67, 96, 32),      # odd M and N; K not a multiple of a 64-k step
        (65, 130, 320, 64),    # M past a 64-row tile, N past a 128-feature tile; 5 steps of 64
        (130, 129, 256, 128),  # M past a 128-row tile
        (20, 40, 512, 256),    # group of 256 spans several steps
        (33, 31, 160, 96),     # group size not a power of two, a short last group
    ])
    def test_matches_reference(self, runtime, make_problem, settings, with_bias, m, n, k, gs):
        """Every output matches the float64 product of the quantized x with the dequantized
        weight; the error against the exact float64 linear is reported (and below 2 %)."""
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = TiledInt8(**settings).bind(runtime.caps)
        if spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps):
            pytest.skip(spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps))
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")
        rel = assert_matches_int8_reference(y, case.x, case.pw, case.bias, settings.get("x_group"))
        log.info("tiled_int8 %s M=%d N=%d K=%d gs=%d: rel. error vs exact float64 %.2e", settings, m, n, k, gs, rel)
        assert rel < 2e-2

    def test_every_preset_runs(self, runtime, make_problem):
        """Each named int8 kernel runs a small problem correctly where the adapter can run it."""
        case = make_problem(70, 136, 192, 64)
        p = Problem(70, 136, 192, 64, True)
        for name, spec in INT8_KERNELS.items():
            spec = spec.bind(runtime.caps)
            if spec.supports(p, runtime.caps):
                continue
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=name, activations="int8")
            assert_matches_int8_reference(y, case.x, case.pw, case.bias, spec.x_group)

    @pytest.mark.parametrize("diag", [1, 2, 3])
    def test_timing_diagnostics_cut_work(self, runtime, make_problem, diag):
        """DIAG 1 (tiles of the first step reused), 2 (one k-quad of 8) and 3 (scales applied
        once at the end) compile and run, and change the result (the work they claim to cut is
        cut); DIAG 0 is the kernel itself."""

        class Diag(TiledInt8):
            def constants(self, p):
                return (*super().constants(p), ("DIAG", self.diag))

        case = make_problem(70, 136, 256, 64)
        exact = Diag(k_step=32)  # not bound: bind() would copy it as a plain TiledInt8
        exact.diag = 0
        y0 = q4gsw.linear(case.x, case.pw, case.bias, kernel=exact, activations="int8")
        assert_matches_int8_reference(y0, case.x, case.pw, case.bias)
        cut = Diag(k_step=32)
        cut.diag = diag
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=cut, activations="int8")
        assert y.shape == y0.shape and np.abs(y - y0).max() > 1e-3 * np.abs(y0).max()

    def test_nan_and_zero_rows(self, runtime, make_problem):
        """A NaN in x makes its row NaN (and nothing else); a zero row gives the bias."""
        case = make_problem(6, 40, 128, 32)
        case.x[2, 37] = np.nan
        case.x[4] = 0
        y = q4gsw.linear(case.x, case.pw, case.bias, activations="int8")
        assert np.isnan(y[2]).all()
        np.testing.assert_array_equal(y[4], case.bias)
        keep = [0, 1, 3, 5]
        assert_matches_int8_reference(np.ascontiguousarray(y[keep]), case.x[keep], case.pw, case.bias)

    def test_split_along_n(self, runtime, fake_limits, make_problem):
        """With the weight split along N, x is quantized once and every chunk writes its columns."""
        case = make_problem(3, 50, 64, 32, extra_cols=5)
        with fake_limits(max_storage_buffer_binding_size=1024):
            y = q4gsw.linear(case.x, case.pw, case.bias, activations="int8")
            assert len(runtime.weights.chunks(case.pw)) > 1
        assert_matches_int8_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_one_labelled_pass_and_buffers_freed(self, runtime, make_problem):
        """An int8 run is one profiled pass labelled tiled_int8, counted for the whole op's
        flops, and frees its scratch buffers."""
        case = make_problem(20, 40, 256, 64)
        spec = TiledInt8(split=2)
        q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")  # weight uploaded, pipelines built
        live = runtime.buffers.live
        q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")
        assert runtime.buffers.live == live
        if not runtime.caps.has_timestamps:
            pytest.skip("no timestamp-query")
        with q4gsw.profile() as prof:
            q4gsw.linear(case.x, case.pw, case.bias, kernel=spec, activations="int8")
        assert [(r["label"], r["calls"]) for r in prof.rows()] == [("linear_q4gsw/tiled_int8", 1)]
        assert prof.records[0].flops == 2 * 20 * 40 * 256
        runtime.weights.release(case.pw)

    def test_torch_tensor_and_batch(self, runtime, make_problem):
        """(..., K) input keeps its leading dimensions, as on the f32 path."""
        case = make_problem(6, 24, 64, 32, batch=(2, 3))
        y = q4gsw.linear(case.x, case.pw, case.bias, activations="int8")
        assert y.shape == (2, 3, 24)
        assert_matches_int8_reference(y.reshape(6, 24), case.x.reshape(6, 64), case.pw, case.bias)


class TestLinearDq8caQ4gsw:
    def test_is_linear_q4gsw_with_int8_activations(self, runtime, make_problem):
        """ExecuTorch's op name gives exactly linear_q4gsw(..., activations="int8"), at a decode
        size (decode_int8: a scale per 32 k) and a prefill size (a scale per group)."""
        for m, n, route in ((7, 33, "decode_int8_subgroup"), (200, 512, "bcast_int8_k64")):
            case = make_problem(m, n, 1024, 64)
            p = Problem(m, n, 1024, 64, True)
            spec = select(p, runtime.caps, activations="int8")
            assert spec.name == route or not runtime.caps.has_subgroups
            a = q4gsw.linear_dq8ca_q4gsw(case.x, case.weights, case.scales, 64, case.bias)
            b = q4gsw.linear_q4gsw(case.x, case.weights, case.scales, 64, case.bias, activations="int8")
            np.testing.assert_array_equal(a, b)
            assert_matches_int8_reference(a, case.x, case.pw, case.bias, spec.x_group_size(p))

    def test_refuses_before_any_buffer(self, runtime, make_problem, no_new_buffers):
        """K or group size not a multiple of 32, or an unknown activations value, are refused
        with the reason, before any GPU buffer exists."""
        case = make_problem(4, 8, 48, 16)
        with no_new_buffers():
            with pytest.raises(UnsupportedShapeError, match="multiple of 32"):
                q4gsw.linear_dq8ca_q4gsw(case.x, case.weights, case.scales, 16)
            with pytest.raises(ValueRangeError, match="activations"):
                q4gsw.linear(case.x, case.pw, activations="int4")
            with pytest.raises(UnsupportedShapeError, match="activations='int8'"):
                q4gsw.linear(case.x, case.pw, kernel="tiled_int8")
            with pytest.raises(UnsupportedShapeError, match="activations='f32'"):
                q4gsw.linear(case.x, case.pw, kernel="tiled", activations="int8")


class TestSelectInt8:
    @pytest.mark.parametrize(("p", "route"), [(Problem(1, 64, 64, 32), "decode_int8_subgroup"),
                                              (Problem(512, 4096, 4096, 128), "bcast_int8_k64"),
                                              (Problem(128, 4096, 14336, 32), "bcast_int8_k64")])
    def test_int8_only_when_asked(self, p, route):
        """activations="int8" chooses an int8 kernel (a routed one, never a preset: decode_int8 at
        decode sizes, bcast_int8_k64 at prefill sizes); the default never does."""
        assert select(p, LAVAPIPE, activations="int8").name == route
        assert select(p, LAVAPIPE).activations == "f32"
        assert all(spec.activations == "f32" for spec in KERNELS.values())

    def test_refusals_name_the_reason(self):
        """K, group size, workgroup memory and the i32 bound are refused with a reason; nothing runs them."""
        spec = TiledInt8().bind(LAVAPIPE)
        assert "K=48" in spec.supports(Problem(4, 8, 48, 16), LAVAPIPE)
        assert "group_size=48" in spec.supports(Problem(4, 8, 96, 48), LAVAPIPE)
        big = 1 << 22
        assert "overflow" in spec.supports(Problem(4, 8, big, big), None)
        assert "workgroup memory" in TiledInt8(k_step=64).bind(LAVAPIPE).supports(Problem(256, 256, 256, 64), LAVAPIPE)
        with pytest.raises(UnsupportedShapeError, match="no kernel runs"):
            select(Problem(4, 8, 48, 16), LAVAPIPE, activations="int8")
        assert MAX_GROUP_SIZE * 127 * 8 < 2**31

    def test_default_settings(self):
        """64 k a step where double-buffered 128-row tiles fit (48 KiB), else 32; 64-row tiles up to
        M = 64; the split fills the GPU at M = 128 and is 1 at M = 512 on 4096^2."""
        assert workgroup_bytes(128, 64, True) == 36864 and workgroup_bytes(128, 32, True) == 18432
        p128, p512 = Problem(128, 4096, 4096, 128), Problem(512, 4096, 4096, 128)
        gpu, cpu = INT8_KERNELS["tiled_int8"].bind(H200), INT8_KERNELS["tiled_int8"].bind(LAVAPIPE)
        assert dict(gpu.constants(p512)) == {"TILE_M": 128, "BK": 64, "DOUBLE": True, "SPLIT": 1, "XG32": False}
        assert dict(cpu.constants(p512))["BK"] == 32
        assert gpu.tile_rows(Problem(64, 4096, 4096, 128)) == 64
        assert gpu.split(p128) == 4
        assert gpu.predicted_seconds(p512) < KERNELS["tiled_split"].predicted_seconds(p512)

    def test_64_feature_tiles(self):
        """features_per_tile=64 halves the grid's feature tiles and Ws; TILE_N joins the key only
        then (the default key is unchanged)."""
        assert workgroup_bytes(64, 64, True, 64) == 16 * 2 * (16 * 16 + 16 * 16 + 2 * 128 // 4)
        p = Problem(512, 4096, 4096, 128)
        spec = INT8_KERNELS["tiled_int8_64x64"].bind(H200)
        assert dict(spec.constants(p))["TILE_N"] == 64 and spec.tiles(p) == (64, 8)
        assert "TILE_N" not in dict(INT8_KERNELS["tiled_int8"].bind(H200).constants(p))
        assert spec.with_settings({"features_per_tile": 128}).features_per_tile == 128
        assert spec.with_settings({"features_per_tile": 96}) is spec

    def test_512_invocations(self):
        """512 invocations a workgroup: 128-row tiles only, within the adapter's limit; WG joins the key."""
        p = Problem(512, 4096, 4096, 128)
        spec = INT8_KERNELS["tiled_int8_wg512"].bind(H200)
        assert dict(spec.constants(p))["WG"] == 512 and spec.supports(p, None) is None
        assert "128-row" in spec.with_settings({"x_rows_per_tile": 64}).supports(p, None)
        small = fake_capabilities(limits={**H200.limits, "max-compute-invocations-per-workgroup": 256})
        assert "past the adapter's 256" in INT8_KERNELS["tiled_int8_wg512"].bind(small).supports(p, None)

    def test_tuning_bucket_apart(self):
        """int8 kernels are tuned in their own bucket; an f32 entry is never taken for int8."""
        p = Problem(512, 4096, 4096, 128)
        assert tuning_bucket(p, "int8") == tuning_bucket(p) + "_a8"
        tuned = {tuning_bucket(p): {"kernel": "tiled", "settings": {}}}
        assert select(p, H200, tuned=tuned, activations="int8").name == "bcast_int8_k64"
        tuned = {tuning_bucket(p, "int8"): {"kernel": "tiled_int8", "settings": {"k_step": 32}}}
        assert select(p, H200, tuned=tuned, activations="int8").k_step == 32

    def test_quantize_key_labels_the_op(self):
        """The quantize dispatch is labelled as the op (it heads the op's pass), from its own file."""
        p = Problem(8, 64, 256, 128)
        spec = INT8_KERNELS["tiled_int8"]
        assert spec.quantize_key(p).label == spec.key(p).label == "linear_q4gsw/tiled_int8"
        assert spec.quantize_key(p).sources == ("quantize_int8",) and spec.key(p).sources == ("tiled_int8", "store_tile")
        assert spec.scratch_bytes(p) == (8 * 256, 4 * 8 * 2)
