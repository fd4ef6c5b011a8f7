"""BcastInt8: the int8-activation GEMM in ONNX Runtime's DP4A shape (bcast_int8.wgsl), a baseline
to time beside tiled_int8 (docs/kernels-prefill.md, "Session 5: ORT's DP4A kernel against
tiled_int8"). Same quantize dispatch, scratch buffers, bindings and params as TiledInt8; a 64-row
tile of 256 invocations, one row of x and 16 (or 32) features an invocation, weights read as
broadcasts, scales applied at every 32-k chunk. Never chosen by the routing.
"""

from __future__ import annotations

from ..arith import ceil_div
from . import cost
from .int8 import TiledInt8


class BcastInt8(TiledInt8):
    """Settings (None: chosen per problem and device):
        features_per_tile: 64 (default: 16 features an invocation) or 128 (32);
        k_step: 32 (default, as ONNX Runtime), 64 or 128 k a step; where a step lies in one group
            (group_size % k_step == 0, x scales per group) its sums add up in i32 and the scales
            are applied once a step, else at every 32-k chunk;
        double_buffer: the next step's loads issued before the products and two buffers (default
            True), or ONNX Runtime's load, barrier, products, barrier;
        split: workgroups per tile along K, 1..16 (default: the least predicted time);
        x_group: None (the weight's group size) or 32.
    """

    kernel = "bcast_int8"

    def __init__(self, name: str = "bcast_int8", *, k_step: int | None = None, double_buffer: bool = True,
                 split: int | None = None, x_group: int | None = None, features_per_tile: int = 64,
                 baseline: bool = True, memory_limit: int | None = None, invocation_limit: int | None = None,
                 **_ignored):
        super().__init__(name, x_rows_per_tile=64, k_step=k_step, double_buffer=double_buffer, split=split,
                         x_group=x_group, features_per_tile=features_per_tile, baseline=baseline,
                         memory_limit=memory_limit, invocation_limit=invocation_limit)

    def _copy(self, **changes) -> "BcastInt8":
        args = dict(k_step=self.k_step, double_buffer=self.double_buffer, split=self.fixed_split,
                    x_group=self.x_group, features_per_tile=self.features_per_tile, baseline=self.baseline,
                    memory_limit=self.memory_limit, invocation_limit=self.invocation_limit)
        args.update({k: v for k, v in changes.items() if k in args})
        return BcastInt8(self.name, **args)

    def settings(self):
        return {k: v for k, v in (("k_step", self.k_step), ("double_buffer", self.double_buffer),
                                  ("split", self.fixed_split), ("x_group", self.x_group),
                                  ("features_per_tile", self.features_per_tile)) if v is not None}

    def with_settings(self, settings):
        k_step = settings.get("k_step", self.k_step)
        split = settings.get("split", self.fixed_split)
        x_group = settings.get("x_group", self.x_group)
        cols = settings.get("features_per_tile", self.features_per_tile)
        if (k_step not in (None, 32, 64, 128) or x_group not in (None, 32) or cols not in (64, 128)
                or (split is not None and not 1 <= int(split) <= self.max_split)):
            return self
        return self._copy(k_step=k_step, double_buffer=bool(settings.get("double_buffer", self.double_buffer)),
                          split=None if split is None else int(split), x_group=x_group, features_per_tile=cols)

    def variants(self, p):
        return [self._copy(k_step=k, double_buffer=d, split=s, features_per_tile=n)
                for k in (32, 64) for d in (True, False) for n in (64, 128) for s in (1, 2, 4)
                if s <= max(1, p.k // k // 4)]

    def tile_rows(self, p):
        return 64

    def predicted_seconds(self, p):
        """tiled_int8's prediction (its default settings on this device) times
        cost.BCAST_INT8_OVER_TILED_INT8, the ratio measured on the H200 (the cost model's one
        tile per SM does not describe this kernel's small workgroups, which share SMs)."""
        tiled = TiledInt8(memory_limit=self.memory_limit, invocation_limit=self.invocation_limit)
        return cost.BCAST_INT8_OVER_TILED_INT8 * tiled.predicted_seconds(p)

    def step(self, p):
        return self.k_step or 32

    def split(self, p):
        """The setting, else 1 where the tiles fill the SMs (ORT never splits), and where they do
        not, the power of two that gives ~3 workgroups an SM (this kernel's workgroups share SMs;
        the cost model's one tile per SM does not see that), keeping >= 4 steps a workgroup."""
        steps = ceil_div(p.k, self.step(p))
        if self.fixed_split is not None:
            return max(1, min(self.fixed_split, steps))
        tiles = ceil_div(p.n, self.features_per_tile) * ceil_div(p.m, 64)
        s = 1
        if tiles >= cost.TILED_TILES_PER_WAVE:
            return s
        while s < self.max_split and tiles * s < 3 * cost.TILED_TILES_PER_WAVE and steps // (2 * s) >= 4:
            s *= 2
        return s

    def loop_trips(self, p):
        bk = self.step(p)
        return ceil_div(ceil_div(p.k, bk), self.split(p)) * (bk // 32 + 2) + 2

    def constants(self, p):
        return (("TILE_N", self.features_per_tile), ("BK", self.step(p)), ("DOUBLE", self.double_buffer),
                ("SPLIT", self.split(p)), ("XG32", self.x_group == 32), ("STEP_SCALES", self.step_scales(p)))

    def step_scales(self, p) -> bool:
        """Scales once a step: the step lies in one group of x and of the weight."""
        return self.step(p) > 32 and self.x_group is None and min(p.group_size, p.k) % self.step(p) == 0

    def _shape_reason(self, p):
        if p.k % 32:
            return f"K={p.k} is not a multiple of 32"
        if p.group_size % 32:
            return f"group_size={p.group_size} is not a multiple of 32"
        if self.invocation_limit is not None and self.invocation_limit < 256:
            return f"256 invocations a workgroup, past the adapter's {self.invocation_limit}"
        need = workgroup_bytes(self.features_per_tile, self.step(p), self.double_buffer)
        if self.memory_limit is not None and need > self.memory_limit:
            return (f"64 x {self.features_per_tile} tiles of {self.step(p)} k"
                    f"{', double-buffered' if self.double_buffer else ''} need {need} bytes of workgroup "
                    f"memory, past the adapter's {self.memory_limit}")
        return None


def workgroup_bytes(tile_n: int, bk: int, double_buffer: bool) -> int:
    """bcast_int8.wgsl's workgroup memory: Xs, Ws and Ss, per buffer."""
    chunks = bk // 32
    return 16 * (2 if double_buffer else 1) * chunks * (2 * 64 + 2 * tile_n + (64 + tile_n) // 4)
