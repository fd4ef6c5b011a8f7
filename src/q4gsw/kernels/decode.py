"""The decode kernel specs (small M at read bandwidth): Decode (decode.wgsl, one row of x a
workgroup, or two: decode_x2_subgroup, routed for M = 2-6), DecodeNarrow (decode_narrow.wgsl, its
8-byte-load variant, routed for M = 1 on GPUs up to 2^24 weights) and DecodeBatch
(decode_batch.wgsl, blocks of 2-8 rows of x a workgroup). Decode's layout with 8-bit activations
is DecodeInt8 (decode_int8.py)."""

from __future__ import annotations

from ..arith import ceil_div
from ..runtime.pipelines import KernelKey
from . import cost
from .problem import Problem
from .spec import KernelSpec

#: The nibble unpacks of unpack.wgsl (UNPACK_IMAD false / true).
UNPACKS = ("shift", "imad")
#: The output-feature counts per workgroup that `q4gsw tune` tries.
TUNED_FEATURES = (8, 16, 32)


def decode_settings(settings: dict, features: int | None, unpack: str) -> tuple[int | None, str] | None:
    """(features_per_workgroup, unpack) with tuned `settings` applied over the current values,
    or None when a setting is out of range (features a multiple of 4 in 4..64, or None for
    the default; unpack one of UNPACKS or "auto")."""
    features = settings.get("features_per_workgroup", features)
    unpack = settings.get("unpack", unpack)
    if features is not None and (int(features) % 4 or not 4 <= int(features) <= 64):
        return None
    if unpack not in (*UNPACKS, "auto"):
        return None
    return None if features is None else int(features), unpack


def split_settings(settings: dict, k_per_workgroup: int | None, x_staged: bool) -> tuple[int | None, bool] | None:
    """(k_per_workgroup, x_staged) of Decode with `settings` applied, or None when out of range
    (k_per_workgroup None for all of K, else a multiple of 1024 in 1024..32768; x_staged a bool)."""
    kpw = settings.get("k_per_workgroup", k_per_workgroup)
    staged = settings.get("x_staged", x_staged)
    if kpw is not None and (int(kpw) % 1024 or not 1024 <= int(kpw) <= 32768):
        return None
    if not isinstance(staged, bool):
        return None
    return None if kpw is None else int(kpw), staged


