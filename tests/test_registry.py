"""Pure tests of the kernel registry (no GPU): select, supports, tiles, loop_trips; and fold_grid."""

from __future__ import annotations

import math
import pytest
from hypothesis import given
from hypothesis import strategies as st

from q4gsw import UnsupportedShapeError
from q4gsw import kernels as registry
from q4gsw.kernels import KERNELS, LLVMPIPE_LOOP_BUDGET, Problem, select
from q4gsw.runtime.dispatch import fold_grid

from .strategies import shapes
from .utils import fake_capabilities

#: Caps of an adapter that cuts loops (llvmpipe of Mesa < 25) and of one that does not.
LIMITED = fake_capabilities(driver="Mesa 22.3.6 (LLVM 15.0.6)")
UNLIMITED = fake_capabilities(driver="Mesa 25.0.7 (LLVM 15.0.6)")
#: An adapter offering no optional feature (no subgroups, f16 or timestamps).
BARE = fake_capabilities(features=frozenset())
assert LIMITED.has_loop_limit and not UNLIMITED.has_loop_limit

#: A decode-sized shape whose rowwise loop runs ceil(4096 / 64) * 4097 = 262 208 > 65 535 trips.
BIG = Problem(m=1, n=4096, k=4096, group_size=128)


def problems(draw_shapes=shapes(max_m=300, max_n=5000, max_k=20000)):
    """Problems of assorted sizes (pure: nothing is allocated)."""
    return st.builds(lambda s, b: Problem(*s, has_bias=b), draw_shapes, st.booleans())


def simulate_general_trips(p: Problem, wg: int) -> int:
    """Loop-body runs of the busiest invocation of general.wgsl: group loop, element loop, reduction."""
    worst = 0
    for lid in range(wg):
        runs = 0
        for g in range(lid, p.num_groups, wg):
            k_begin = g * p.group_size
            runs += 1 + min(k_begin + p.group_size, p.k) - k_begin
        runs += int(math.log2(wg))
        worst = max(worst, runs)
    return worst


def simulate_rowwise_trips(p: Problem, wg: int = 64) -> int:
    """Loop-body runs of the busiest invocation of rowwise.wgsl (invocation 0): N loop, K loop."""
    return len(range(0, p.n, wg)) * (1 + p.k)


class TestProblem:
    def test_derived_sizes(self):
        """row_bytes is ceil(K/2) and num_groups is ceil(K/group_size)."""
        p = Problem(3, 5, 33, 8)
        assert (p.row_bytes, p.num_groups) == (17, 5)
        assert (Problem(1, 1, 1, 256).row_bytes, Problem(1, 1, 1, 256).num_groups) == (1, 1)


