"""Kernel specs and the pure choice among them: select(problem, caps) makes no GPU calls."""

from __future__ import annotations

import dataclasses

from ..errors import UnsupportedShapeError
from ..runtime.pipelines import KernelKey

#: llvmpipe before Mesa 25 silently cuts loops past this many iterations per invocation.
LLVMPIPE_LOOP_BUDGET = 65_535


@dataclasses.dataclass(frozen=True)
class Problem:
    """One linear_q4gsw call: x (M, K) against a (N, K) weight."""

    m: int
    n: int
    k: int
    group_size: int
    has_bias: bool = False

    @property
    def row_bytes(self) -> int:
        return (self.k + 1) // 2

    @property
    def num_groups(self) -> int:
        return -(-self.k // self.group_size)


class KernelSpec:
    """A kernel and its decisions for a problem; the op computes the grid from them.

    Subclasses set `name` and implement tiles(), loop_trips(), constants() and, when the
    kernel has preconditions, _shape_reason().
    """

    name: str = ""
    baseline: bool = False  # kept only for benchmarks; never chosen by default
    web: bool = True  # exported to q4gsw.js (see q4gsw.web)

    def tiles(self, p: Problem) -> tuple[int, int]:
        """(tiles along N, tiles along M): workgroups = their product."""
        raise NotImplementedError

    def loop_trips(self, p: Problem) -> int:
        """What one invocation's loops cost against llvmpipe's budget: nested loops count
        outer x (inner + 2), as measured on Mesa 22 (ENVIRONMENT.md)."""
        raise NotImplementedError

    def constants(self, p: Problem) -> tuple:
        """Override constants beyond HAS_BIAS, as (name, value) pairs."""
        return ()

    def key(self, p: Problem) -> KernelKey:
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)))

    def _shape_reason(self, p: Problem) -> str | None:
        return None

    def predicted_seconds(self, p: Problem) -> float | None:
        """The cost model's time for p (constants fitted to the H100 runs in bench/results/);
        None for kernels the default routing never prefers (fallbacks and baselines)."""
        return None

    def split(self, p: Problem) -> int:
        """Workgroups per output tile along K; > 1 adds a reduce_splits dispatch."""
        return 1

    def reduce_key(self, p: Problem) -> KernelKey:
        """The second dispatch of a split run (split(p) > 1): reduce_splits.wgsl."""
        return KernelKey("reduce_splits", (("HAS_BIAS", p.has_bias), ("SPLIT", self.split(p)),
                                           ("WG", REDUCE_WG)))

    def partial_bytes(self, p: Problem) -> int:
        """The partial-sum buffer a split run needs (0 without a split)."""
        s = self.split(p)
        return 4 * s * p.m * p.n if s > 1 else 0

    def bind(self, caps) -> "KernelSpec":
        """This kernel configured for a device (caps None: the conservative default)."""
        return self

    def variants(self, p: Problem) -> list["KernelSpec"]:
        """The configurations `q4gsw tune` tries for p (each a KernelSpec); default: itself."""
        return [self]

    def settings(self) -> dict:
        """The tunable settings of this configuration, as stored in the tuning cache."""
        return {}

    def with_settings(self, settings: dict) -> "KernelSpec":
        """This kernel with tuned settings applied (unknown keys are ignored)."""
        return self

    def supports(self, p: Problem, caps) -> str | None:
        """None when the kernel can run p on caps, else the reason it cannot."""
        reason = self._shape_reason(p)
        if reason:
            return reason
        if caps is not None and caps.has_loop_limit and self.loop_trips(p) > LLVMPIPE_LOOP_BUDGET:
            return (f"{self.name} would loop {self.loop_trips(p)} times per invocation, past the "
                    f"{LLVMPIPE_LOOP_BUDGET} that {caps.driver} runs correctly")
        if caps is not None and self.partial_bytes(p) > caps.max_binding_size:
            return (f"{self.split(p)} partial sums of M x N need {self.partial_bytes(p)} bytes, "
                    f"past the binding limit {caps.max_binding_size}")
        if self.split(p) > 1 and self.split(p) * p.m * p.n >= 1 << 32:
            return "the partial sums need more than 2^32 elements"
        return None

    def __repr__(self) -> str:
        return f"<KernelSpec {self.name}>"