class Decode(KernelSpec):
    """Small M at read bandwidth: x in registers, 16-byte weight loads, cheap unpack; each
    workgroup takes FEATURES output features of one row of x.

    Two variants differ only in how a feature's partial sums are added across invocations:
    decode_subgroup (subgroup shuffles; needs the `subgroup` feature) and decode_workgroup
    (workgroup memory; any adapter). x_rows=2 (decode_x2_subgroup, a registered kernel): a
    workgroup takes two rows of x, each nibble unpacked once for both (32 weight rows by default).

    Two settings that routing leaves off (variants for measurement, docs/kernels-decode.md):
    k_per_workgroup splits K over workgroups of that many k (partial sums added by a
    reduce_splits dispatch), and x_staged copies the workgroup's x into workgroup memory with
    coalesced loads before use.
    """

    max_m = 1024  # capability; routing prefers it only while the cost model says so
    features_per_step = 4  # decode.wgsl's RB
    k_per_invocation = 32  # one vec4<u32> of a weight row
    file = "decode"
    declares_x_stage = True  # decode.wgsl's x_stage array (one slot unless x_staged)
    on_cpu = False  # the device's (bind): the variants whose defaults or costs differ there read it

    def __init__(self, reduction: str, partial_capacity: int, features_per_workgroup: int | None = None,
                 unpack: str = "auto", k_per_workgroup: int | None = None, x_staged: bool = False, x_rows: int = 1):
        self.reduction = reduction
        self.x_rows = x_rows  # rows of x a workgroup: 1, or 2 (X_ROWS: each nibble unpacked once for both)
        self.name = f"{self.file}_{'x2_' if x_rows == 2 else ''}{reduction}"
        self.partial_capacity = partial_capacity  # FEATURES * WG bound from workgroup memory
        self.features_per_workgroup = features_per_workgroup  # None: 32 on a long grid with subgroups, else 16
        self.unpack = unpack  # "shift" | "imad" | "auto": imad on a long grid
        self.k_per_workgroup = k_per_workgroup  # None: one workgroup covers all of K
        self.x_staged = x_staged

    def variants(self, p):
        return [self.with_settings({"features_per_workgroup": f, "unpack": u}) for u in UNPACKS
                for f in TUNED_FEATURES if f * self.workgroup_size(p) <= self.partial_capacity or f == 8]

    def settings(self):
        settings = {"features_per_workgroup": self.features_per_workgroup, "unpack": self.unpack}
        if self.k_per_workgroup is not None or self.x_staged:
            settings.update(k_per_workgroup=self.k_per_workgroup, x_staged=self.x_staged)
        if self.x_rows != 1:
            settings["x_rows"] = self.x_rows
        return settings

    def with_settings(self, settings):
        tuned = decode_settings(settings, self.features_per_workgroup, self.unpack)
        split = split_settings(settings, self.k_per_workgroup, self.x_staged)
        x_rows = settings.get("x_rows", self.x_rows)
        if tuned is None or split is None or x_rows not in (1, 2):
            return self
        bound = type(self)(self.reduction, self.partial_capacity, *tuned, *split, x_rows=x_rows)
        bound.on_cpu = self.on_cpu
        return bound

    def bind(self, caps):
        if caps is None or caps.is_cpu == self.on_cpu:
            return self
        bound = self.with_settings({})
        bound.on_cpu = caps.is_cpu
        return bound

    def unpack_imad(self, p: Problem) -> bool:
        """UNPACK_IMAD (unpack.wgsl). "auto": the multiply-add unpack, on every shape: on the H200
        it was 5-11 % faster than the shift form at M = 1 on all six Llama shapes (LM head 119.9
        vs 140.5 µs; bench/results/2026-11-29-h200-s5-decode-probe.md). (Session 3's H100 runs,
        at clocks nobody recorded, had the shift form ahead on the mid shapes.)"""
        if self.unpack == "auto":
            return True
        return self.unpack == "imad"

    def split(self, p: Problem) -> int:
        """Workgroups per output tile along K: ceil(K / k_per_workgroup), 1 by default."""
        if self.k_per_workgroup is None:
            return 1
        return max(1, ceil_div(p.k, self.k_per_workgroup))

    def workgroup_size(self, p: Problem) -> int:
        """Invocations: one per k_per_invocation k of the workgroup's share of K (one vec4<u32>
        of a weight row), rounded up to a multiple of 32."""
        return max(32, ceil_div(ceil_div(p.k // self.k_per_invocation, self.split(p)), 32) * 32)

    def features(self, p: Problem) -> int:
        """Output features per workgroup (FEATURES): a multiple of 4 within workgroup memory, at
        most 2 WG (each invocation stores up to two rows; WG with the workgroup reduction)."""
        wg = self.workgroup_size(p)
        cap = min(self.partial_capacity // wg, wg if self.reduction == "workgroup" else 2 * wg) // self.x_rows
        # 32 on a long grid only with the subgroup reduction: the workgroup one's partial sums
        # (16 KiB at 32 features) cut residency (LM head 140 -> 196 µs on the H100); 32 with two
        # rows of x (H200, session 6: 29.7 against 32.4 µs at 2 x 4096 x 14336, 47.2 against 51.5 at M = 4)
        long = cost.long_grid(p) and self.reduction == "subgroup"
        wanted = self.features_per_workgroup or (32 if long or self.x_rows == 2 else 16)
        step = self.features_per_step
        return max(step, min(wanted, cap) // step * step)

    def tiles(self, p):
        return ceil_div(p.n, self.features(p)), ceil_div(p.m, self.x_rows) * self.split(p)

    def loop_trips(self, p):
        wg, features = self.workgroup_size(p), self.features(p)
        return features // self.features_per_step + 2 * features * self.x_rows + wg

    def constants(self, p):
        constants = (("FEATURES", self.features(p) * self.x_rows), ("WG", self.workgroup_size(p)),
                     ("UNPACK_IMAD", self.unpack_imad(p)))
        if self.split(p) > 1:
            constants += (("SPLIT", self.split(p)),)
        if self.x_staged:
            constants += (("X_STAGED", True),)
        if self.x_rows != 1:
            constants += (("X_ROWS", self.x_rows),)
        return constants

    def key(self, p):
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)),
                         files=(self.file, "unpack", f"reduce_{self.reduction}"))

    def predicted_seconds(self, p):
        if self.x_rows == 2:
            return cost.decode_x2_seconds(p)
        return cost.decode_seconds(p) + cost.split_seconds(p, self.split(p))

    def _shape_reason(self, p):
        if p.m > self.max_m:
            return f"M={p.m} > {self.max_m}"
        kpi = self.k_per_invocation
        if p.k % kpi:
            return f"K={p.k} is not a multiple of {kpi}"
        if p.group_size % kpi:
            return f"group_size={p.group_size} is not a multiple of {kpi}"
        if p.k > kpi * 1024 * self.split(p):
            return f"K={p.k} > {kpi * 1024 * self.split(p)} ({kpi} k per invocation, 1024 invocations)"
        if self.x_rows != 1 and (self.file != "decode" or self.k_per_workgroup is not None or self.x_staged):
            return "x_rows=2 is a setting of decode.wgsl without k_per_workgroup and x_staged"
        return None

    def workgroup_bytes(self, p: Problem) -> int:
        """Workgroup memory the kernel declares: partial sums, and in decode.wgsl x (staged, or
        one slot)."""
        wg, features = self.workgroup_size(p), self.features(p) * self.x_rows
        partials = features * wg // 4 if self.reduction == "subgroup" else features * wg + wg
        return 4 * partials + (16 * (9 * wg if self.x_staged else 1) if self.declares_x_stage else 0)

    def supports(self, p, caps):
        if self.reduction == "subgroup" and caps is not None and not caps.has_subgroups:
            return "the device has no `subgroup` feature"
        reason = super().supports(p, caps)
        if reason is None and caps is not None:
            limit = int(caps.limits.get("max-compute-workgroup-storage-size", 16384))
            if self.workgroup_bytes(p) > limit:
                return f"needs {self.workgroup_bytes(p)} bytes of workgroup memory, the device has {limit}"
        return reason


class DecodeNarrow(Decode):
    """Decode with 8-byte weight loads: 16 k per invocation (x in four vec4), 8 rows a step, so
    as many bytes in flight per invocation as Decode with half the registers of x and twice the
    invocations; K split as Decode's k_per_workgroup. Names: decode_narrow_subgroup (routed),
    decode_narrow_workgroup.

    Routed for M = 1 on a GPU when the weight has at most cost.NARROW_MAX_WEIGHTS elements:
    with 8 rows a workgroup (the default) every invocation makes one trip to memory and the
    grid fits one wave of the H200, where it ran 8-12 % faster than decode on the 8-9 MB Llama
    shapes and 7-40 % slower on bigger ones (cost.narrow_seconds). On a CPU adapter it is
    slower (lavapipe), and never chosen there."""

    features_per_step = 8  # decode_narrow.wgsl's RB
    k_per_invocation = 16  # one vec2<u32> of a weight row
    file = "decode_narrow"
    declares_x_stage = False

    def features(self, p: Problem) -> int:
        """As Decode's, 8 by default (one step: every load issued before the first wait)."""
        if self.features_per_workgroup is None:
            return self.with_settings({"features_per_workgroup": 8}).features(p)
        return super().features(p)

    def predicted_seconds(self, p):
        return cost.narrow_seconds(p, self.on_cpu) + cost.split_seconds(p, self.split(p))

    def _shape_reason(self, p):
        if self.x_staged:
            return "x_staged is a setting of decode.wgsl only"
        return super()._shape_reason(p)


class DecodeBatch(KernelSpec):
    """Batched decode (2 <= M <= ~64): a workgroup takes FEATURES output features and a block
    of 2, 4 or 8 rows of x (X_ROWS), 8 k per invocation, so each weight word is unpacked once
    for the whole block; the block's sums are added across the subgroup by a
    transpose-reduction (see decode_batch.wgsl). A workgroup covers up to 4096 k (8 rows of
    x) or 8192 k (2 or 4 rows); K beyond that is split over workgroups and reduced by
    reduce_splits. Needs the `subgroup` feature.
    """

    name = "decode_batch"
    max_k = 32768  # at most 8 workgroups of 512 invocations (8 rows of x), 8 k each

    def __init__(self, features_per_workgroup: int | None = None, min_lanes: int = 4, storage_limit: int = 16384,
                 unpack: str = "auto"):
        self.features_per_workgroup = features_per_workgroup  # None: 32 with blocks of 8 or a long grid, else 16
        self.min_lanes = min_lanes  # the smallest subgroup the device may run (sizes the slots)
        self.storage_limit = storage_limit
        self.unpack = unpack  # "shift" | "imad" | "auto": imad with blocks of 4 or 8 or a long grid

    def bind(self, caps):
        if caps is None:
            return self
        return DecodeBatch(self.features_per_workgroup, max(1, int(caps.subgroup_min_size)),
                           int(caps.limits.get("max-compute-workgroup-storage-size", 16384)), self.unpack)

    def variants(self, p):
        return [DecodeBatch(f, self.min_lanes, self.storage_limit, u) for u in UNPACKS for f in TUNED_FEATURES]

    def settings(self):
        return {"features_per_workgroup": self.features_per_workgroup, "unpack": self.unpack}

    def with_settings(self, settings):
        tuned = decode_settings(settings, self.features_per_workgroup, self.unpack)
        if tuned is None:
            return self
        return DecodeBatch(tuned[0], self.min_lanes, self.storage_limit, tuned[1])

    def unpack_imad(self, p: Problem) -> bool:
        """UNPACK_IMAD (unpack.wgsl). "auto": the multiply-add unpack for every block: on the H200
        it was 4.6 % faster than the shift form with blocks of 2 (M = 2, 4096 x 14336: 33.1 vs
        34.7 µs), 7 % with blocks of 4, 5 % with blocks of 8 (session 5). (On the H100, session 3,
        blocks of 2 were faster with the shift form.)"""
        if self.unpack == "auto":
            return True
        return self.unpack == "imad"

    def x_rows(self, p: Problem) -> int:
        """Rows of x per workgroup (X_ROWS): 2, 4 or 8."""
        return 2 if p.m <= 2 else 4 if p.m <= 4 else 8

    def split(self, p):
        # at most 512 invocations with 8 rows of x (16 vec4 of x each: more would cap registers
        # below what the kernel needs; 896 ran 2.5x slower on the H100), 1024 with 2 or 4
        words_per_workgroup = 512 if self.x_rows(p) == 8 else 1024
        return max(1, ceil_div(p.k // 8, words_per_workgroup))

    def workgroup_size(self, p: Problem) -> int:
        words = ceil_div(p.k // 8, self.split(p))  # per workgroup
        return max(32, ceil_div(words, 32) * 32)

    def workgroup_bytes(self, p: Problem, features: int) -> int:
        return 4 * features * self.x_rows(p) * (self.workgroup_size(p) // self.min_lanes)

    def features(self, p: Problem) -> int:
        """Output features per workgroup (FEATURES), halved until the subgroup slots fit
        workgroup memory (>= 4)."""
        features = self.features_per_workgroup or (64 if self.x_rows(p) == 8 else 32 if cost.long_grid(p) else 16)
        while features > 4 and self.workgroup_bytes(p, features) > self.storage_limit:
            features //= 2
        return features

    def predicted_seconds(self, p):
        return cost.decode_batch_seconds(p, self.x_rows(p), self.split(p))

    def tiles(self, p):
        return ceil_div(p.n, self.features(p)), ceil_div(p.m, self.x_rows(p)) * self.split(p)

    def loop_trips(self, p):
        features, wg = self.features(p), self.workgroup_size(p)
        return features // 4 * 4 + ceil_div(features * self.x_rows(p), wg) * (wg // self.min_lanes + 2)

    def constants(self, p):
        return (("WG", self.workgroup_size(p)), ("FEATURES", self.features(p)), ("X_ROWS", self.x_rows(p)),
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
        if reason is None and self.workgroup_bytes(p, self.features(p)) > self.storage_limit:
            return (f"needs {self.workgroup_bytes(p, self.features(p))} bytes of workgroup memory "
                    f"(subgroups of {self.min_lanes}), the device has {self.storage_limit}")
        return reason