class TestSelect:
    @given(problems())
    def test_default_is_supported_non_baseline(self, p):
        """Without a name, select returns a non-baseline kernel that supports the problem."""
        for caps in (None, UNLIMITED, BARE):
            spec = select(p, caps)
            assert not spec.baseline
            assert spec.supports(p, caps) is None

    def test_default_is_least_predicted_time(self):
        """The default is the supported non-baseline kernel with the least predicted time (ties:
        KERNELS order); with none predicted, the first supported fallback (general)."""
        for p in (BIG, Problem(130, 17, 33, 5), Problem(2, 64, 256, 32), Problem(1, 4096, 4096, 128),
                  Problem(8, 14336, 4096, 128), Problem(512, 4096, 4096, 128)):
            specs = [s.bind(LIMITED) for s in KERNELS.values() if not s.baseline]
            timed = [s for s in specs if s.supports(p, LIMITED) is None and s.predicted_seconds(p) is not None]
            chosen = select(p, LIMITED)
            if timed:
                best = min(timed, key=lambda s: s.predicted_seconds(p))
                assert chosen.name == best.name and chosen.predicted_seconds(p) == best.predicted_seconds(p)
            else:
                assert chosen.name == "general"

    def test_default_routes(self):
        """Where the benchmarks put each kernel (H100: bench/results/2026-11-25-h100-s2b-llama.md,
        -s3-small-m.md; H200, M = 2 and 4: -s6-decode-x2-probe.md)."""
        route = {m: select(Problem(m, 14336, 4096, 128), UNLIMITED).name for m in (1, 2, 4, 8, 512)}
        assert route == {1: "decode_subgroup", 2: "decode_x2_subgroup", 4: "decode_x2_subgroup", 8: "decode_batch",
                         512: "tiled"}
        assert select(Problem(32, 4096, 4096, 128), UNLIMITED).name == "decode_batch"
        assert select(Problem(128, 4096, 4096, 128), UNLIMITED).name == "tiled_split"

    def test_general_runs_everything_without_loop_limit(self):
        """The 'general' kernel supports every shape when the adapter has no loop limit."""
        for p in (BIG, Problem(1, 1, 1, 1), Problem(7, 3, 70001, 70001), Problem(130, 17, 33, 5)):
            assert KERNELS["general"].supports(p, UNLIMITED) is None
            assert KERNELS["general"].supports(p, None) is None

    @pytest.mark.parametrize("name", list(KERNELS))
    def test_named(self, name):
        """A named kernel that supports the problem is returned (configured for the device), baseline or not."""
        p = Problem(2, 64, 256, 32)
        if KERNELS[name].supports(p, UNLIMITED):
            pytest.skip(KERNELS[name].supports(p, UNLIMITED))
        spec = select(p, UNLIMITED, name)
        assert spec.name == name and type(spec) is type(KERNELS[name])
        assert spec.key(p) == KERNELS[name].bind(UNLIMITED).key(p)

    def test_unknown_name(self):
        """An unknown name raises UnsupportedShapeError listing the known kernels."""
        with pytest.raises(UnsupportedShapeError, match="'nope'.*general"):
            select(BIG, UNLIMITED, "nope")

    def test_loop_limit_refuses_rowwise(self):
        """With a loop-limited adapter, rowwise past the budget is refused with the reason; general is accepted."""
        assert KERNELS["rowwise"].loop_trips(BIG) > LLVMPIPE_LOOP_BUDGET
        with pytest.raises(UnsupportedShapeError, match="rowwise.*65535.*Mesa 22"):
            select(BIG, LIMITED, "rowwise")
        assert select(BIG, LIMITED, "general") is KERNELS["general"]
        assert select(BIG, UNLIMITED, "rowwise") is KERNELS["rowwise"]

    def test_loop_limit_default_stays_in_budget(self):
        """On a loop-limited adapter the default kernel never exceeds the loop budget."""
        for p in (BIG, Problem(1, 65536, 4096, 32), Problem(64, 11008, 4096, 128), Problem(3, 5, 4097, 7)):
            spec = select(p, LIMITED)
            assert spec.loop_trips(p) <= LLVMPIPE_LOOP_BUDGET

    def test_no_kernel_fits(self):
        """When no kernel supports the problem, UnsupportedShapeError gives each kernel's reason."""
        p = Problem(1, 4, 70001, 70001)  # one group of 70 001: general loops past the budget
        assert KERNELS["general"].loop_trips(p) > LLVMPIPE_LOOP_BUDGET
        with pytest.raises(UnsupportedShapeError, match="no kernel runs.*general"):
            select(p, LIMITED)


class TestSupports:
    @pytest.mark.parametrize("name", list(KERNELS))
    def test_reason_is_text(self, name):
        """supports returns None or a non-empty reason string, never raises, for any problem."""
        for p in (BIG, Problem(1, 1, 1, 1), Problem(130, 17, 33, 5), Problem(9, 5, 64, 32)):
            for caps in (None, UNLIMITED, LIMITED, BARE):
                reason = KERNELS[name].supports(p, caps)
                assert reason is None or (isinstance(reason, str) and reason)

    def test_loop_reason_names_driver(self):
        """A loop-budget refusal names the kernel, its trip count, the budget and the driver."""
        reason = KERNELS["rowwise"].supports(BIG, LIMITED)
        assert "rowwise" in reason and str(KERNELS["rowwise"].loop_trips(BIG)) in reason
        assert str(LLVMPIPE_LOOP_BUDGET) in reason and LIMITED.driver in reason

    @pytest.mark.parametrize("name", list(KERNELS))
    def test_no_caps_means_no_loop_limit(self, name):
        """With caps=None (pure planning) a kernel refuses only for shape reasons, never for the loop budget."""
        spec = KERNELS[name]
        assert spec.supports(BIG, None) == spec.supports(BIG, UNLIMITED)


class TestTiles:
    @given(problems())
    def test_cover_problem(self, p):
        """Every kernel's tile counts are positive and at most one workgroup per (row, feature)
        and split of K."""
        for spec in KERNELS.values():
            n_tiles, m_tiles = spec.tiles(p)
            assert 1 <= n_tiles <= p.n and 1 <= m_tiles <= p.m * spec.split(p)

    def test_general(self):
        """general: one tile per output feature and per 4 rows of x."""
        assert KERNELS["general"].tiles(Problem(130, 17, 33, 5)) == (17, 33)
        assert KERNELS["general"].tiles(Problem(4, 1, 33, 5)) == (1, 1)

    def test_rowwise(self):
        """rowwise: one workgroup per row of x, covering all of N."""
        assert KERNELS["rowwise"].tiles(Problem(130, 4096, 33, 5)) == (1, 130)


