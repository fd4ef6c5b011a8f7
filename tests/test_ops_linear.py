"""GPU tests of q4gsw.ops.linear: every registered kernel against the float64 reference."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import pathlib
import subprocess
import sys
import weakref

import numpy as np
import pytest
from hypothesis import given

import q4gsw
from q4gsw.kernels import (KERNELS, LLVMPIPE_LOOP_BUDGET, TILED_PRESETS, DecodeBatch, Problem, TiledSplit,
                           select)
from q4gsw.kernels.cost import long_grid
from q4gsw.kernels.decode import DecodeNarrow
from q4gsw.runtime.weights import features_per_chunk

from .strategies import POW2_GROUP_SIZES, aligned_shapes, seeds, shapes
from .utils import (assert_matches_reference, executorch_pack, fake_capabilities, random_problem, random_scales,
                    random_weights)

#: (id, M, N, K, group_size, batch): batch, when given, replaces M as x's leading shape.
CASES = [
    ("odd-K", 3, 8, 33, 8, None),
    ("odd-N", 2, 17, 64, 16, None),
    ("odd-N-odd-K", 5, 13, 45, 7, None),
    ("bytes-not-u32-words", 2, 7, 10, 4, None),  # N * ceil(K/2) = 35
    ("rows-not-u32-aligned", 3, 9, 14, 8, None),  # 7 bytes per row: rows start mid-word
    ("gs-not-dividing-K", 3, 16, 100, 32, None),
    ("gs-above-K", 2, 9, 40, 256, None),
    ("gs-1", 2, 6, 9, 1, None),
    ("gs-3", 4, 10, 50, 3, None),
    ("gs-5", 3, 11, 64, 5, None),
    ("gs-7", 2, 12, 99, 7, None),
    ("K-1", 3, 5, 1, 8, None),
    ("K-2", 2, 3, 2, 1, None),
    ("N-1", 3, 1, 64, 32, None),
    *[(f"gs-{gs}-K-512", 2, 12, 512, gs, None) for gs in POW2_GROUP_SIZES],
    *[(f"gs-{gs}-K-520", 2, 12, 520, gs, None) for gs in POW2_GROUP_SIZES],
    *[(f"M-{m}", m, 24, 96, 32, None) for m in (1, 2, 3, 17, 64, 130)],
    ("small-M-odd-N-K-256", 3, 17, 256, 64, None),
    ("M-1-N-5-K-1024", 1, 5, 1024, 32, None),
    ("M-2-K-1056", 2, 9, 1056, 32, None),
    ("M-8-K-2048", 8, 33, 2048, 128, None),
    ("batch-2x3", None, 20, 64, 32, (2, 3)),
    ("batch-2x3-odd-K", None, 11, 37, 8, (2, 3)),
    ("batch-1x1x5", None, 6, 32, 32, (1, 1, 5)),
]
CASE_IDS = [c[0] for c in CASES]


def run_kernel(runtime, case, name):
    """linear(case, kernel=name), or skip when the kernel does not support the shape (general must)."""
    m = int(np.prod(case.x.shape[:-1]))
    p = Problem(m, case.pw.out_features, case.pw.in_features, case.group_size, case.bias is not None)
    reason = KERNELS[name].supports(p, runtime.caps)
    if reason:
        assert name != "general", f"general must run every shape, but: {reason}"
        pytest.skip(reason)
    return q4gsw.linear(case.x, case.pw, case.bias, kernel=name)


def check_all_kernels(runtime, shape, seed):
    """Every kernel that supports shape matches the reference on data from seed; general must support it."""
    m, n, k, gs = shape
    case = random_problem(np.random.default_rng(seed), m, n, k, gs, bias=bool(seed % 2))
    p = Problem(m, n, k, gs, case.bias is not None)
    assert KERNELS["general"].supports(p, runtime.caps) is None
    for name, spec in KERNELS.items():
        if spec.supports(p, runtime.caps) is None:
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=name)
            assert_matches_reference(y, case.x, case.pw, case.bias)


class TestLinear:
    def test_outputs_poisoned(self, runtime):
        """The suite runs with output poisoning on, so an unwritten element shows up as NaN."""
        assert runtime.poison_outputs

    @pytest.mark.parametrize("kernel", list(KERNELS))
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize("case_id,m,n,k,gs,batch", CASES, ids=CASE_IDS)
    def test_matches_reference(self, runtime, make_problem, kernel, with_bias, case_id, m, n, k, gs, batch):
        """Every kernel matches the float64 reference within fp32 accumulation error and writes every element."""
        case = make_problem(m, n, k, gs, batch=batch, bias=with_bias)
        y = run_kernel(runtime, case, kernel)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    @given(shapes(), seeds)
    def test_property(self, runtime, shape, seed):
        """For random small shapes, every kernel that supports the shape matches the reference; general always does."""
        check_all_kernels(runtime, shape, seed)

    @given(aligned_shapes(), seeds)
    def test_property_aligned(self, runtime, shape, seed):
        """For random decode-like shapes (K, group size multiples of 32), every supporting kernel matches the reference."""
        check_all_kernels(runtime, shape, seed)

    def test_default_kernel(self, runtime, make_problem):
        """Without kernel=, the chosen kernel's result matches the reference."""
        for m, n, k, gs in ((1, 40, 256, 32), (5, 7, 33, 5), (64, 24, 128, 64)):
            case = make_problem(m, n, k, gs)
            assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias), case.x, case.pw, case.bias)

    @pytest.mark.parametrize("kernel", list(KERNELS))
    def test_padding_nibble_ignored(self, runtime, rng, kernel):
        """For odd K, the padding nibble of each row's last byte never changes the output."""
        n, k, gs = 9, 65, 16
        weights = random_weights(rng, n, k)
        clean = weights.copy()
        clean[:, -1] = (clean[:, -1] & 0x0F) | 0x80
        assert (weights[:, -1] >> 4 != 8).all()
        scales = random_scales(rng, -(-k // gs), n)
        x = rng.standard_normal((3, k)).astype(np.float32)
        dirty_pw = q4gsw.PackedWeight(weights, scales, gs, in_features=k)
        clean_pw = q4gsw.PackedWeight(clean, scales, gs, in_features=k)
        p = Problem(3, n, k, gs)
        if KERNELS[kernel].supports(p, runtime.caps):
            pytest.skip(KERNELS[kernel].supports(p, runtime.caps))
        y_dirty = q4gsw.linear(x, dirty_pw, kernel=kernel)
        np.testing.assert_array_equal(y_dirty, q4gsw.linear(x, clean_pw, kernel=kernel))
        assert_matches_reference(y_dirty, x, dirty_pw)

    @pytest.mark.parametrize("lead", [(0,), (2, 0), (0, 3)])
    def test_empty_batch(self, runtime, make_problem, no_new_buffers, lead):
        """M = 0 returns a float32 (..., 0, N) array without touching the GPU."""
        case = make_problem(1, 6, 20, 8)
        x = np.zeros((*lead, 20), np.float32)
        with no_new_buffers():
            y = q4gsw.linear(x, case.pw, case.bias)
            y_named = q4gsw.linear(x, case.pw, kernel="general")
        assert y.shape == y_named.shape == (*lead, 6)
        assert y.dtype == np.float32

    def test_x_layouts(self, runtime, make_problem, rng):
        """A non-contiguous x is read correctly and no input array is modified."""
        case = make_problem(4, 10, 24, 8)
        wide = rng.standard_normal((4, 48)).astype(np.float32)
        x = wide[:, ::2]
        before = (wide.copy(), case.weights.copy(), case.scales.copy(), case.bias.copy())
        y = q4gsw.linear(x, case.pw, case.bias)
        assert_matches_reference(y, x, case.pw, case.bias)
        for arr, saved in zip((wide, case.weights, case.scales, case.bias), before):
            np.testing.assert_array_equal(arr, saved)

    def test_weight_uploaded_once(self, runtime, make_problem):
        """The weight is uploaded on first use and reused: later calls create only per-call buffers."""
        case = make_problem(2, 10, 40, 8)
        counts = []
        for _ in range(3):
            before = runtime.buffers.created
            y = q4gsw.linear(case.x, case.pw, case.bias)
            counts.append(runtime.buffers.created - before)
            assert_matches_reference(y, case.x, case.pw, case.bias)
        assert counts[1] == counts[2] == counts[0] - 2  # weights and scales: once
        live = runtime.buffers.live
        runtime.weights.release(case.pw)
        assert runtime.buffers.live == live - 2 and len(runtime.weights.chunks(case.pw)) == 1  # uploaded again

    def test_loop_budget_shape(self, runtime, make_problem):
        """At M=1, N=K=4096, gs=128 (rowwise would loop 262 208 times), general stays in budget and is correct."""
        case = make_problem(1, 4096, 4096, 128, bias=True)
        p = Problem(1, 4096, 4096, 128, True)
        assert KERNELS["rowwise"].loop_trips(p) > LLVMPIPE_LOOP_BUDGET
        assert KERNELS["general"].loop_trips(p) <= LLVMPIPE_LOOP_BUDGET
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    @pytest.mark.parametrize("kernel", list(KERNELS))
    def test_split_along_n(self, runtime, fake_limits, make_problem, kernel):
        """A weight larger than the binding limit is split along N into chunks that together match the reference."""
        limit = 512
        case = make_problem(1, 50, 64, 16, extra_cols=5)  # 32 bytes per row: 16 rows per chunk
        p = Problem(1, 50, 64, 16, True)
        if KERNELS[kernel].supports(p, runtime.caps):
            pytest.skip(KERNELS[kernel].supports(p, runtime.caps))
        assert features_per_chunk(case.pw, limit) == 16
        with fake_limits(max_storage_buffer_binding_size=limit):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=kernel)
            chunks = runtime.weights.chunks(case.pw)
        assert [(c.n0, c.n) for c in chunks] == [(0, 16), (16, 16), (32, 16), (48, 2)]
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_split_along_n_odd_sizes(self, runtime, fake_limits, make_problem):
        """Chunks of odd N and odd K, with bias, stitch together into the reference result."""
        case = make_problem(3, 29, 37, 5, extra_groups=2, extra_cols=7)  # 19 bytes / 32 scale bytes per row
        with fake_limits(max_storage_buffer_binding_size=4 * 3 * 37):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
            assert len(runtime.weights.chunks(case.pw)) > 1
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_chunks_fit_binding_limit(self, runtime, fake_limits, rng):
        """Every weight and scale buffer bound for a dispatch fits the storage binding limit, padded scales included."""
        limit = 256
        n, k, gs = 3, 16, 8
        weights = random_weights(rng, n, k)
        scales = random_scales(rng, 2, n, extra_groups=0, extra_cols=97)  # padded_N = 100: 800 bytes
        pw = q4gsw.PackedWeight(weights, scales, gs)
        x = rng.standard_normal((1, k)).astype(np.float32)
        with fake_limits(max_storage_buffer_binding_size=limit):
            y = q4gsw.linear(x, pw, kernel="general")
            chunks = runtime.weights.chunks(pw)
        assert_matches_reference(y, x, pw)
        sizes = [(c.weights.size, c.scales.size) for c in chunks]
        runtime.weights.release(pw)
        for weight_bytes, scale_bytes in sizes:
            assert weight_bytes <= limit
            assert scale_bytes <= limit, f"a scales binding of {scale_bytes} bytes exceeds the {limit}-byte limit"

    @pytest.mark.slow
    def test_padded_scales_beyond_real_binding_limit(self, runtime, rng):
        """Scales whose padded_N row exceeds the real binding limit still run (N = 1, padded_N = limit / 4 + 8)."""
        limit = runtime.caps.max_binding_size
        scales = np.ones((1, limit // 4 + 8), np.float32)
        pw = q4gsw.PackedWeight(np.full((1, 1), 0x99, np.uint8), scales, 2)
        x = np.ones((1, 2), np.float32)
        try:
            assert_matches_reference(q4gsw.linear(x, pw), x, pw)
        finally:
            runtime.weights.release(pw)

    def test_folds_grid(self, runtime, fake_limits, make_problem):
        """More workgroups than max-compute-workgroups-per-dimension fold into a 2-D grid that covers all tiles."""
        case = make_problem(9, 40, 48, 16)  # general: 40 * 3 = 120 tiles, rowwise: 9
        with fake_limits(max_compute_workgroups_per_dimension=4):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel="rowwise")
        assert_matches_reference(y, case.x, case.pw, case.bias)
        with fake_limits(max_compute_workgroups_per_dimension=11):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel="general")
        assert_matches_reference(y, case.x, case.pw, case.bias)


class TestLinearQ4gsw:
    @pytest.mark.parametrize("kernel", list(KERNELS))
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize("m,n,k,gs,extra_groups,extra_cols", [
        (3, 8, 33, 8, 2, 5),
        (2, 17, 64, 16, 1, 3),
        (1, 12, 512, 128, 3, 4),
        (4, 7, 10, 3, 0, 1),
        (5, 6, 100, 32, 1, 0),
    ], ids=["odd-K", "odd-N", "K-512", "gs-3", "gs-not-dividing-K"])
    def test_matches_reference(self, runtime, make_problem, kernel, with_bias, m, n, k, gs, extra_groups, extra_cols):
        """ExecuTorch's entry point matches the reference; the NaN-filled padding of scales is never read."""
        case = make_problem(m, n, k, gs, bias=with_bias, extra_groups=extra_groups, extra_cols=extra_cols)
        p = Problem(m, n, k, gs, with_bias)
        if KERNELS[kernel].supports(p, runtime.caps):
            assert kernel != "general"
            pytest.skip(KERNELS[kernel].supports(p, runtime.caps))
        y = q4gsw.linear_q4gsw(case.x, case.weights, case.scales, gs, case.bias, kernel=kernel)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    def test_default_kernel(self, runtime, make_problem):
        """Without kernel=, linear_q4gsw matches the reference for a batched x."""
        case = make_problem(None, 10, 64, 32, batch=(2, 3))
        y = q4gsw.linear_q4gsw(case.x, case.weights, case.scales, 32, case.bias)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    def test_k_from_x(self, runtime, rng):
        """K comes from x: the same bytes serve K = 2B (all nibbles) and K = 2B - 1 (padding nibble ignored)."""
        n, kb, gs = 6, 11, 4
        weights = random_weights(rng, n, 2 * kb)
        scales = random_scales(rng, -(-2 * kb // gs), n)
        for k in (2 * kb, 2 * kb - 1):
            x = rng.standard_normal((3, k)).astype(np.float32)
            y = q4gsw.linear_q4gsw(x, weights, scales, gs)
            assert_matches_reference(y, x, q4gsw.PackedWeight(weights, scales, gs, in_features=k))

    @pytest.mark.parametrize("lead", [(0,), (2, 0)])
    def test_empty_batch(self, runtime, make_problem, no_new_buffers, lead):
        """M = 0 returns a float32 (..., 0, N) array without touching the GPU."""
        case = make_problem(1, 5, 9, 4)
        with no_new_buffers():
            y = q4gsw.linear_q4gsw(np.zeros((*lead, 9), np.float32), case.weights, case.scales, 4, case.bias)
        assert y.shape == (*lead, 5) and y.dtype == np.float32

    def test_weight_cached(self, runtime, make_problem):
        """Repeated calls with the same arrays upload the weight once."""
        case = make_problem(2, 10, 40, 8)
        counts = []
        for _ in range(3):
            before = runtime.buffers.created
            y = q4gsw.linear_q4gsw(case.x, case.weights, case.scales, 8, case.bias)
            counts.append(runtime.buffers.created - before)
            assert_matches_reference(y, case.x, case.pw, case.bias)
        assert counts[1] == counts[2] == counts[0] - 2

    def test_cache_releases_arrays(self, runtime, rng):
        """The weight cache does not keep ExecuTorch's arrays (nor their GPU copies) alive after the caller drops them."""
        weights = random_weights(rng, 4, 16)
        scales = random_scales(rng, 2, 4)
        x = rng.standard_normal((2, 16)).astype(np.float32)
        q4gsw.linear_q4gsw(x, weights, scales, 8)
        alive = weakref.ref(weights), weakref.ref(scales)
        del weights, scales
        gc.collect()
        assert alive[0]() is None and alive[1]() is None, "the weight cache keeps the arrays alive"


class TestDecodeScaleStrides:
    @pytest.mark.parametrize("name", ["decode_subgroup", "decode_workgroup"])
    @pytest.mark.parametrize(("n", "pad"), [(30, 2), (64, 0), (33, 0), (17, 3)])
    def test_vector_and_scalar_scale_paths(self, runtime, rng, name, n, pad):
        """Scale row strides that are multiples of 4 (one 16-byte load a step, rows past N
        reading padding) and those that are not (scalar loads) both match the reference."""
        spec = KERNELS[name]
        k, gs = 128, 32
        weights = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
        scales = rng.standard_normal((k // gs + 1, n + pad)).astype(np.float32)
        pw = q4gsw.PackedWeight(weights, scales, gs, in_features=k)
        x = rng.standard_normal((2, k)).astype(np.float32)
        if spec.supports(Problem(2, n, k, gs), runtime.caps):
            pytest.skip(f"{name} unsupported here")
        assert_matches_reference(q4gsw.linear(x, pw, kernel=name), x, pw)


class TestWithoutSubgroups:
    def test_device_without_subgroup_routes_to_workgroup_reduction(self, runtime, rng):
        """On a device created without the `subgroup` feature, decode_subgroup is refused, the
        default route takes decode_workgroup, and the result matches the reference."""
        import q4gsw.runtime.device as device_module
        from q4gsw.runtime import Runtime, reset_runtime

        saved = device_module._runtime
        rt = Runtime(disable_features=("subgroup",))
        reset_runtime(rt)
        try:
            assert not rt.caps.has_subgroups
            k, n, gs = 256, 40, 64
            pw = q4gsw.quantize(rng.standard_normal((n, k)).astype(np.float32), gs)
            x = rng.standard_normal((1, k)).astype(np.float32)
            with pytest.raises(q4gsw.UnsupportedShapeError, match="subgroup"):
                q4gsw.linear(x, pw, kernel="decode_subgroup")
            with q4gsw.profile() as prof:
                y = q4gsw.linear(x, pw)
            assert [r["label"] for r in prof.rows()] == ["linear_q4gsw/decode_workgroup"]
            assert_matches_reference(y, x, pw)
        finally:
            reset_runtime(saved)


class TestTiledSplit:
    """tiled_split: tiles of 64 or 128 rows and K split over workgroups, whose partial tiles
    a reduce_splits dispatch adds (with the bias) in the same pass."""

    @pytest.mark.parametrize("rows", [64, 128])
    @pytest.mark.parametrize("split", [1, 2, 3, 5, 16])
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [
        (1, 5, 64, 32),        # fewer k steps (2) than splits: empty splits write zeros
        (17, 67, 96, 32),      # odd M and N, 3 steps
        (65, 130, 320, 96),    # group size not a power of two, two row tiles at 64
        (130, 129, 512, 64),   # M past one 128-row tile, N past one 128-feature tile
    ])
    def test_matches_reference(self, runtime, make_problem, rows, split, with_bias, m, n, k, gs):
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = TiledSplit(rows, split)
        assert spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps) is None
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    @pytest.mark.parametrize(("rows", "split"), [(64, 1), (128, 1), (128, 3)])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [(1, 5, 64, 32), (17, 67, 96, 32), (65, 130, 320, 96),
                                                     (130, 129, 512, 64), (33, 40, 512, 256)])
    def test_without_prefetch(self, runtime, make_problem, rows, split, m, n, k, gs):
        """prefetch=False (each step's loads at its start: group changes mid-split, edges, bias)
        matches the reference."""
        case = make_problem(m, n, k, gs, bias=m % 2 == 1)
        spec = TiledSplit(rows, split, prefetch=False)
        assert dict(spec.constants(Problem(m, n, k, gs)))["PREFETCH"] is False
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    @pytest.mark.parametrize("name", ["tiled_split_2wg", "tiled_lowreg_2wg", "tiled_lowreg", "tiled_m64",
                                      "tiled_wg512"])
    def test_benchmark_presets(self, runtime, make_problem, name):
        """The registered tiled presets run correctly by name and are never chosen by default."""
        case = make_problem(130, 136, 1024, 128, bias=True)
        spec = KERNELS[name]
        assert spec.baseline and spec.name == name and TILED_PRESETS[name] is spec
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=name)
        assert_matches_reference(y, case.x, case.pw, case.bias)
        assert select(Problem(512, 4096, 4096, 128), None).name != name

    @pytest.mark.parametrize(("split", "prefetch"), [(1, True), (3, False)])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [(1, 5, 64, 32), (130, 129, 512, 64), (33, 40, 512, 256)])
    def test_512_invocations(self, runtime, make_problem, split, prefetch, m, n, k, gs):
        """512 invocations of 4 x 8 on 128-row tiles (the upper half computes, does not stage)
        match the reference; 64-row tiles or a 256-invocation adapter are refused."""
        case = make_problem(m, n, k, gs, bias=m % 2 == 1)
        spec = TiledSplit(128, split, prefetch=prefetch, invocations_per_workgroup=512)
        p = Problem(m, n, k, gs)
        assert dict(spec.constants(p))["WG"] == 512 and spec.supports(p, runtime.caps) is None
        assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias, kernel=spec), case.x, case.pw, case.bias)
        assert "128-row" in TiledSplit(64, 1, invocations_per_workgroup=512).supports(p, None)

    def test_2wg_split_fills_two_waves(self):
        """resident=2 splits K until the grid fills two workgroups per SM (264)."""
        assert KERNELS["tiled_split_2wg"].split(Problem(512, 4096, 4096, 128)) == 2
        assert KERNELS["tiled_lowreg_2wg"].split(Problem(512, 14336, 4096, 128)) == 1  # 448 tiles
        assert KERNELS["tiled_split"].split(Problem(512, 4096, 4096, 128)) == 1

    @pytest.mark.parametrize("diag", [1, 2])
    def test_timing_diagnostics_cut_work(self, runtime, make_problem, diag):
        """DIAG 1 (tiles of the first step reused) and 2 (one k of 32) compile and run, and change
        the result; the same spec with DIAG 0 matches the reference."""

        class Diag(TiledSplit):
            def constants(self, p):
                return (*super().constants(p), ("DIAG", self.diag))

        case = make_problem(70, 136, 256, 64)
        results = []
        for value in (0, diag):
            spec = Diag(128, 1)
            spec.diag = value
            results.append(q4gsw.linear(case.x, case.pw, case.bias, kernel=spec))
        assert_matches_reference(results[0], case.x, case.pw, case.bias)
        assert np.abs(results[1] - results[0]).max() > 1e-3 * np.abs(results[0]).max()

    def test_split_along_n(self, runtime, fake_limits, make_problem):
        """With the weight split along N, each chunk's reduction writes its own columns (and bias)."""
        case = make_problem(1, 50, 64, 32, extra_cols=5)  # 1600 weight bytes; 400 of partial sums
        with fake_limits(max_storage_buffer_binding_size=512):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=TiledSplit(64, 2))
            assert len(runtime.weights.chunks(case.pw)) > 1
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_one_labelled_pass_and_buffers_freed(self, runtime, make_problem):
        """A split run is one profiled pass labelled tiled_split, and frees its partial sums."""
        case = make_problem(20, 40, 256, 64)
        q4gsw.linear(case.x, case.pw, case.bias, kernel=TiledSplit(64, 4))  # weight uploaded, pipelines built
        live = runtime.buffers.live
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=TiledSplit(64, 4))
        assert runtime.buffers.live == live
        with q4gsw.profile() as prof:
            q4gsw.linear(case.x, case.pw, case.bias, kernel=TiledSplit(64, 4))
        assert [(r["label"], r["calls"]) for r in prof.rows()] == [("linear_q4gsw/tiled_split", 1)]
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_partial_sums_past_binding_limit_refused(self, runtime, fake_limits):
        """A split whose partial sums would not fit one binding is refused, naming the reason."""
        p = Problem(64, 4096, 4096, 128)
        with fake_limits(max_storage_buffer_binding_size=4 * 64 * 4096 * 2 - 4):
            assert "partial sums" in TiledSplit(64, 2).supports(p, runtime.caps)
            assert TiledSplit(64, 1).supports(p, runtime.caps) is None

    def test_default_settings(self):
        """64-row tiles up to M = 64; the split fills one wave of 132 workgroups, >= 4 steps each."""
        spec = KERNELS["tiled_split"]
        assert (spec.tile_rows(Problem(64, 4096, 4096, 128)), spec.split(Problem(64, 4096, 4096, 128))) == (64, 4)
        assert (spec.tile_rows(Problem(128, 4096, 4096, 128)), spec.split(Problem(128, 4096, 4096, 128))) == (128, 4)
        assert spec.split(Problem(128, 14336, 4096, 128)) == 1  # 112 tiles already fill the wave
        assert spec.split(Problem(64, 4096, 256, 128)) == 2  # K = 256: 8 steps, at least 4 each


