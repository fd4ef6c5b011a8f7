"""The kernel specs that run any shape: General (the fallback) and Rowwise (ExecuTorch's
original design, a baseline for benchmarks only)."""

from __future__ import annotations

from ..arith import ceil_div
from .spec import KernelSpec


class General(KernelSpec):
    """Any shape: a workgroup per (output feature, 4 rows of x); invocations walk groups."""

    name = "general"
    wg = 64
    x_rows_per_tile = 4

    def tiles(self, p):
        return p.n, ceil_div(p.m, self.x_rows_per_tile)

    def loop_trips(self, p):
        return ceil_div(p.num_groups, self.wg) * (min(p.group_size, p.k) + 2) + self.wg.bit_length()

    def constants(self, p):
        return (("WG", self.wg),)


class Rowwise(KernelSpec):
    """ExecuTorch's original design: a workgroup per row of x, 64 invocations striding N."""

    name = "rowwise"
    baseline = True
    wg = 64

    def tiles(self, p):
        return 1, p.m

    def loop_trips(self, p):
        return ceil_div(p.n, self.wg) * (p.k + 2)
