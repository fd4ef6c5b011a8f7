"""The prefill kernel specs: Tiled (tiled.wgsl, 128 x 128 output tiles) and TiledSplit (the
same kernel with 64- or 128-row tiles and K split over workgroups, for grids too small to
fill the GPU)."""

from __future__ import annotations

from ..arith import ceil_div
from ..runtime.pipelines import KernelKey
from . import cost
from .problem import Problem
from .spec import KernelSpec


class Tiled(KernelSpec):
    """Prefill: 128 x 128 output tiles, the weight tile dequantized once into workgroup
    memory per 32 k and reused by 128 rows of x; 8 x 8 register tile per invocation."""

    name = "tiled"
    tile_n = 128  # output features per tile
    tile_m = 128  # rows of x per tile

    def predicted_seconds(self, p):
        return cost.tiled_seconds(p)

    def tiles(self, p):
        return ceil_div(p.n, self.tile_n), ceil_div(p.m, self.tile_m)

    def loop_trips(self, p):
        return (p.k // 32) * (32 + 2)

    def key(self, p):
        # tiled.wgsl (TiledSplit: with other constants; with a split, the reduction adds the bias)
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)), files=("tiled", "store_tile"))

    def _shape_reason(self, p):
        if p.k % 32:
            return f"K={p.k} is not a multiple of 32"
        if p.group_size % 32:
            return f"group_size={p.group_size} is not a multiple of 32"
        return None


class TiledSplit(Tiled):
    """The tiled kernel for grids too small to fill the GPU (16 <= M <= ~512): tiles of 64
    or 128 rows of x (TILE_M), and K split over `split` workgroups per tile whose partial
    tiles a second dispatch (reduce_splits.wgsl) adds in the same compute pass.

    Settings: x_rows_per_tile (64 or 128; default 64 up to M = 64); split (default: the
    largest power of two that keeps the grid within `resident` waves of 132 workgroups, with at
    least 4 steps of 32 k each: more waves only queue); resident (workgroups per SM the default
    split aims at: 1, or 2 for configurations light enough in registers to share an SM);
    prefetch (True: the next step's global loads held in registers during the FMAs; False:
    loaded at the start of their step, 24 fewer registers live); invocations_per_workgroup (256,
    or 512 with 128-row tiles: 4 x 8 outputs an invocation, twice the warps, the same tile).
    """

    name = "tiled_split"
    max_split = 16

    def __init__(self, x_rows_per_tile: int | None = None, split: int | None = None, *, name: str = "tiled_split",
                 prefetch: bool = True, resident: int = 1, invocations_per_workgroup: int = 256,
                 baseline: bool = False):
        self.x_rows_per_tile, self.fixed_split = x_rows_per_tile, split
        self.name, self.prefetch, self.resident, self.baseline = name, prefetch, resident, baseline
        self.invocations_per_workgroup = invocations_per_workgroup

    def _copy(self, rows, split) -> "TiledSplit":
        return TiledSplit(rows, split, name=self.name, prefetch=self.prefetch, resident=self.resident,
                          invocations_per_workgroup=self.invocations_per_workgroup, baseline=self.baseline)

    def settings(self):
        return {k: v for k, v in (("x_rows_per_tile", self.x_rows_per_tile), ("split", self.fixed_split),
                                  ("prefetch", None if self.prefetch else False),
                                  ("resident", None if self.resident == 1 else self.resident),
                                  ("invocations_per_workgroup",
                                   None if self.invocations_per_workgroup == 256 else self.invocations_per_workgroup))
                if v is not None}

    def with_settings(self, settings):
        rows = settings.get("x_rows_per_tile", self.x_rows_per_tile)
        split = settings.get("split", self.fixed_split)
        if rows not in (None, 64, 128) or (split is not None and not 1 <= int(split) <= self.max_split):
            return self
        return self._copy(rows, None if split is None else int(split))

    def variants(self, p):
        return [self._copy(r, s) for r in (64, 128) for s in (1, 2, 4, 8, 16)
                if s <= max(1, p.k // 32 // 4) and (r, s) != (128, 1)]

    def tile_rows(self, p: Problem) -> int:
        """Rows of x per tile (TILE_M)."""
        return self.x_rows_per_tile or (64 if p.m <= 64 else 128)

    def split(self, p):
        if self.fixed_split is not None:
            return min(self.fixed_split, max(1, p.k // 32))
        tiles = ceil_div(p.m, self.tile_rows(p)) * ceil_div(p.n, self.tile_n)
        split = 1
        while (split * 2 <= self.max_split and tiles * split * 2 <= cost.TILED_TILES_PER_WAVE * self.resident
               and p.k // 32 // (split * 2) >= 4):
            split *= 2
        return split

    def predicted_seconds(self, p):
        return cost.tiled_seconds(p, self.tile_rows(p), self.split(p))

    def tiles(self, p):
        return ceil_div(p.n, self.tile_n), ceil_div(p.m, self.tile_rows(p)) * self.split(p)

    def loop_trips(self, p):
        return ceil_div(p.k // 32, self.split(p)) * (32 + 2)

    def constants(self, p):
        # PREFETCH and WG only where they differ from the WGSL defaults (the default key unchanged)
        extra = (() if self.prefetch else (("PREFETCH", False),)) + (
            () if self.invocations_per_workgroup == 256 else (("WG", self.invocations_per_workgroup),))
        return (("TILE_M", self.tile_rows(p)), ("SPLIT", self.split(p)), *extra)

    def _shape_reason(self, p):
        if self.invocations_per_workgroup == 512 and self.tile_rows(p) != 128:
            return f"512 invocations a workgroup need 128-row tiles, not {self.tile_rows(p)}"
        return super()._shape_reason(p)

    def supports(self, p, caps):
        limit = None if caps is None else caps.limits.get("max-compute-invocations-per-workgroup", 256)
        if limit is not None and self.invocations_per_workgroup > limit:
            return f"{self.invocations_per_workgroup} invocations a workgroup, past the adapter's {limit}"
        return super().supports(p, caps)
