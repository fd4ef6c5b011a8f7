"""The dense_linear kernels (a linear kept in fp32 or fp16 beside the int4 ones): DenseProblem,
the three specs (gemv for small M, gemm for large M, general for any shape) and the pure choice
among them."""

from __future__ import annotations

import dataclasses

from ..arith import ceil_div
from ..errors import UnsupportedShapeError
from ..runtime.pipelines import KernelKey
from .spec import KernelSpec

#: The family of every dense kernel key: profiler rows read "dense_linear/<kernel>".
FAMILY = "dense_linear"
#: Up to this many rows of x, gemv (weights streamed once per row of x) is chosen; above, gemm
#: (weights read once per 128 rows). A threshold, not a measured crossover: no GPU run of the
#: dense kernels has been made yet (the yardstick figures in bench/ time the fp32 variants).
GEMV_MAX_M = 8
#: The storage types and the weight file each one appends to a kernel.
WEIGHT_FILES = {"float32": "dense_weight_f32", "float16": "dense_weight_f16"}


@dataclasses.dataclass(frozen=True)
class DenseProblem:
    """x (M, K) against a dense (N, K) weight stored as `dtype` ("float32" or "float16")."""

    m: int
    n: int
    k: int
    dtype: str = "float32"
    has_bias: bool = False

    @property
    def row(self) -> int:
        """vec4 per weight row on the GPU: ceil(K / 4) (rows are zero-padded to a multiple of 4)."""
        return ceil_div(self.k, 4)

    @property
    def element_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    def with_n(self, n: int) -> "DenseProblem":
        """The same problem over n output features (one chunk of a weight split along N)."""
        return dataclasses.replace(self, n=n)


class DenseSpec(KernelSpec):
    """A dense kernel: `file` is its .wgsl entry file; the weight file follows (KernelKey.files)."""

    file: str = ""

    def key(self, p: DenseProblem) -> KernelKey:
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)), family=FAMILY,
                         files=(self.file, WEIGHT_FILES[p.dtype]))

    def params(self, p: DenseProblem, out_stride: int, out_offset: int) -> list[int]:
        """The Params words (every dense kernel shares the struct): m, n, k, row, out_stride,
        out_offset, n_tiles, tiles."""
        n_tiles, m_tiles = self.tiles(p)
        return [p.m, p.n, p.k, p.row, out_stride, out_offset, n_tiles, n_tiles * m_tiles]


def _wg_for(vec4s: int) -> int:
    """Invocations a workgroup spends on a row of `vec4s` vec4: a power of two in [32, 256],
    about one vec4 per invocation (so that short rows do not idle most of a 256-wide group)."""
    return max(32, min(256, 1 << max(0, (vec4s - 1).bit_length())))


class DenseGemv(DenseSpec):
    """Small M: a workgroup per (4 output features, one row of x), invocations stride K."""

    name = "gemv"
    file = "dense_gemv"

    def tiles(self, p):
        return ceil_div(p.n, 4), p.m

    def loop_trips(self, p):
        wg = _wg_for(p.k // 4)
        return ceil_div(p.k // 4, wg) + wg.bit_length()

    def constants(self, p):
        return (("WG", _wg_for(p.k // 4)),)

    def _shape_reason(self, p):
        return None if p.k % 4 == 0 else f"K={p.k} is not a multiple of 4 (gemv reads x as vec4)"


class DenseGemm(DenseSpec):
    """Large M: 128 x 128 output tiles, 8 x 8 per invocation, steps of 32 k (tiled.wgsl's design)."""

    name = "gemm"
    file = "dense_gemm"
    tile = 128

    def tiles(self, p):
        return ceil_div(p.n, self.tile), ceil_div(p.m, self.tile)

    def loop_trips(self, p):
        return ceil_div(p.k, 32) * (32 + 2)

    def constants(self, p):
        return (("K_TAIL", p.k % 32 != 0),)

    def _shape_reason(self, p):
        return None if p.k % 4 == 0 else f"K={p.k} is not a multiple of 4 (gemm reads x as vec4)"


class DenseGeneral(DenseSpec):
    """Any shape: a workgroup per (output feature, 4 rows of x), x read as scalars."""

    name = "general"
    file = "dense_general"
    wg = 64
    x_rows_per_tile = 4

    def tiles(self, p):
        return p.n, ceil_div(p.m, self.x_rows_per_tile)

    def loop_trips(self, p):
        return ceil_div(p.row, self.wg) + self.wg.bit_length()

    def constants(self, p):
        return (("WG", self.wg),)


#: Every dense kernel, by name.
DENSE_KERNELS: dict[str, DenseSpec] = {spec.name: spec for spec in (DenseGemv(), DenseGemm(), DenseGeneral())}


def select_dense(p: DenseProblem, caps, kernel: "str | DenseSpec | None" = None) -> DenseSpec:
    """The dense kernel for p on a device with capabilities `caps` (None: shape checks only).

    Args:
        kernel: a name from DENSE_KERNELS or a DenseSpec: that kernel, or UnsupportedShapeError
            saying why it cannot run p.
    Returns:
        else gemv for M <= GEMV_MAX_M, gemm above, general where neither runs (K % 4 != 0, or
        a loop budget the adapter cuts).
    """
    if kernel is not None:
        if isinstance(kernel, DenseSpec):
            spec = kernel
        elif kernel in DENSE_KERNELS:
            spec = DENSE_KERNELS[kernel]
        else:
            raise UnsupportedShapeError(f"unknown dense kernel {kernel!r}; known: {', '.join(DENSE_KERNELS)}")
        reason = spec.supports(p, caps)
        if reason:
            raise UnsupportedShapeError(f"dense kernel {spec.name!r} cannot run M={p.m} N={p.n} K={p.k}: {reason}")
        return spec
    order = ("gemv", "gemm", "general") if p.m <= GEMV_MAX_M else ("gemm", "gemv", "general")
    reasons = []
    for name in order:
        reason = DENSE_KERNELS[name].supports(p, caps)
        if reason is None:
            return DENSE_KERNELS[name]
        reasons.append(f"{name}: {reason}")
    raise UnsupportedShapeError(f"no dense kernel runs M={p.m} N={p.n} K={p.k}: " + "; ".join(reasons))