# Default routing: the supported kernel with the least predicted time, from a cost model
# with constants fitted to the H100 runs in bench/results/ (2026-11-25). Decode time grows
# with M * N * K; tiled time with the number of waves of tiles (one resident per SM,
# 132 SMs) times the k each tile covers; split-K adds a pass over the partial sums.
# Every kernel also pays SECONDS_FIXED (a pass's launch and a short grid's ramp: fitted on the
# decode runs, M=1 4096^2 and the LM head alike), so it never decides between kernels.
SECONDS_FIXED = 1.0e-5
DECODE_SECONDS_PER_MAC = 2.5e-13
TILED_SECONDS_PER_K_PER_WAVE = 1.53e-7  # 128-row tiles (4.9 µs a step of 32 k)
TILED64_SECONDS_PER_K_PER_WAVE = 1.35e-7  # 64-row tiles: half the FMAs, the same latency-bound steps
TILED_TILES_PER_WAVE = 132  # one resident workgroup per SM (measured: 2 x 132 workgroups take 2 waves)
SPLIT_SECONDS_PER_PARTIAL = 5.0e-12  # the reduction: write + read of one partial float
SPLIT_SECONDS_FIXED = 3.0e-6  # the second dispatch
REDUCE_WG = 256
# decode_batch: per block of 2, 4 or 8 rows of x, per weight element, plus a fixed part (s3 runs)
BATCH_SECONDS_PER_BLOCK_MAC = {2: 0.45e-12, 4: 0.7e-12, 8: 1.0e-12}
# The nibble unpacks of unpack.wgsl (see long_grid and the kernels' unpack_imad)
UNPACKS = ("shift", "imad")
# decode: a grid of at least this many blocks of 16 rows (the LM head: 8016) is throughput-
# bound; it runs 32 rows a workgroup and the multiply-add unpack (H100, 2026-11-25 s3 runs)
LONG_GRID_ROW_BLOCKS = 2048


