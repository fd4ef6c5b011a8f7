"""The 8-bit-activation path (ExecuTorch's linear_dq8ca_q4gsw): the activation quantizer's
exact numpy emulation, and the TiledInt8 spec (quantize_int8.wgsl, then tiled_int8.wgsl: int4 x
int8 products summed in i32 with dot4I8Packed).

Granularity: one symmetric int8 scale per (row of x, group of the weight's group_size k). The
GEMM must apply the weight's scale once per group anyway (it varies along K), so a per-group
activation scale costs one more multiply per output and group, and its error is that of the
group's own max |x| rather than the row's (docs/kernels-prefill.md measures both).
"""

from __future__ import annotations

import numpy as np

from ..arith import ceil_div
from ..runtime.pipelines import KernelKey
from . import cost
from .problem import Problem
from .spec import KernelSpec

#: Invocations per workgroup of quantize_int8.wgsl.
QUANTIZE_WG = 256
#: |sum over a group of q_x * q_w| <= 127 * 8 * group_size must stay below 2^31.
MAX_GROUP_SIZE = 1 << 21
#: |x| bits at or above this are Inf or NaN; below TINY_BITS (2^-100) a group quantizes to 0.
NONFINITE_BITS = 0x7F800000
TINY_BITS = 0x0D800000


# --- the quantizer, as quantize_int8.wgsl computes it -------------------------------------------