class TestLoopTrips:
    @given(shapes(max_m=3, max_n=700, max_k=3000))
    def test_general_bounds_shader(self, shape):
        """general's loop_trips bounds the loop iterations of general.wgsl's busiest invocation."""
        p = Problem(*shape)
        spec = KERNELS["general"]
        wg = dict(spec.key(p).constants).get("WG", 64)
        assert simulate_general_trips(p, wg) <= spec.loop_trips(p)

    @given(shapes(max_m=3, max_n=700, max_k=3000))
    def test_rowwise_bounds_shader(self, shape):
        """rowwise's loop_trips is ceil(N / 64) * (K + 2): rowwise.wgsl's nested loops at llvmpipe's measured cost."""
        p = Problem(*shape)
        trips = KERNELS["rowwise"].loop_trips(p)
        assert trips == -(-p.n // 64) * (p.k + 2)
        assert simulate_rowwise_trips(p) <= trips

    def test_general_budget_at_decode_shape(self):
        """At M=1, N=K=4096, gs=128, general stays far inside the budget rowwise breaks."""
        assert KERNELS["general"].loop_trips(BIG) <= LLVMPIPE_LOOP_BUDGET
        assert KERNELS["rowwise"].loop_trips(BIG) == 64 * 4098

    @pytest.mark.parametrize("name", list(KERNELS))
    def test_positive(self, name):
        """Every kernel reports a positive trip count for any problem it supports."""
        for p in (BIG, Problem(1, 1, 1, 1), Problem(130, 17, 33, 5), Problem(2, 64, 256, 32)):
            if KERNELS[name].supports(p, None) is None:
                assert KERNELS[name].loop_trips(p) > 0


class TestKey:
    @pytest.mark.parametrize("name", list(KERNELS))
    def test_label_and_bias(self, name):
        """A kernel's key is labelled linear_q4gsw/<name> and records HAS_BIAS, so bias changes the pipeline."""
        p, pb = Problem(2, 64, 256, 32), Problem(2, 64, 256, 32, has_bias=True)
        key, key_b = KERNELS[name].key(p), KERNELS[name].key(pb)
        assert key.label == f"linear_q4gsw/{name}"
        assert str(key).startswith(f"linear_q4gsw/{name}[") and "HAS_BIAS=0" in str(key)
        assert "HAS_BIAS=1" in str(key_b)
        assert key != key_b and hash(key) == hash(KERNELS[name].key(Problem(2, 64, 256, 32)))


class TestFoldGrid:
    @given(st.integers(0, 10**9), st.integers(1, 65535))
    def test_covers_within_limits(self, workgroups, limit):
        """x * y covers every workgroup with each dimension within the limit and less than a row wasted."""
        if workgroups > limit * limit:
            with pytest.raises(ValueError):
                fold_grid(workgroups, limit)
            return
        x, y, z = fold_grid(workgroups, limit)
        assert z == 1 and 1 <= x <= limit and 1 <= y <= limit
        assert x * y >= workgroups
        assert x * y - workgroups < max(y, 1) or workgroups == 0

    def test_small_is_one_dimensional(self):
        """Up to the limit the grid is (workgroups, 1, 1)."""
        assert fold_grid(65535, 65535) == (65535, 1, 1)
        assert fold_grid(1, 65535) == (1, 1, 1)

    def test_large_folds_into_two_dimensions(self):
        """Past the limit the grid folds into 2-D."""
        x, y, z = fold_grid(65536, 65535)
        assert (y, z) == (2, 1) and x == 32768
        x, y, _ = fold_grid(4096 * 4096, 65535)
        assert x <= 65535 and y <= 65535 and x * y >= 4096 * 4096

    def test_beyond_square(self):
        """More workgroups than limit**2 raise ValueError."""
        with pytest.raises(ValueError):
            fold_grid(65535**2 + 1, 65535)


class TestKernels:
    def test_table(self):
        """The registry's table holds at least the baseline and general kernels, keyed by their names."""
        assert {"rowwise", "general"} <= set(registry.KERNELS)
        assert all(spec.name == name for name, spec in registry.KERNELS.items())
        assert registry.KERNELS["rowwise"].baseline and not registry.KERNELS["general"].baseline