def long_grid(p: Problem) -> bool:
    """At least LONG_GRID_ROW_BLOCKS blocks of 16 rows: many waves of workgroups, so a decode
    kernel is throughput-bound (the LM head). Measured there (H100, s3 runs): the multiply-add
    unpack 12-14 % and 32 rows a workgroup 3-4 % faster; on the mid shapes both were slower."""
    return -(-p.n // 16) >= LONG_GRID_ROW_BLOCKS


def decode_settings(settings: dict, rows: int | None, unpack: str) -> tuple[int | None, str] | None:
    """(rows_per_workgroup, unpack) of the decode kernels with tuned `settings` applied over
    the current values, or None when a setting is out of range (rows a multiple of 4 in
    4..64, or None for the default; unpack one of UNPACKS or "auto")."""
    rows = settings.get("rows_per_workgroup", rows)
    unpack = settings.get("unpack", unpack)
    if rows is not None and (int(rows) % 4 or not 4 <= int(rows) <= 64):
        return None
    if unpack not in (*UNPACKS, "auto"):
        return None
    return None if rows is None else int(rows), unpack


def decode_seconds(p: Problem) -> float:
    return SECONDS_FIXED + DECODE_SECONDS_PER_MAC * p.m * p.n * p.k


def tiled_seconds(p: Problem, rows: int = 128, split: int = 1) -> float:
    tiles = -(-p.m // rows) * -(-p.n // 128) * split
    per_k = TILED_SECONDS_PER_K_PER_WAVE if rows == 128 else TILED64_SECONDS_PER_K_PER_WAVE
    steps = -(-(p.k // 32) // split)
    seconds = SECONDS_FIXED + per_k * 32 * steps * -(-tiles // TILED_TILES_PER_WAVE)
    if split > 1:
        seconds += SPLIT_SECONDS_FIXED + SPLIT_SECONDS_PER_PARTIAL * split * p.m * p.n
    return seconds


def decode_beats_tiled(p: Problem) -> bool:
    """Whether the decode kernel is predicted faster than the (unsplit) tiled one for p:
    the choice q4gsw.js makes between the kernels a browser bundle holds."""
    return decode_seconds(p) <= tiled_seconds(p)


class Rowwise(KernelSpec):
    """ExecuTorch's original design: a workgroup per row of x, 64 invocations striding N."""

    name = "rowwise"
    baseline = True
    wg = 64

    def tiles(self, p):
        return 1, p.m

    def loop_trips(self, p):
        return -(-p.n // self.wg) * (p.k + 2)


class General(KernelSpec):
    """Any shape: a workgroup per (output feature, 4 rows of x); invocations walk groups."""

    name = "general"
    wg = 64
    rows_per_tile = 4

    def tiles(self, p):
        return p.n, -(-p.m // self.rows_per_tile)

    def loop_trips(self, p):
        return -(-p.num_groups // self.wg) * (min(p.group_size, p.k) + 2) + self.wg.bit_length()

    def constants(self, p):
        return (("WG", self.wg),)


class Decode(KernelSpec):
    """Small M at read bandwidth: x in registers, 16-byte weight loads, cheap unpack.

    Two variants differ only in how a row's partial sums are added across invocations:
    decode_subgroup (subgroupAdd; needs the `subgroup` feature) and decode_workgroup
    (workgroup memory; any adapter).
    """

    max_m = 1024  # capability; routing prefers it only while the cost model says so
    rows_per_step = 4
    file = "decode"

    def __init__(self, reduction: str, partial_capacity: int, rows_per_workgroup: int | None = None,
                 unpack: str = "auto"):
        self.reduction = reduction
        self.name = f"{self.file}_{reduction}"
        self.partial_capacity = partial_capacity  # RPW * WG bound from workgroup memory
        self.rows_per_workgroup = rows_per_workgroup  # None: 32 on a long grid with subgroups, else 16
        self.unpack = unpack  # "shift" | "imad" | "auto": imad on a long grid

    def variants(self, p):
        return [self.with_settings({"rows_per_workgroup": r, "unpack": u}) for u in UNPACKS for r in (8, 16, 32)
                if r * self.workgroup_size(p) <= self.partial_capacity or r == 8]

    def settings(self):
        return {"rows_per_workgroup": self.rows_per_workgroup, "unpack": self.unpack}

    def with_settings(self, settings):
        tuned = decode_settings(settings, self.rows_per_workgroup, self.unpack)
        return self if tuned is None else Decode(self.reduction, self.partial_capacity, *tuned)

    def unpack_imad(self, p: Problem) -> bool:
        """UNPACK_IMAD (unpack.wgsl)."""
        if self.unpack == "auto":
            return long_grid(p)
        return self.unpack == "imad"

    def workgroup_size(self, p: Problem) -> int:
        return max(32, -(-p.k // 1024) * 32)

    def rpw(self, p: Problem) -> int:
        cap = self.partial_capacity // self.workgroup_size(p)
        # 32 rows on a long grid only with the subgroup reduction: the workgroup one's partial
        # sums (16 KiB at 32 rows) cut residency (LM head 140 -> 196 µs on the H100)
        rows = self.rows_per_workgroup or (32 if long_grid(p) and self.reduction == "subgroup" else 16)
        return max(self.rows_per_step, min(rows, cap) // self.rows_per_step * self.rows_per_step)

    def tiles(self, p):
        return -(-p.n // self.rpw(p)), p.m

    def loop_trips(self, p):
        wg, rpw = self.workgroup_size(p), self.rpw(p)
        return rpw // self.rows_per_step + 2 * rpw + wg

    def constants(self, p):
        return (("ROWS", self.rpw(p)), ("WG", self.workgroup_size(p)), ("UNPACK_IMAD", self.unpack_imad(p)))

    def key(self, p):
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)),
                         files=(self.file, "unpack", f"reduce_{self.reduction}"))

    def predicted_seconds(self, p):
        return decode_seconds(p)

    def _shape_reason(self, p):
        if p.m > self.max_m:
            return f"M={p.m} > {self.max_m}"
        if p.k % 32:
            return f"K={p.k} is not a multiple of 32"
        if p.group_size % 32:
            return f"group_size={p.group_size} is not a multiple of 32"
        if p.k > 32 * 1024:
            return f"K={p.k} > 32768 (one vec4 of k per invocation, 1024 invocations)"
        return None

    def workgroup_bytes(self, p: Problem) -> int:
        """Workgroup memory the kernel declares (partial sums)."""
        wg, rows = self.workgroup_size(p), self.rpw(p)
        partials = rows * wg // 4 if self.reduction == "subgroup" else rows * wg + wg
        return 4 * partials

    def supports(self, p, caps):
        if self.reduction == "subgroup" and caps is not None and not caps.has_subgroups:
            return "the device has no `subgroup` feature"
        reason = super().supports(p, caps)
        if reason is None and caps is not None and self._shape_reason(p) is None:
            limit = int(caps.limits.get("max-compute-workgroup-storage-size", 16384))
            if self.workgroup_bytes(p) > limit:
                return f"needs {self.workgroup_bytes(p)} bytes of workgroup memory, the device has {limit}"
        return reason


class DecodeBatch(KernelSpec):
    """Batched decode (2 <= M <= ~32): a workgroup takes ROWS weight rows and a block of 4 or 8
    rows of x, 8 k per invocation, so each weight word is unpacked once for the whole block;
    the block's sums are added across the subgroup by a transpose-reduction (see
    decode_batch.wgsl). A workgroup covers up to 4096 k (8 rows of x) or 8192 k (4 rows);
    K beyond that is split over workgroups and reduced by reduce_splits. Needs the `subgroup`
    feature. Not in browser bundles.
    """

    name = "decode_batch"
    web = False
    max_k = 32768  # 4096 or 8192 k a workgroup; past that, K is split over workgroups (reduce_splits)

    def __init__(self, rows_per_workgroup: int | None = None, min_lanes: int = 4, storage_limit: int = 16384,
                 unpack: str = "auto"):
        self.rows_per_workgroup = rows_per_workgroup  # None: 32 with blocks of 8 rows of x or a long grid, else 16
        self.min_lanes = min_lanes
        self.storage_limit = storage_limit
        self.unpack = unpack  # "shift" | "imad" | "auto": imad with blocks of 4 or 8 or a long grid

    def bind(self, caps):
        if caps is None:
            return self
        return DecodeBatch(self.rows_per_workgroup, max(1, int(caps.subgroup_min_size)),
                           int(caps.limits.get("max-compute-workgroup-storage-size", 16384)), self.unpack)

    def variants(self, p):
        return [DecodeBatch(r, self.min_lanes, self.storage_limit, u) for u in UNPACKS for r in (8, 16, 32)]

    def settings(self):
        return {"rows_per_workgroup": self.rows_per_workgroup, "unpack": self.unpack}

    def with_settings(self, settings):
        tuned = decode_settings(settings, self.rows_per_workgroup, self.unpack)
        if tuned is None:
            return self
        return DecodeBatch(tuned[0], self.min_lanes, self.storage_limit, tuned[1])

    def unpack_imad(self, p: Problem) -> bool:
        """UNPACK_IMAD (unpack.wgsl). Measured (H100, s3): with blocks of 4 or 8 rows of x the
        multiply-add unpack was faster on most shapes (up to 9 %), with blocks of 2 slower except
        on the LM head (long_grid)."""
        if self.unpack == "auto":
            return self.block(p) >= 4 or long_grid(p)
        return self.unpack == "imad"

    def block(self, p: Problem) -> int:
        """Rows of x per workgroup."""
        return 2 if p.m <= 2 else 4 if p.m <= 4 else 8

    def split(self, p):
        # at most 512 invocations with 8 rows of x (16 vec4 of x each: more would cap registers
        # below what the kernel needs; 896 ran 2.5x slower on the H100), 1024 with 4
        words_per_workgroup = 512 if self.block(p) == 8 else 1024
        return max(1, -(-(p.k // 8) // words_per_workgroup))

    def workgroup_size(self, p: Problem) -> int:
        words = -(-(p.k // 8) // self.split(p))  # per workgroup
        return max(32, -(-words // 32) * 32)

    def workgroup_bytes(self, p: Problem, rows: int) -> int:
        return 4 * rows * self.block(p) * (self.workgroup_size(p) // self.min_lanes)

    def rpw(self, p: Problem) -> int:
        """rows_per_workgroup, halved until the subgroup slots fit workgroup memory (>= 4)."""
        rows = self.rows_per_workgroup or (32 if self.block(p) == 8 or long_grid(p) else 16)
        while rows > 4 and self.workgroup_bytes(p, rows) > self.storage_limit:
            rows //= 2
        return rows

    def predicted_seconds(self, p):
        seconds = SECONDS_FIXED + BATCH_SECONDS_PER_BLOCK_MAC[self.block(p)] * -(-p.m // self.block(p)) * p.n * p.k
        if self.split(p) > 1:
            seconds += SPLIT_SECONDS_FIXED + SPLIT_SECONDS_PER_PARTIAL * self.split(p) * p.m * p.n
        return seconds

    def tiles(self, p):
        return -(-p.n // self.rpw(p)), -(-p.m // self.block(p)) * self.split(p)

    def loop_trips(self, p):
        return self.rpw(p) // 4 * 4 + -(-self.rpw(p) * self.block(p) // self.workgroup_size(p)) * (
            self.workgroup_size(p) // self.min_lanes + 2)

    def constants(self, p):
        return (("WG", self.workgroup_size(p)), ("ROWS", self.rpw(p)), ("MB", self.block(p)),
                ("MIN_LANES", self.min_lanes), ("SPLIT", self.split(p)), ("UNPACK_IMAD", self.unpack_imad(p)))

    def key(self, p):
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)), files=(self.name, "unpack"))

    def _shape_reason(self, p):
        if p.k % 8:
            return f"K={p.k} is not a multiple of 8"
        if p.k > self.max_k:
            return f"K={p.k} > {self.max_k} (at most 8 workgroups of 512 invocations, 8 k each, cover K)"
        if p.group_size % 8:
            return f"group_size={p.group_size} is not a multiple of 8"
        return None

    def supports(self, p, caps):
        if caps is not None and not caps.has_subgroups:
            return "the device has no `subgroup` feature"
        reason = super().supports(p, caps)
        if reason is None and self.workgroup_bytes(p, self.rpw(p)) > self.storage_limit:
            return (f"needs {self.workgroup_bytes(p, self.rpw(p))} bytes of workgroup memory "
                    f"(subgroups of {self.min_lanes}), the device has {self.storage_limit}")
        return reason

    def __repr__(self):
        return f"<KernelSpec {self.name} rows={self.rows_per_workgroup} min_lanes={self.min_lanes}>"


class Tiled(KernelSpec):
    """Prefill: 128 x 128 output tiles, the weight tile dequantized once into workgroup
    memory per 32 k and reused by 128 rows of x; 8 x 8 register tile per invocation."""

    name = "tiled"
    tile = 128

    def predicted_seconds(self, p):
        return tiled_seconds(p)

    def tiles(self, p):
        return -(-p.n // self.tile), -(-p.m // self.tile)

    def loop_trips(self, p):
        return (p.k // 32) * (32 + 2)

    def _shape_reason(self, p):
        if p.k % 32:
            return f"K={p.k} is not a multiple of 32"
        if p.group_size % 32:
            return f"group_size={p.group_size} is not a multiple of 32"
        return None


class TiledSplit(Tiled):
    """The tiled kernel for grids too small to fill the GPU (16 <= M <= ~512): tiles of 64
    or 128 rows of x, and K split over `split` workgroups per tile whose partial tiles a
    second dispatch (reduce_splits.wgsl) adds in the same compute pass.

    Settings: rows (64 or 128; default 64 up to M = 64) and split (default: the largest
    power of two that keeps the grid within one wave of 132 workgroups, with at least 4
    steps of 32 k each: more waves only queue). Not in browser bundles (its kernel key
    depends on M).
    """

    name = "tiled_split"
    web = False
    max_split = 16

    def __init__(self, rows: int | None = None, split: int | None = None):
        self.rows, self.fixed_split = rows, split

    def settings(self):
        return {k: v for k, v in (("rows", self.rows), ("split", self.fixed_split)) if v is not None}

    def with_settings(self, settings):
        rows = settings.get("rows", self.rows)
        split = settings.get("split", self.fixed_split)
        if rows not in (None, 64, 128) or (split is not None and not 1 <= int(split) <= self.max_split):
            return self
        return TiledSplit(rows, None if split is None else int(split))

    def variants(self, p):
        return [TiledSplit(r, s) for r in (64, 128) for s in (1, 2, 4, 8, 16)
                if s <= max(1, p.k // 32 // 4) and (r, s) != (128, 1)]

    def tile_rows(self, p: Problem) -> int:
        return self.rows or (64 if p.m <= 64 else 128)

    def split(self, p):
        if self.fixed_split is not None:
            return min(self.fixed_split, max(1, p.k // 32))
        tiles = -(-p.m // self.tile_rows(p)) * -(-p.n // self.tile)
        split = 1
        while (split * 2 <= self.max_split and tiles * split * 2 <= TILED_TILES_PER_WAVE
               and p.k // 32 // (split * 2) >= 4):
            split *= 2
        return split

    def predicted_seconds(self, p):
        return tiled_seconds(p, self.tile_rows(p), self.split(p))

    def tiles(self, p):
        return -(-p.n // self.tile), -(-p.m // self.tile_rows(p)) * self.split(p)

    def loop_trips(self, p):
        return -(-(p.k // 32) // self.split(p)) * (32 + 2)

    def constants(self, p):
        return (("BM", self.tile_rows(p)), ("SPLIT", self.split(p)))

    def key(self, p):
        # tiled.wgsl with other constants (with a split, the reduction adds the bias)
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)), files=("tiled",))

    def __repr__(self):
        return f"<KernelSpec {self.name} {self.settings()}>"


KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (Decode("subgroup", 32768), Decode("workgroup", 4096), DecodeBatch(), Tiled(), TiledSplit(),
                 General(), Rowwise())
}


def tuning_bucket(p: Problem) -> str:
    """The tuning cache's key for p: M rounded up to a power of two, exact K, N, group size."""
    m = 1 << max(0, (p.m - 1).bit_length())
    return f"m{m}_k{p.k}_n{p.n}_g{p.group_size}"


def select(p: Problem, caps, kernel: "str | KernelSpec | None" = None, tuned: dict | None = None) -> KernelSpec:
    """The kernel to run p: the one named (or given as a KernelSpec, e.g. with settings),
    else the tuned choice for p's bucket (see q4gsw.tune; `tuned` maps bucket ->
    {"kernel", "settings"}) when it supports p, else the supported kernel with the least
    predicted_seconds (ties: KERNELS order), else the first supported fallback."""
    if kernel is None and tuned:
        entry = tuned.get(tuning_bucket(p))
        spec = KERNELS.get(entry["kernel"]) if entry else None
        if spec is not None:
            spec = spec.bind(caps).with_settings(entry.get("settings", {}))
            if spec.supports(p, caps) is None:
                return spec
    if kernel is not None:
        spec = kernel if isinstance(kernel, KernelSpec) else KERNELS.get(kernel)
        if spec is None:
            raise UnsupportedShapeError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
        if not isinstance(kernel, KernelSpec):
            spec = spec.bind(caps)
        reason = spec.supports(p, caps)
        if reason:
            raise UnsupportedShapeError(f"kernel {spec.name!r} cannot run M={p.m} N={p.n} K={p.k} "
                                        f"group_size={p.group_size}: {reason}")
        return spec
    reasons, best, fallback = [], None, None
    for spec in KERNELS.values():
        if spec.baseline:
            continue
        spec = spec.bind(caps)
        reason = spec.supports(p, caps)
        if reason is not None:
            reasons.append(f"{spec.name}: {reason}")
            continue
        seconds = spec.predicted_seconds(p)
        if seconds is None:
            fallback = fallback or spec
        elif best is None or seconds < best[0]:
            best = (seconds, spec)
    if best is not None:
        return best[1]
    if fallback is not None:
        return fallback
    raise UnsupportedShapeError(f"no kernel runs M={p.m} N={p.n} K={p.k} group_size={p.group_size}: "
                                + "; ".join(reasons))
