"""Size limits, leaks, threads, a lost device and the llvmpipe loop budget (docs/reliability.md)."""

from __future__ import annotations

import gc
import re
import threading
import time

import numpy as np
import pytest

import q4gsw
from q4gsw.kernels import KERNELS, LLVMPIPE_LOOP_BUDGET, Problem, select
from q4gsw.ops.linear import _tensor_pairs
from q4gsw.runtime import Runtime, reset_runtime
from q4gsw.runtime.pipelines import load_wgsl

from .test_ops_linear import CASES
from .utils import assert_matches_reference, fake_capabilities, random_problem, random_scales, random_weights

OLD_MESA = dict(adapter_name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="Mesa 22.3.6 (LLVM 15.0.6)")


def rss() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- size limits ----------------------------------------------------------------------------------

class TestSizeLimits:
    @pytest.mark.parametrize("kernel", list(KERNELS))
    def test_fold_grid_every_kernel(self, runtime, fake_limits, make_problem, kernel):
        """With ceil(sqrt(workgroups)) workgroups per dimension, every kernel folds its grid into 2-D and matches the reference."""
        case = make_problem(9, 300, 64, 32) if kernel != "tiled" else make_problem(300, 300, 64, 32)
        m = case.x.shape[0]
        p = Problem(m, 300, 64, 32, True)
        if KERNELS[kernel].supports(p, runtime.caps):
            pytest.skip(KERNELS[kernel].supports(p, runtime.caps))
        n_tiles, m_tiles = KERNELS[kernel].tiles(p)
        dim = max(2, int(np.ceil(np.sqrt(n_tiles * m_tiles))))
        assert dim < n_tiles * m_tiles <= dim * dim
        with fake_limits(max_compute_workgroups_per_dimension=dim):
            y = q4gsw.linear(case.x, case.pw, case.bias, kernel=kernel)
        assert_matches_reference(y, case.x, case.pw, case.bias)

    def test_workgroup_boundary(self, runtime, fake_limits, no_new_buffers, rng):
        """dim^2 workgroups run; dim^2 + 1 raise SizeLimitError before any buffer (general: N * ceil(M/4))."""
        x = rng.standard_normal((4, 8)).astype(np.float32)
        ok = q4gsw.PackedWeight(random_weights(rng, 16, 8), random_scales(rng, 1, 16), 8)
        over = q4gsw.PackedWeight(random_weights(rng, 17, 8), random_scales(rng, 1, 17), 8)
        with fake_limits(max_compute_workgroups_per_dimension=4):
            assert_matches_reference(q4gsw.linear(x, ok, kernel="general"), x, ok)
            with no_new_buffers(), pytest.raises(q4gsw.SizeLimitError, match="at most 4\\^2 workgroups"):
                q4gsw.linear(x, over, kernel="general")

    def test_binding_boundary(self, runtime, fake_limits, no_new_buffers, rng):
        """x and out of exactly the binding limit run; one more row of x is refused, naming 'x'."""
        k = n = 16
        pw = q4gsw.PackedWeight(random_weights(rng, n, k), random_scales(rng, 1, n), 16)
        x = rng.standard_normal((4, k)).astype(np.float32)
        with fake_limits(max_storage_buffer_binding_size=4 * 4 * k):
            assert_matches_reference(q4gsw.linear(x, pw, kernel="general"), x, pw)
            x5 = rng.standard_normal((5, k)).astype(np.float32)
            with no_new_buffers(), pytest.raises(q4gsw.SizeLimitError, match="'x'"):
                q4gsw.linear(x5, pw)
        runtime.weights.release(pw)

    def test_u32_indices_bounded(self):
        """Under any limits wgpu can report (u32 binding sizes, 65 535 workgroups a dimension), the
        largest index each kernel forms stays below 2^32 (the sizes check_sizes lets through)."""
        limit = 2**32 - 4  # wgpu's max_storage_buffer_binding_size is a u32
        dim = 65535
        assert dim * dim - 1 < 2**32  # tile = wid.x + wid.y * nwg.x
        # x: m * K + k < M * K <= limit / 4; out: m * N + n < M * N <= limit / 4
        assert limit // 4 < 2**32
        # weights (general/rowwise index bytes): n * row_bytes + row_bytes - 1 < chunk bytes <= limit
        assert limit - 1 < 2**32
        # decode/tiled: + 16-byte / 4-byte words of the same bytes: smaller still

    @pytest.mark.slow
    def test_weight_beyond_real_binding_limit(self, runtime, rng):
        """A 138 MB weight (N = 135 168, K = 2048) on lavapipe's 128 MiB binding limit is split along N
        and matches the reference (checked in blocks of N)."""
        n, k, gs = 135_168, 2048, 128
        weights = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
        assert weights.nbytes > runtime.caps.max_binding_size
        scales = rng.uniform(0.05, 1.0, (k // gs, n)).astype(np.float32)
        pw = q4gsw.PackedWeight(weights, scales, gs)
        x = rng.standard_normal((2, k)).astype(np.float32)
        t0 = time.perf_counter()
        y = q4gsw.linear(x, pw)
        elapsed = time.perf_counter() - t0
        chunks = runtime.weights.chunks(pw)
        assert len(chunks) >= 2
        for n0 in range(0, n, 8192):
            block = q4gsw.PackedWeight(weights[n0:n0 + 8192], np.ascontiguousarray(scales[:, n0:n0 + 8192]), gs)
            assert_matches_reference(np.ascontiguousarray(y[:, n0:n0 + 8192]), x, block)
        runtime.weights.release(pw)
        print(f"\n138 MB weight: {len(chunks)} chunks, first call {elapsed:.2f} s")


# -- leaks ------------------------------------------------------------------------------------------

def fixed_shape_run(runtime, calls):
    """(RSS growth %, live buffers before, after) over `calls` calls of one shape after a warm-up."""
    rng = np.random.default_rng(0)
    pw = q4gsw.quantize(rng.standard_normal((64, 256)).astype(np.float32), 32)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    for _ in range(100):
        q4gsw.linear(x, pw)
    gc.collect()
    r0, live0 = rss(), runtime.buffers.live
    for _ in range(calls):
        q4gsw.linear(x, pw)
    gc.collect()
    return 100 * (rss() - r0) / r0, live0, runtime.buffers.live


def changing_shape_run(runtime, calls):
    """(RSS growth %, live before, live after, cache entries before, after): new weights every call,
    through linear and linear_q4gsw, shapes and kernels changing."""
    rng = np.random.default_rng(1)

    def one(i):
        m, n, k = 1 + i % 7, 8 + (i * 13) % 57, 32 * (1 + i % 5)
        w = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
        s = rng.uniform(0.1, 1, (k // 32, n)).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        if i % 2:
            q4gsw.linear_q4gsw(x, w, s, 32)
        else:
            q4gsw.linear(x, q4gsw.PackedWeight(w, s, 32), kernel=("general", None, "tiled")[i % 3])

    for i in range(50):
        one(i)
    gc.collect()
    r0, live0, cache0 = rss(), runtime.buffers.live, len(_tensor_pairs)
    for i in range(calls):
        one(i)
    gc.collect()
    return 100 * (rss() - r0) / r0, live0, runtime.buffers.live, cache0, len(_tensor_pairs)


class TestLeaks:
    @pytest.mark.parametrize("calls", [
        pytest.param(500, id="500"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)])
    def test_fixed_shapes(self, runtime, calls):
        """Calls of one shape: RSS grows under 5 % after warm-up and live buffers return to baseline."""
        t0 = time.perf_counter()
        growth, live0, live1 = fixed_shape_run(runtime, calls)
        print(f"\nfixed shapes, {calls} calls in {time.perf_counter() - t0:.1f} s: RSS {growth:+.2f} %, "
              f"live buffers {live0} -> {live1}")
        assert growth < 5 and live1 == live0

    @pytest.mark.parametrize("calls", [
        pytest.param(100, id="100"), pytest.param(1000, id="1000", marks=pytest.mark.slow)])
    def test_changing_shapes(self, runtime, calls):
        """New weights and shapes every call: RSS grows under 5 %, live buffers and the
        linear_q4gsw cache return to baseline."""
        t0 = time.perf_counter()
        growth, live0, live1, c0, c1 = changing_shape_run(runtime, calls)
        print(f"\nchanging shapes, {calls} calls in {time.perf_counter() - t0:.1f} s: RSS {growth:+.2f} %, "
              f"live buffers {live0} -> {live1}, cache entries {c0} -> {c1}")
        assert growth < 5 and live1 == live0 and c1 == c0

    def test_freed_weight_releases_gpu_memory(self, runtime, rng):
        """A PackedWeight's GPU buffers go with it: after del + gc live buffers return to baseline,
        and 3 cycles of upload / del of a 16 MiB weight leave RSS where the first cycle left it."""
        weights = rng.integers(0, 256, (4096, 4096), dtype=np.uint8)
        scales = np.ones((64, 4096), np.float32)
        x = np.ones((1, 8192), np.float32)
        gc.collect()
        live0, r0 = runtime.buffers.live, rss()
        after = []
        for _ in range(3):
            pw = q4gsw.PackedWeight(weights, scales, 128)
            q4gsw.linear(x, pw)
            assert runtime.buffers.live == live0 + 2
            del pw
            gc.collect()
            assert runtime.buffers.live == live0
            after.append(rss())
        print(f"\n16 MiB weight x 3: RSS after each del +{[round((r - r0) / 2**20) for r in after]} MiB")
        assert after[-1] - after[0] < 8 << 20


# -- threads ----------------------------------------------------------------------------------------

class TestThreads:
    def test_eight_threads(self, runtime):
        """8 threads calling linear / linear_q4gsw concurrently on one device, on shared and own
        weights, every kernel, all get the reference result."""
        rng = np.random.default_rng(3)
        shared = random_problem(rng, 1, 64, 128, 32)
        own = [random_problem(rng, 1, 40 + i, 128, 32) for i in range(8)]
        shared_raw = (shared.weights, shared.scales)
        kernels = [None, "general", "tiled", "decode_workgroup", "decode_subgroup", "rowwise"]
        failures, errors = [], []
        barrier = threading.Barrier(8)

        def work(i):
            r = np.random.default_rng(100 + i)
            barrier.wait()
            try:
                for j in range(24):
                    case = shared if j % 2 else own[i]
                    kernel = kernels[(i + j) % len(kernels)]
                    if kernel and KERNELS[kernel].supports(Problem(3, 64, 128, 32, True), runtime.caps):
                        kernel = None
                    x = r.standard_normal((1 + j % 4, 128)).astype(np.float32)
                    if j % 3 == 0:
                        y = q4gsw.linear_q4gsw(x, *shared_raw, 32, shared.bias, kernel=kernel)
                        case = shared
                    else:
                        y = q4gsw.linear(x, case.pw, case.bias, kernel=kernel)
                    try:
                        assert_matches_reference(y, x, case.pw, case.bias)
                    except AssertionError as exc:
                        failures.append((i, j, str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append((i, repr(exc)))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        print(f"\n8 threads x 24 calls: {time.perf_counter() - t0:.1f} s, {len(failures)} wrong, {len(errors)} errors")
        assert not errors and not failures

    def test_profiler_is_per_thread(self, runtime, make_problem):
        """q4gsw.profile() in one thread records only that thread's dispatches (a ContextVar)."""
        if not runtime.caps.has_timestamps:
            pytest.skip("no timestamp-query")
        case = make_problem(1, 16, 64, 32)
        done = threading.Event()

        def other():
            for _ in range(5):
                q4gsw.linear(case.x, case.pw)
            done.set()

        with q4gsw.profile() as prof:
            t = threading.Thread(target=other)
            t.start()
            q4gsw.linear(case.x, case.pw)
            t.join()
        assert done.is_set()
        assert sum(r["calls"] for r in prof.rows()) == 1


# -- no adapter, lost device ------------------------------------------------------------------------

@pytest.fixture(scope="class")
def lost_runtime():
    """A fresh Runtime installed as the process's, its device destroyed; the old one restored after."""
    import q4gsw.runtime.device as device_module

    saved = device_module._runtime
    if saved is None:
        pytest.skip("no runtime")
    rt = Runtime()
    reset_runtime(rt)
    rng = np.random.default_rng(4)
    case = random_problem(rng, 2, 8, 64, 32)
    q4gsw.linear(case.x, case.pw, case.bias)  # works, and caches the weight on rt
    rt.device.destroy()
    try:
        yield rt, case
    finally:
        reset_runtime(saved)


class TestDeviceLost:
    def test_next_call_raises_device_error_fast(self, runtime, lost_runtime):
        """After device.destroy() the next call raises q4gsw.DeviceError at once (no hang), saying what happened."""
        rt, case = lost_runtime
        t0 = time.perf_counter()
        with pytest.raises(q4gsw.DeviceError, match="lost") as info:
            q4gsw.linear(case.x, case.pw, case.bias)
        assert time.perf_counter() - t0 < 5
        assert "new device" in str(info.value)
        assert rt.lost

    def test_the_call_after_that_gets_a_new_device(self, runtime, lost_runtime):
        """The call after the DeviceError runs on a fresh device (weights uploaded again) and is correct."""
        rt, case = lost_runtime
        assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias), case.x, case.pw, case.bias)
        assert q4gsw.get_runtime() is not rt

    def test_restored_runtime_works(self, runtime, lost_runtime, make_problem):
        """Restoring the saved runtime makes calls work again: the loss is confined to its device."""
        import q4gsw.runtime.device as device_module

        rt, _ = lost_runtime
        device_module._runtime, saved = runtime, device_module._runtime
        try:
            case = make_problem(2, 8, 64, 32)
            assert_matches_reference(q4gsw.linear(case.x, case.pw, case.bias), case.x, case.pw, case.bias)
        finally:
            device_module._runtime = saved


class TestNoAdapter:
    def test_no_adapter(self, monkeypatch):
        """No adapter: DeviceError saying which Vulkan driver to install."""
        import wgpu

        monkeypatch.setattr(wgpu.gpu, "request_adapter_sync", lambda **kw: None)
        with pytest.raises(q4gsw.DeviceError, match="apt-get install mesa-vulkan-drivers"):
            Runtime()

    def test_no_adapter_with_selector(self, monkeypatch):
        """No adapter to enumerate for Q4GSW_ADAPTER: the same DeviceError."""
        import wgpu

        monkeypatch.setattr(wgpu.gpu, "enumerate_adapters_sync", lambda: [])
        with pytest.raises(q4gsw.DeviceError, match="mesa-vulkan-drivers"):
            Runtime("gpu")

    def test_selector_matches_nothing(self):
        """A Q4GSW_ADAPTER that matches no adapter: DeviceError listing the adapters."""
        with pytest.raises(q4gsw.DeviceError, match="matches no adapter; adapters: 0: "):
            Runtime("no-such-adapter-name")

    def test_wgpu_not_importable(self, monkeypatch):
        """wgpu missing or broken: DeviceError naming the import failure."""
        import sys

        monkeypatch.setitem(sys.modules, "wgpu", None)
        with pytest.raises(q4gsw.DeviceError, match="wgpu could not be imported"):
            Runtime()


# -- llvmpipe's loop budget -------------------------------------------------------------------------

#: The largest shapes the suite runs: test_ops_linear's CASES, the loop-budget and split shapes,
#: and this module's (M, N, K, group_size).
SUITE_SHAPES = sorted({(m if m is not None else int(np.prod(b)), n, k, gs) for _, m, n, k, gs, b in CASES}
                      | {(1, 4096, 4096, 128), (1, 50, 64, 16), (3, 29, 37, 5), (2, 135_168, 2048, 128),
                         (300, 300, 64, 32), (9, 300, 64, 32), (5, 40, 128, 32)})
#: Shapes of real models (Llama 3 8B layers) at decode and prefill.
MODEL_SHAPES = [(m, n, k, 128) for m in (1, 8, 512) for n, k in ((4096, 4096), (14336, 4096), (4096, 14336),
                                                                    (128256, 4096))]


class TestLoopBudget:
    @pytest.mark.parametrize("name", list(KERNELS))
    def test_within_budget_or_refused(self, name):
        """Under llvmpipe of Mesa 22, each kernel either stays within 65 535 loop trips or is
        refused, for every shape the suite and the model shapes use; default routing never fails."""
        caps = fake_capabilities(**OLD_MESA)
        for shape in SUITE_SHAPES + MODEL_SHAPES:
            p = Problem(*shape)
            reason = KERNELS[name].supports(p, caps)
            if reason is None:
                assert KERNELS[name].loop_trips(p) <= LLVMPIPE_LOOP_BUDGET, shape
            elif KERNELS[name].supports(p, None) is None:
                assert "65535" in reason, reason
            spec = select(p, caps)
            assert spec.loop_trips(p) <= LLVMPIPE_LOOP_BUDGET

    def test_old_mesa_routing_on_device(self, runtime, fake_caps, make_problem):
        """With old-Mesa caps, the default route for the largest suite shape (M=1, N=K=4096) runs
        within budget and matches the reference."""
        case = make_problem(1, 4096, 4096, 128)
        with fake_caps(**OLD_MESA):
            spec = select(Problem(1, 4096, 4096, 128, True), runtime.caps)
            assert spec.loop_trips(Problem(1, 4096, 4096, 128, True)) <= LLVMPIPE_LOOP_BUDGET
            y = q4gsw.linear(case.x, case.pw, case.bias)
        assert_matches_reference(y, case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    @pytest.mark.parametrize("name,file,formula", [
        ("general", "general", lambda p, wg: -(-p.num_groups // wg) * p.group_size + wg.bit_length() - 1),
        ("rowwise", "rowwise", lambda p, wg: -(-p.n // 64) * p.k),
        ("tiled", "tiled", lambda p, wg: p.k),
    ])
    def test_formula_bounds_header(self, name, file, formula):
        """loop_trips is at least the trip count the kernel's .wgsl header documents, and the header
        still says it (general: ceil(G / WG) * group_size + log2(WG); rowwise: ceil(N / 64) * K;
        tiled: K / 32 steps x 32)."""
        header = load_wgsl(file).split("\n\n")[0]
        assert "Loop trips per invocation" in " ".join(header.replace("//", " ").split())
        rng = np.random.default_rng(5)
        for _ in range(300):
            k = 32 * int(rng.integers(1, 200))
            p = Problem(int(rng.integers(1, 9)), int(rng.integers(1, 5000)), k, 32 * int(rng.integers(1, 9)))
            wg = dict(KERNELS[name].constants(p)).get("WG", 64)
            if name == "general":
                p = Problem(p.m, p.n, p.k, min(p.group_size, p.k))
            assert KERNELS[name].loop_trips(p) >= formula(p, wg), p

    def test_nested_loops_at_measured_cost(self):
        """loop_trips bounds llvmpipe's measured cost of nested loops, outer * (inner + 2)."""
        for p in (Problem(512, 4096, 61_696, 128), Problem(2, 64, 2048, 32)):
            outer, inner = p.k // 32, 32
            assert KERNELS["tiled"].loop_trips(p) >= outer * (inner + 2)
            gen_outer = -(-p.num_groups // 64)
            assert KERNELS["general"].loop_trips(p) >= gen_outer * (min(p.group_size, p.k) + 2) + 6
            assert KERNELS["rowwise"].loop_trips(p) >= -(-p.n // 64) * (p.k + 2)

    def test_loop_structure_unchanged(self):
        """The .wgsl files still have the loops the loop_trips formulas were written for: a change
        in loop structure must come with a check of the formula."""
        expected = {
            "general": 3,          # groups, k within a group (nested), reduction
            "rowwise": 2,          # n, k (nested)
            "tiled": 2,            # k0 steps, kk2 within a step (nested)
            "decode": 1,           # row steps
            "reduce_workgroup": 3,  # clear, reduce, row_total
            "reduce_subgroup": 2,  # clear, row_total
        }
        for file, count in expected.items():
            code = re.sub(r"//[^\n]*", "", load_wgsl(file))
            assert len(re.findall(r"\bfor\s*\(", code)) == count, file
            assert not re.search(r"\b(loop|while)\b", code), file
