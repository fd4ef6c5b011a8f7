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

    def prefers(self, p: Problem) -> bool:
        """Whether the default routing picks this kernel for p when it supports it (pure; the
        M thresholds come from the H100 benchmarks in bench/results/)."""
        return not self.baseline

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
        return None

    def __repr__(self) -> str:
        return f"<KernelSpec {self.name}>"


# Default routing between the decode and tiled kernels: a cost model with constants fitted
# to the H100 runs in bench/results/ (2026-11-25). Decode time grows with M * N * K; tiled
# time with the number of waves of 128 x 128 tiles (one resident per SM, 132 SMs) times K.
DECODE_SECONDS_PER_MAC = 2.5e-13
TILED_SECONDS_PER_K_PER_WAVE = 1.7e-7
TILED_TILES_PER_WAVE = 132


def decode_beats_tiled(p: Problem) -> bool:
    """Whether the decode kernel is predicted faster than the tiled one for p."""
    decode = DECODE_SECONDS_PER_MAC * p.m * p.n * p.k
    tiles = -(-p.m // 128) * -(-p.n // 128)
    tiled = TILED_SECONDS_PER_K_PER_WAVE * p.k * -(-tiles // TILED_TILES_PER_WAVE)
    return decode <= tiled


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

    def prefers(self, p):
        return False  # the fallback: chosen only when no faster kernel supports p


class Decode(KernelSpec):
    """Small M at read bandwidth: x in registers, 16-byte weight loads, cheap unpack.

    Two variants differ only in how a row's partial sums are added across invocations:
    decode_subgroup (subgroupAdd; needs the `subgroup` feature) and decode_workgroup
    (workgroup memory; any adapter).
    """

    max_m = 1024  # capability; routing prefers it only while the cost model says so
    rows_per_step = 4
    file = "decode"

    def __init__(self, reduction: str, partial_capacity: int, rows_per_workgroup: int = 16):
        self.reduction = reduction
        self.name = f"{self.file}_{reduction}"
        self.partial_capacity = partial_capacity  # RPW * WG bound from workgroup memory
        self.rows_per_workgroup = rows_per_workgroup

    def variants(self, p):
        return [self.with_settings({"rows_per_workgroup": r}) for r in (8, 16, 32)
                if r * self.workgroup_size(p) <= self.partial_capacity or r == 8]

    def settings(self):
        return {"rows_per_workgroup": self.rows_per_workgroup}

    def with_settings(self, settings):
        rows = int(settings.get("rows_per_workgroup", self.rows_per_workgroup))
        if rows % self.rows_per_step or not 4 <= rows <= 64:
            return self
        return Decode(self.reduction, self.partial_capacity, rows)

    def workgroup_size(self, p: Problem) -> int:
        return max(32, -(-p.k // 1024) * 32)

    def rpw(self, p: Problem) -> int:
        cap = self.partial_capacity // self.workgroup_size(p)
        return max(self.rows_per_step, min(self.rows_per_workgroup, cap) // self.rows_per_step * self.rows_per_step)

    def tiles(self, p):
        return -(-p.n // self.rpw(p)), p.m

    def loop_trips(self, p):
        wg, rpw = self.workgroup_size(p), self.rpw(p)
        return rpw // self.rows_per_step + 2 * rpw + wg

    def constants(self, p):
        return (("ROWS", self.rpw(p)), ("WG", self.workgroup_size(p)))

    def key(self, p):
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)),
                         files=(self.file, f"reduce_{self.reduction}"))

    def prefers(self, p):
        return decode_beats_tiled(p)

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


class Tiled(KernelSpec):
    """Prefill: 128 x 128 output tiles, the weight tile dequantized once into workgroup
    memory per 32 k and reused by 128 rows of x; 8 x 8 register tile per invocation."""

    name = "tiled"
    tile = 128

    def prefers(self, p):
        return not decode_beats_tiled(p)

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


KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (Decode("subgroup", 32768), Decode("workgroup", 4096), Tiled(), General(), Rowwise())
}


def tuning_bucket(p: Problem) -> str:
    """The tuning cache's key for p: M rounded up to a power of two, exact K, N, group size."""
    m = 1 << max(0, (p.m - 1).bit_length())
    return f"m{m}_k{p.k}_n{p.n}_g{p.group_size}"


def select(p: Problem, caps, kernel: str | None = None, tuned: dict | None = None) -> KernelSpec:
    """The kernel to run p: the one named, else the tuned choice for p's bucket (see
    q4gsw.tune; `tuned` maps bucket -> {"kernel", "settings"}) when it supports p, else the
    first kernel in KERNELS order (fastest first) that supports p and prefers it, else the
    first that supports it."""
    if kernel is None and tuned:
        entry = tuned.get(tuning_bucket(p))
        spec = KERNELS.get(entry["kernel"]) if entry else None
        if spec is not None:
            spec = spec.with_settings(entry.get("settings", {}))
            if spec.supports(p, caps) is None:
                return spec
    if kernel is not None:
        spec = KERNELS.get(kernel)
        if spec is None:
            raise UnsupportedShapeError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
        reason = spec.supports(p, caps)
        if reason:
            raise UnsupportedShapeError(f"kernel {kernel!r} cannot run M={p.m} N={p.n} K={p.k} "
                                        f"group_size={p.group_size}: {reason}")
        return spec
    reasons, fallback = [], None
    for spec in KERNELS.values():
        if spec.baseline:
            continue
        reason = spec.supports(p, caps)
        if reason is None and spec.prefers(p):
            return spec
        if reason is None:
            fallback = fallback or spec
        else:
            reasons.append(f"{spec.name}: {reason}")
    if fallback is not None:
        return fallback
    raise UnsupportedShapeError(f"no kernel runs M={p.m} N={p.n} K={p.k} group_size={p.group_size}: "
                                + "; ".join(reasons))