class TestDecodeUnpack:
    """decode_* with either nibble unpack of unpack.wgsl (shift, imad) and the defaults a long
    grid takes (imad; 32 rows with the subgroup reduction)."""

    @pytest.mark.parametrize("name", ["decode_subgroup", "decode_workgroup"])
    @pytest.mark.parametrize("unpack", ["shift", "imad"])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [(1, 37, 256, 32), (3, 17, 544, 96), (2, 9, 1056, 32)])
    def test_matches_reference(self, runtime, make_problem, name, unpack, m, n, k, gs):
        case = make_problem(m, n, k, gs, bias=m % 2 == 1)
        spec = KERNELS[name].bind(runtime.caps).with_settings({"unpack": unpack, "features_per_workgroup": 8})
        assert spec.unpack_imad(Problem(m, n, k, gs)) == (unpack == "imad")
        assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias, kernel=spec), case.x, case.pw, case.bias)

    def test_long_grid_defaults(self, runtime, make_problem):
        """N past 2048 blocks of 16 rows: 32 rows a workgroup, by default; decode takes the imad
        unpack on every grid (H200, session 5)."""
        spec = KERNELS["decode_subgroup"].bind(runtime.caps)
        long, short = Problem(1, 16 * 2048, 64, 32), Problem(1, 16 * 2047, 64, 32)
        assert long_grid(long) and not long_grid(short)
        assert (spec.features(long), spec.unpack_imad(long)) == (32, True)
        assert (spec.features(short), spec.unpack_imad(short)) == (16, True)
        workgroup = KERNELS["decode_workgroup"].bind(runtime.caps)  # 32 rows cost it residency
        assert (workgroup.features(long), workgroup.unpack_imad(long)) == (16, True)
        batch = KERNELS["decode_batch"].bind(runtime.caps)  # every block takes imad (H200, session 5)
        assert batch.unpack_imad(Problem(2, 16 * 2048, 64, 32)) and batch.unpack_imad(Problem(2, 64, 64, 32))
        case = make_problem(1, 16 * 2048 + 3, 64, 32, bias=True)
        assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias, kernel=spec), case.x, case.pw, case.bias)