def quantize_activations(x: np.ndarray, group_size: int, *, reciprocal_ulps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per (row, group of group_size k), exactly as quantize_int8.wgsl does it.

    amax = max |x| over the group; scale = amax * f32(1/127); q = clip(rint(x * f32(127 / amax)),
    -127, 127), every step in float32 (rint: half to even, as WGSL's round). A group whose amax
    is below 2^-100 gets scale 0 and q 0; one holding NaN or Inf gets scale NaN and q 0.

    Args:
        x: (M, K) float32.
        group_size: k per scale (a group past K is shorter).
        reciprocal_ulps: 127 / amax moved this many ulps up (> 0) or down (< 0): what a device
            whose f32 division is not correctly rounded computes (WGSL allows 2.5 ulp; the
            H200's differs from numpy's by an ulp in some groups, lavapipe's never).
    Returns:
        q: (M, K) int8; scales: (M, ceil(K / group_size)) float32.
    """
    x = np.ascontiguousarray(x, np.float32)
    m, k = x.shape
    gs = min(group_size, k)
    groups = ceil_div(k, gs)
    q = np.zeros((m, k), np.int8)
    scales = np.zeros((m, groups), np.float32)
    for g in range(groups):
        seg = x[:, g * gs:(g + 1) * gs]
        top = (seg.view(np.uint32) & np.uint32(0x7FFFFFFF)).max(axis=1)
        finite = top < NONFINITE_BITS
        usable = finite & (top >= TINY_BITS)
        amax = top.view(np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = np.where(usable, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
            for _ in range(abs(reciprocal_ulps)):
                inv = np.where(usable, np.nextafter(inv, np.float32(np.inf if reciprocal_ulps > 0 else 0.0)),
                               inv).astype(np.float32)
            scaled = np.rint(seg * inv[:, None])
        q[:, g * gs:(g + 1) * gs] = np.where(usable[:, None], np.clip(scaled, -127, 127), 0).astype(np.int8)
        scale = np.where(usable, amax * np.float32(1.0 / 127.0), np.float32(0.0)).astype(np.float32)
        scales[:, g] = np.where(finite, scale, np.float32(np.nan))
    return q, scales


def dequantize_activations(q: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """(M, K) float64 q * scale of its (row, group): what the int8 path multiplies by the weight."""
    k = q.shape[1]
    gs = min(group_size, k)
    return q.astype(np.float64) * np.repeat(scales.astype(np.float64), gs, axis=1)[:, :k]


def linear_int8_reference(x: np.ndarray, weight, bias: np.ndarray | None = None, *,
                          x_group: int | None = None, reciprocal_ulps: int = 0) -> np.ndarray:
    """The float64 reference of the int8 path: x quantized as quantize_activations does (per
    group of x_group k; default the weight's group size), then dequantize(q) @
    dequantize(weight).T (+ bias). x: (..., K); returns (..., N) float64."""
    x = np.asarray(x, np.float32)
    x2 = x.reshape(-1, weight.in_features)
    xg = x_group or weight.group_size
    q, s = quantize_activations(x2, xg, reciprocal_ulps=reciprocal_ulps)
    out = dequantize_activations(q, s, xg) @ weight.dequantize().T
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out.reshape(*x.shape[:-1], weight.out_features)


def team_size(group_size: int) -> int:
    """quantize_int8.wgsl's TEAM: the largest power of two <= group_size / 8 octets, at most WG."""
    return min(QUANTIZE_WG, 1 << ((group_size // 8).bit_length() - 1))


# --- the kernel spec ----------------------------------------------------------------------------

class TiledInt8(KernelSpec):
    """Prefill with 8-bit activations: quantize_int8 (x -> int8 + per-(row, group) scales into
    scratch buffers the plan owns), then tiled_int8 (128-feature x TILE_M-row tiles, int8 tiles in
    workgroup memory, 8 x 8 (or 4 x 8) i32 sums per invocation by dot4I8Packed, scales once per
    group), in one compute pass; with split > 1, reduce_splits adds the partial tiles.

    Settings (None: chosen per problem and device):
        x_rows_per_tile: 64 or 128 (default 64 up to M = 64);
        features_per_tile: 128 (default) or 64 (a quarter or half of the registers a thread holds:
            64 x 64 tiles are 4 x 4 outputs an invocation);
        invocations_per_workgroup: 256 (default) or 512 (128-row tiles only: 4 x 8 outputs an
            invocation, the same tile and staging with twice the warps and half the registers each);
        k_step: 32 or 64 k a step (default 64 where the workgroup memory allows, else 32);
        double_buffer: two buffers of tiles and one barrier a step (default True);
        split: workgroups per tile along K, 1..16 (default: the least predicted time);
        x_group: k per activation scale: None (default) the weight's group size, or 32 (a
            scale per 32 k: about half the error where a few channels of x are large, for one
            more scale application per 32 k; docs/kernels-prefill.md).
    """

    kernel = "tiled_int8"  # the WGSL file and pipeline name of every configuration
    activations = "int8"
    separate_quantize = True
    max_split = 16

    def __init__(self, name: str = "tiled_int8", *, x_rows_per_tile: int | None = None, k_step: int | None = None,
                 double_buffer: bool = True, split: int | None = None, x_group: int | None = None,
                 features_per_tile: int = 128, invocations_per_workgroup: int = 256, baseline: bool = False,
                 memory_limit: int | None = None, invocation_limit: int | None = None):
        self.name = name
        self.x_group, self.features_per_tile = x_group, features_per_tile
        self.invocations_per_workgroup = invocations_per_workgroup
        self.x_rows_per_tile, self.k_step, self.double_buffer = x_rows_per_tile, k_step, double_buffer
        self.fixed_split, self.baseline = split, baseline
        self.memory_limit = memory_limit  # the device's workgroup storage (None: not bound yet)
        self.invocation_limit = invocation_limit  # the device's invocations per workgroup (None: not bound yet)

    def _copy(self, **changes) -> "TiledInt8":
        args = dict(x_rows_per_tile=self.x_rows_per_tile, k_step=self.k_step, double_buffer=self.double_buffer,
                    split=self.fixed_split, x_group=self.x_group, features_per_tile=self.features_per_tile,
                    invocations_per_workgroup=self.invocations_per_workgroup, baseline=self.baseline,
                    memory_limit=self.memory_limit, invocation_limit=self.invocation_limit)
        args.update(changes)
        return TiledInt8(self.name, **args)

    def bind(self, caps):
        if caps is None:
            return self
        return self._copy(memory_limit=int(caps.limits.get("max-compute-workgroup-storage-size", 16384)),
                          invocation_limit=int(caps.limits.get("max-compute-invocations-per-workgroup", 256)))

    def settings(self):
        return {k: v for k, v in (("x_rows_per_tile", self.x_rows_per_tile), ("k_step", self.k_step),
                                  ("double_buffer", self.double_buffer), ("split", self.fixed_split),
                                  ("x_group", self.x_group),
                                  ("features_per_tile", None if self.features_per_tile == 128 else self.features_per_tile),
                                  ("invocations_per_workgroup",
                                   None if self.invocations_per_workgroup == 256 else self.invocations_per_workgroup))
                if v is not None}

    def with_settings(self, settings):
        rows = settings.get("x_rows_per_tile", self.x_rows_per_tile)
        k_step = settings.get("k_step", self.k_step)
        double = bool(settings.get("double_buffer", self.double_buffer))
        split = settings.get("split", self.fixed_split)
        x_group = settings.get("x_group", self.x_group)
        cols = settings.get("features_per_tile", self.features_per_tile)
        invocations = settings.get("invocations_per_workgroup", self.invocations_per_workgroup)
        if (rows not in (None, 64, 128) or k_step not in (None, 32, 64) or x_group not in (None, 32)
                or cols not in (64, 128) or invocations not in (256, 512)
                or (split is not None and not 1 <= int(split) <= self.max_split)):
            return self
        return self._copy(x_rows_per_tile=rows, k_step=k_step, double_buffer=double,
                          split=None if split is None else int(split), x_group=x_group, features_per_tile=cols,
                          invocations_per_workgroup=invocations)

    def variants(self, p):
        return [self._copy(x_rows_per_tile=r, k_step=k, double_buffer=d, split=s)
                for r in (64, 128) for k in (32, 64) for d in (True, False) for s in (1, 2, 4, 8)
                if s <= max(1, p.k // k // 4)]

    # --- decisions ---

    def x_group_size(self, p: Problem) -> int:
        """k per activation scale: x_group, else the weight's group size (at most K)."""
        return min(self.x_group or p.group_size, p.k)

    def x_groups(self, p: Problem) -> int:
        """Activation scales per row of x."""
        return ceil_div(p.k, self.x_group_size(p))

    def tile_rows(self, p: Problem) -> int:
        """Rows of x per tile (TILE_M)."""
        return self.x_rows_per_tile or (64 if p.m <= 64 else 128)

    def step(self, p: Problem) -> int:
        """k per step (BK): the setting, else 64 where its buffers fit the device's workgroup memory."""
        if self.k_step is not None:
            return self.k_step
        need = workgroup_bytes(self.tile_rows(p), 64, self.double_buffer, self.features_per_tile)
        fits = self.memory_limit is None or need <= self.memory_limit
        return 64 if fits else 32

    def split(self, p):
        steps = ceil_div(p.k, self.step(p))
        if self.fixed_split is not None:
            return max(1, min(self.fixed_split, steps))
        best = (self.predicted_seconds_split(p, 1), 1)
        s = 2
        while s <= self.max_split and steps // s >= 4:
            best = min(best, (self.predicted_seconds_split(p, s), s))
            s *= 2
        return best[1]

    def predicted_seconds_split(self, p: Problem, split: int) -> float:
        return cost.tiled_int8_seconds(p, self.tile_rows(p), self.step(p), split, self.features_per_tile)

    def predicted_seconds(self, p):
        return self.predicted_seconds_split(p, self.split(p))

    def tiles(self, p):
        return ceil_div(p.n, self.features_per_tile), ceil_div(p.m, self.tile_rows(p)) * self.split(p)

    def loop_trips(self, p):
        bk = self.step(p)
        return ceil_div(ceil_div(p.k, bk), self.split(p)) * (bk // 32 * (8 + 2) + 2)

    def constants(self, p):
        # TILE_N and WG only where they differ from the WGSL defaults (the default key unchanged)
        extra = (() if self.features_per_tile == 128 else (("TILE_N", self.features_per_tile),)) + (
            () if self.invocations_per_workgroup == 256 else (("WG", self.invocations_per_workgroup),))
        return (("TILE_M", self.tile_rows(p)), ("BK", self.step(p)), ("DOUBLE", self.double_buffer),
                ("SPLIT", self.split(p)), ("XG32", self.x_group == 32), *extra)

    def key(self, p):
        return KernelKey(self.kernel, (("HAS_BIAS", p.has_bias), *self.constants(p)), files=(self.kernel, "store_tile"))

    def _shape_reason(self, p):
        if p.k % 32:
            return f"K={p.k} is not a multiple of 32"
        if p.group_size % 32:
            return f"group_size={p.group_size} is not a multiple of 32"
        if min(p.group_size, p.k) > MAX_GROUP_SIZE:
            return f"group_size={p.group_size} > {MAX_GROUP_SIZE}: a group's int32 sum could overflow"
        if self.invocations_per_workgroup == 512 and self.tile_rows(p) != 128:
            return f"512 invocations a workgroup need 128-row tiles, not {self.tile_rows(p)}"
        if self.invocation_limit is not None and self.invocations_per_workgroup > self.invocation_limit:
            return (f"{self.invocations_per_workgroup} invocations a workgroup, past the adapter's "
                    f"{self.invocation_limit}")
        need = workgroup_bytes(self.tile_rows(p), self.step(p), self.double_buffer, self.features_per_tile)
        if self.memory_limit is not None and need > self.memory_limit:
            return (f"{self.tile_rows(p)}-row tiles of {self.step(p)} k{', double-buffered' if self.double_buffer else ''} "
                    f"need {need} bytes of workgroup memory, past the adapter's {self.memory_limit}")
        return None

    # --- the quantize dispatch and its scratch buffers ---

    def quantize_key(self, p: Problem) -> KernelKey:
        """quantize_int8.wgsl for p. It is named after this kernel: it heads the compute pass that
        runs the whole op (quantize, GEMM, reduction), so profiles show that pass as the op."""
        return KernelKey(self.kernel, (("WG", QUANTIZE_WG), ("TEAM", team_size(self.x_group_size(p)))),
                         files=("quantize_int8",))

    def quantize_workgroups(self, p: Problem) -> int:
        """One team per (row, activation group): WG / TEAM teams a workgroup."""
        return ceil_div(p.m * self.x_groups(p), QUANTIZE_WG // team_size(self.x_group_size(p)))

    def scratch_bytes(self, p: Problem) -> tuple[int, int]:
        """(bytes of int8 x, bytes of its f32 scales), the buffers between the two dispatches."""
        return p.m * p.k, 4 * p.m * self.x_groups(p)


def workgroup_bytes(tile_m: int, bk: int, double_buffer: bool, tile_n: int = 128) -> int:
    """tiled_int8.wgsl's workgroup memory: Xs, Ws (int8 tiles) and Ss (scales), per buffer."""
    buffers = 2 if double_buffer else 1
    quads, chunks = bk // 4, bk // 32
    return 16 * buffers * (quads * tile_m // 4 + quads * tile_n // 4 + chunks * (tile_m + tile_n) // 4)