class TestDecodeVariants:
    """decode_* variants routing leaves off: K split over workgroups of k_per_workgroup k with a
    reduce_splits dispatch, up to 64 rows a workgroup, x staged through workgroup memory, and
    decode_narrow (8-byte loads)."""

    @pytest.mark.parametrize("name", ["decode_subgroup", "decode_workgroup"])
    @pytest.mark.parametrize(("kpw", "staged", "features"), [
        (1024, False, 32), (1024, True, 64), (2048, False, 64), (2048, True, 16), (None, True, 16)])
    @pytest.mark.parametrize(("m", "n", "k", "gs", "with_bias"), [
        (1, 37, 2048, 32, True),     # odd N, N not a multiple of the rows a workgroup
        (1, 70, 3104, 64, False),    # K a multiple of 32 only: the last split is short
        (3, 33, 4160, 128, True),    # M = 3 (a workgroup per row of x), 130 words over 5 or 3 splits
        (1, 130, 1056, 256, False),  # gs 256 past the last split's end
        (2, 9, 32, 32, True),        # one word per row: a single split
    ])
    def test_matches_reference(self, runtime, make_problem, name, kpw, staged, features, m, n, k, gs, with_bias):
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = KERNELS[name].bind(runtime.caps).with_settings(
            {"k_per_workgroup": kpw, "x_staged": staged, "features_per_workgroup": features})
        p = Problem(m, n, k, gs, with_bias)
        reason = spec.supports(p, runtime.caps)
        if reason:
            pytest.skip(reason)
        assert spec.split(p) == (1 if kpw is None else -(-k // kpw))
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    @pytest.mark.parametrize("name", ["decode_subgroup", "decode_workgroup"])
    @pytest.mark.parametrize(("features", "unpack"), [(None, "imad"), (8, "shift"), (32, "imad")])
    @pytest.mark.parametrize(("m", "n", "k", "gs", "with_bias"), [
        (2, 37, 2048, 32, True),     # odd N, N not a multiple of the rows a workgroup
        (3, 70, 3104, 64, False),    # odd M: the last block's second row is past M (not written)
        (1, 33, 4160, 128, True),    # M = 1: the second row clamps to the first
        (8, 130, 1056, 256, False),  # four blocks
        (5, 9, 32, 32, True),        # one word per row
    ])
    def test_two_rows_of_x(self, runtime, make_problem, name, features, unpack, m, n, k, gs, with_bias):
        """x_rows=2: a workgroup takes two rows of x, each nibble unpacked once for both."""
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = KERNELS[name].bind(runtime.caps).with_settings(
            {"x_rows": 2, "features_per_workgroup": features, "unpack": unpack})
        assert spec.x_rows == 2
        p = Problem(m, n, k, gs, with_bias)
        reason = spec.supports(p, runtime.caps)
        if reason:
            pytest.skip(reason)
        assert spec.tiles(p)[1] == -(-m // 2)
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    def test_two_rows_routing(self):
        """decode_x2_subgroup (two rows of x a workgroup, 32 weight rows) is routed for M = 2-6
        (3.2e-13 s a block of two rows and weight: the H200 probe of session 6), decode_batch's
        blocks of 8 from M = 7, decode for M = 1."""
        gpu = fake_capabilities(adapter_type="DiscreteGPU")
        for m, name in ((1, "decode_subgroup"), (2, "decode_x2_subgroup"), (4, "decode_x2_subgroup"),
                        (6, "decode_x2_subgroup"), (7, "decode_batch"), (8, "decode_batch")):
            spec = q4gsw.kernels.select(Problem(m, 4096, 14336, 128), gpu)
            assert spec.name == name, m
        spec = q4gsw.kernels.select(Problem(2, 4096, 14336, 128), gpu)
        assert spec.features(Problem(2, 4096, 14336, 128)) == 32 and dict(spec.constants(Problem(2, 4096, 14336, 128)))["X_ROWS"] == 2

    def test_two_rows_refused_where_not_built(self):
        """x_rows=2 is refused with K split, x staged or decode_narrow, with the reason."""
        p = Problem(2, 64, 2048, 64)
        for spec in (KERNELS["decode_subgroup"].with_settings({"x_rows": 2, "k_per_workgroup": 1024}),
                     KERNELS["decode_subgroup"].with_settings({"x_rows": 2, "x_staged": True}),
                     KERNELS["decode_narrow_subgroup"].with_settings({"x_rows": 2})):
            assert "x_rows=2" in spec.supports(p, None)

    @pytest.mark.parametrize(("reduction", "capacity"), [("subgroup", 32768), ("workgroup", 4096)])
    @pytest.mark.parametrize(("kpw", "features", "unpack"), [
        (None, None, "shift"), (None, 64, "imad"), (1024, 32, "auto"), (2048, 8, "shift")])
    @pytest.mark.parametrize(("m", "n", "k", "gs", "with_bias"), [
        (1, 37, 2048, 32, True),     # odd N
        (1, 70, 3088, 16, False),    # K and gs multiples of 16 only
        (3, 33, 4160, 128, True),    # M = 3, short last split
        (1, 130, 1056, 256, False),  # gs 256
        (2, 21, 48, 16, True),       # 3 pairs per row, one workgroup of 32 mostly idle
    ])
    def test_narrow_matches_reference(self, runtime, make_problem, reduction, capacity, kpw, features, unpack,
                                      m, n, k, gs, with_bias):
        """decode_narrow (8-byte loads, 16 k an invocation, 8 rows a step) with either reduction."""
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = DecodeNarrow(reduction, capacity).bind(runtime.caps).with_settings(
            {"k_per_workgroup": kpw, "features_per_workgroup": features, "unpack": unpack})
        reason = spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps)
        if reason:
            pytest.skip(reason)
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    def test_narrow_routing(self):
        """decode_narrow is chosen for M = 1 on a GPU up to 2^24 weights (one wave of 8-row
        workgroups on the H200), decode above that, and never on a CPU adapter unless decode
        cannot run the shape (K a multiple of 16, not 32)."""
        gpu, cpu = fake_capabilities(adapter_type="DiscreteGPU"), fake_capabilities()
        assert q4gsw.kernels.select(Problem(1, 4096, 4096, 128), gpu).name == "decode_narrow_subgroup"
        assert q4gsw.kernels.select(Problem(1, 2048, 8192, 128), gpu).name == "decode_narrow_subgroup"
        assert q4gsw.kernels.select(Problem(1, 4097, 4096, 128), gpu).name == "decode_subgroup"
        assert q4gsw.kernels.select(Problem(1, 14336, 4096, 128), gpu).name == "decode_subgroup"
        assert q4gsw.kernels.select(Problem(2, 4096, 4096, 128), gpu).name == "decode_x2_subgroup"
        assert q4gsw.kernels.select(Problem(1, 4096, 4096, 128), cpu).name == "decode_subgroup"
        assert q4gsw.kernels.select(Problem(1, 70, 3088, 16), gpu).name == "decode_narrow_subgroup"

    def test_narrow_shape_reasons(self):
        """decode_narrow needs K and group sizes multiples of 16, and no x staging."""
        spec = DecodeNarrow("subgroup", 32768)
        assert "multiple of 16" in spec.supports(Problem(1, 8, 40, 8), None)
        assert "multiple of 16" in spec.supports(Problem(1, 8, 48, 24), None)
        assert "x_staged" in spec.with_settings({"x_staged": True}).supports(Problem(1, 8, 48, 16), None)
        p = Problem(1, 4096, 14336, 128)
        assert (spec.workgroup_size(p), spec.features(p), spec.split(p)) == (896, 8, 1)  # one step by default
        assert spec.key(p).sources == ("decode_narrow", "unpack", "reduce_subgroup")

    def test_settings(self):
        """Split and staging appear in settings and constants only when set; the route's keys
        are those of the shipped kernel; out-of-range settings are ignored."""
        base = KERNELS["decode_subgroup"]
        p = Problem(1, 4096, 14336, 128)
        assert base.settings() == {"features_per_workgroup": None, "unpack": "auto"}
        assert [c for c, _ in base.constants(p)] == ["FEATURES", "WG", "UNPACK_IMAD"]
        split = base.with_settings({"k_per_workgroup": 1024, "x_staged": True, "features_per_workgroup": 64})
        assert split.settings() == {"features_per_workgroup": 64, "unpack": "auto", "k_per_workgroup": 1024,
                                    "x_staged": True}
        assert (split.split(p), split.workgroup_size(p), split.features(p)) == (14, 32, 64)
        assert dict(split.constants(p))["SPLIT"] == 14 and dict(split.constants(p))["X_STAGED"]
        assert split.tiles(p) == (64, 14)
        assert split.workgroup_bytes(p) == 4 * 64 * 32 // 4 + 16 * 9 * 32
        for bad in ({"k_per_workgroup": 1000}, {"k_per_workgroup": 65536}, {"x_staged": 1}):
            assert base.with_settings(bad) is base
        workgroup = KERNELS["decode_workgroup"].with_settings({"k_per_workgroup": 1024, "features_per_workgroup": 64})
        assert workgroup.features(p) == 32  # its reduction needs FEATURES <= WG

    def test_one_pass_and_buffers_freed(self, runtime, make_problem):
        """A split run is one profiled pass (the reduction follows in it) and frees its partial sums."""
        case = make_problem(1, 40, 2048, 128)
        spec = KERNELS["decode_subgroup"].bind(runtime.caps).with_settings({"k_per_workgroup": 1024})
        q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        live = runtime.buffers.live
        with q4gsw.profile() as prof:
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        assert runtime.buffers.live == live
        assert [(r["label"], r["calls"]) for r in prof.rows()] == [("linear_q4gsw/decode_subgroup", 1)]
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)


class TestDecodeBatch:
    """decode_batch: blocks of 4 or 8 rows of x share each weight word's unpack; sums are
    added across the subgroup by a transpose-reduction (8-, 16- and 32-lane paths) or, for
    other subgroup sizes, by subgroupAdd."""

    @pytest.mark.parametrize(("rows", "unpack"), [(4, "shift"), (8, "imad"), (16, "auto"), (32, "shift"), (32, "imad")])
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize(("m", "n", "k", "gs"), [
        (1, 5, 8, 8),          # one word per row, a single row of x (block of 2, one row past M)
        (2, 37, 256, 32),      # block of 2
        (4, 67, 520, 40),      # block of 4; K not a multiple of 256 (invocations past K/8 add nothing); gs 40
        (5, 33, 1024, 128),    # block of 8, three rows past M
        (17, 130, 2048, 96),   # three blocks of 8; gs 96 does not divide K
        (9, 3, 8192, 64),      # the largest K of one workgroup (1024 invocations)
        (3, 7, 8200, 40),      # K split over 2 workgroups (partial sums + reduce_splits)
        (6, 11, 20000, 128),   # 3 splits, the last one shorter
    ])
    def test_matches_reference(self, runtime, make_problem, rows, unpack, with_bias, m, n, k, gs):
        case = make_problem(m, n, k, gs, bias=with_bias)
        spec = DecodeBatch(rows, unpack=unpack).bind(runtime.caps)
        reason = spec.supports(Problem(m, n, k, gs, with_bias), runtime.caps)
        if reason:
            pytest.skip(reason)
        assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias, kernel=spec), case.x, case.pw, case.bias)

    def test_refuses(self, runtime):
        """K past 32768, K or group sizes not multiples of 8, and devices without subgroups."""
        spec = KERNELS["decode_batch"]
        assert "32768" in spec.supports(Problem(4, 64, 32776, 8), None)
        assert "multiple of 8" in spec.supports(Problem(4, 64, 100, 4), None)
        assert "multiple of 8" in spec.supports(Problem(4, 64, 96, 12), None)
        assert "subgroup" in spec.supports(Problem(4, 64, 96, 8), dataclasses.replace(runtime.caps, features=frozenset()))

    def test_rows_fit_workgroup_memory(self, runtime):
        """With subgroups of 4 (the smallest slots), rows per workgroup shrink to fit the limit."""
        p = Problem(4, 4096, 8192, 128)  # 4 rows of x, 1024 invocations: 256 slots of 4 lanes
        small = DecodeBatch(32, min_lanes=4, storage_limit=16384)
        assert small.features(p) == 4 and small.workgroup_bytes(p, 4) == 16384
        assert "workgroup memory" in DecodeBatch(32, min_lanes=4, storage_limit=8192).supports(p, None)
        assert DecodeBatch(32, min_lanes=32, storage_limit=49152).features(p) == 32

    @pytest.mark.parametrize("factor", [2, 4])
    def test_smaller_subgroups_than_sized_for(self, runtime, make_problem, factor):
        """Slots sized for subgroups `factor` times larger than the device runs (a driver that
        varies the size between pipelines): the subgroups share slots, adding in turn."""
        lanes = runtime.caps.subgroup_min_size
        limit = int(runtime.caps.limits["max-compute-workgroup-storage-size"])
        for m, n, k, gs in [(2, 37, 256, 32), (8, 33, 1024, 128), (11, 9, 64, 8)]:
            case = make_problem(m, n, k, gs)
            spec = DecodeBatch(16, min_lanes=factor * lanes, storage_limit=limit)
            if spec.workgroup_size(Problem(m, n, k, gs)) < factor * lanes:
                continue
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
            assert_matches_reference(y, case.x, case.pw, case.bias)

    @pytest.mark.parametrize(("width", "lanes"), [(128, 4), (512, 16)])
    def test_other_subgroup_sizes(self, runtime, width, lanes):
        """llvmpipe with LP_NATIVE_VECTOR_WIDTH runs subgroups of 4 (subgroupAdd path) or 16
        (16-lane transposition); the default run covers 8. (llvmpipe's 1024-bit mode reports 32
        lanes but runs 16: the 32-lane path is checked on the H100, in the benchmark's rel. error.)"""
        if "llvmpipe" not in runtime.caps.adapter_name:
            pytest.skip("LP_NATIVE_VECTOR_WIDTH is an llvmpipe setting")
        env = {**os.environ, "LP_NATIVE_VECTOR_WIDTH": str(width), "Q4GSW_POISON_OUTPUTS": "1"}
        root = pathlib.Path(__file__).resolve().parents[1]
        done = subprocess.run([sys.executable, "-m", "tests.decode_batch_lanes"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["subgroup_size"] == lanes
        for r in report["results"]:
            assert r["worst_over_tolerance"] is not None and r["worst_over_tolerance"] <= 1.0, r


class TestPaddedRows:
    """linear_q4gsw on rows as ExecuTorch's exporter writes them: padded to a multiple of
    inner_dim_padding elements (tests.utils.executorch_pack), K taken from x."""

    @pytest.mark.parametrize("kernel", list(KERNELS))
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize("m,n,k,gs,padding", [
        (3, 7, 60, 16, 8),      # K = 60 -> 32 bytes a row (the case); gs does not divide K
        (1, 9, 61, 32, 8),      # odd K -> 32 bytes; M = 1
        (70, 5, 36, 12, 8),     # large M, 20 bytes a row
        (2, 33, 96, 32, 64),    # K % 32 == 0 padded to 128: decode, decode_batch and tiled run too
        (130, 13, 160, 64, 64),  # large M with K % 32 == 0: tiled / tiled_split on padded rows
    ], ids=["K60", "odd-K-M1", "large-M", "K96-pad64", "K160-large-M"])
    def test_every_kernel(self, runtime, rng, kernel, with_bias, m, n, k, gs, padding):
        """Each kernel that runs the shape matches the reference of the unpadded weight, with
        garbage in the padding bytes (ignored) and NaN in the unused scales."""
        q = rng.integers(-8, 8, (n, k))
        weights = executorch_pack(q, padding)
        compact = (k + 1) // 2
        assert weights.shape[1] > compact
        weights[:, compact:] = rng.integers(0, 256, (n, weights.shape[1] - compact), dtype=np.uint8)
        if k % 2:
            weights[:, compact - 1] |= np.uint8(0x30)  # a padding nibble that is not 8
        scales = random_scales(rng, -(-k // gs), n)
        bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
        x = rng.standard_normal((m, k)).astype(np.float32)
        p = Problem(m, n, k, gs, with_bias)
        reason = KERNELS[kernel].bind(runtime.caps).supports(p, runtime.caps)
        if reason:
            pytest.skip(reason)
        y = q4gsw.linear_q4gsw(x, weights, scales, gs, bias, kernel=kernel)
        pw = q4gsw.PackedWeight(weights, scales, gs, in_features=k)
        assert pw.padded
        np.testing.assert_array_equal(pw.unpack(), q)
        assert_matches_reference(y, x, pw, bias)

    def test_chunked_upload(self, runtime, rng, fake_limits):
        """A padded weight split along N (binding limit) uploads each chunk without padding."""
        n, k, gs = 50, 60, 16
        weights = executorch_pack(rng.integers(-8, 8, (n, k)), 8)
        pw = q4gsw.PackedWeight(weights, random_scales(rng, 4, n), gs, in_features=k)
        x = rng.standard_normal((1, k)).astype(np.float32)
        with fake_limits(max_storage_buffer_binding_size=256):
            assert features_per_chunk(pw, 256) == 8
            y = q4gsw.linear(x, pw, kernel="general")
        assert_matches_reference(y, x, pw)

    def test_refused_padding(self, runtime, rng, no_new_buffers):
        """A row length that is neither ceil(K/2) nor a documented padding raises ShapeError
        naming 'weights', before any GPU buffer exists."""
        weights = rng.integers(0, 256, (4, 36), dtype=np.uint8)
        with no_new_buffers(), pytest.raises(q4gsw.ShapeError, match="linear_q4gsw: argument 'weights'"):
            q4gsw.linear_q4gsw(np.ones((1, 60), np.float32), weights, random_scales(rng, 4, 4), 16)
