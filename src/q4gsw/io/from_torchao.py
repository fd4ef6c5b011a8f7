"""torchao int4 weight-only tensors (plain packing) to PackedWeight, exactly or not at all."""

from __future__ import annotations

import numpy as np

from ..arith import ceil_div
from ..checks import describe, float_array, foreign_array, positive_int
from ..errors import AsymmetricError, DTypeError, GroupSizeError, ShapeError
from ..format import QMAX, QMIN, PackedWeight, pack_int4, unpack_nibbles


def from_torchao(weight) -> PackedWeight:
    """Convert a torchao `Int4Tensor` (Int4WeightOnlyConfig, int4_packing_format="plain").

    torchao's plain layout (`Int4PackingFormat.PLAIN`, produced by mslk/fbgemm's
    `int4_row_quantize_zp` + `pack_int4`): `qdata` (N, K/2) int8, two's-complement int4 with
    even k in the low nibble; `scale` and `zero_point` (K/group_size, N) in the weight's
    float dtype; value = q * scale + zero_point (zero_point in the float domain, as
    torchao's `_dequantize_affine_tinygemm` with the unsigned nibble u = q + 8 computes
    (u - 8) * scale + zero_point). See from_torchao_plain for when this is exact.

    Args:
        weight: a 2-D torchao Int4Tensor (anything with qdata, scale, zero_point, block_size
            and shape attributes of that meaning).
    Returns:
        PackedWeight with scales (ceil(K/group_size), N) float32.
    """
    fn = "from_torchao"
    missing = [a for a in ("qdata", "scale", "zero_point", "block_size", "shape") if not hasattr(weight, a)]
    if missing:
        raise DTypeError(fn, "weight", "a torchao Int4Tensor (plain packing format)",
                         f"{type(weight).__name__} without {missing}")
    block = list(weight.block_size)
    shape = tuple(int(s) for s in weight.shape)
    if len(shape) != 2 or len(block) != 2 or block[0] != 1:
        raise ShapeError(fn, "weight", "a 2-D weight with block_size [1, group_size]",
                         f"shape {shape}, block_size {block}")
    return from_torchao_plain(weight.qdata, weight.scale, weight.zero_point,
                              group_size=block[1], in_features=shape[1], function=fn)


def from_torchao_plain(qdata, scale, zero_point=None, *, group_size: int, in_features: int | None = None,
                       function: str = "from_torchao_plain") -> PackedWeight:
    """Convert torchao's plain int4 tensors to a PackedWeight, exactly.

    The value of element (n, k) is q * scale[g, n] + zero_point[g, n], g = k // group_size,
    q the signed nibble. It is carried exactly when, in every group, zero_point is 0, or is
    an exact integer multiple c * scale with q + c in [-8, 7] for every q of the group
    (then the stored q becomes q + c). Otherwise AsymmetricError: a symmetric format
    (value = q * scale) cannot represent an affine group without requantizing.

    Args:
        qdata: (N, ceil(K/2)) int8 or uint8 (torch or numpy), even k in the low nibble.
        scale: (ceil(K/group_size), N) float32/float16 (or a bfloat16 torch tensor).
        zero_point: same shape as scale, or None (zero).
        group_size: elements of K per scale.
        in_features: K (default 2 * qdata.shape[1]).
    Returns:
        PackedWeight with scales (ceil(K/group_size), N) float32.
    """
    fn = function
    q_bytes = foreign_array(fn, "qdata", qdata, ("int8", "uint8"), ndim=2).view(np.uint8)
    gs = positive_int(fn, "group_size", group_size)
    n, kb = q_bytes.shape
    k = 2 * kb if in_features is None else positive_int(fn, "in_features", in_features, ShapeError)
    if n == 0 or kb != (k + 1) // 2:
        raise ShapeError(fn, "qdata", f"(N >= 1, ceil(K/2) = {(k + 1) // 2}) for K={k}", describe(qdata))
    groups = ceil_div(k, gs)
    s = float_array(fn, "scale", scale, ndim=2)
    if s.shape != (groups, n):
        raise GroupSizeError(fn, "scale", f"shape (ceil(K/group_size), N) = {(groups, n)}", describe(scale))
    nib = unpack_nibbles(q_bytes, k).astype(np.int8)
    q = np.where(nib >= 8, nib - 16, nib).astype(np.int8)  # two's complement int4
    if zero_point is not None:
        zp = float_array(fn, "zero_point", zero_point, ndim=2)
        if zp.shape != s.shape:
            raise ShapeError(fn, "zero_point", f"the shape of scale {s.shape}", describe(zero_point))
        if np.any(zp != 0):
            q = _carry_zero_point(fn, q, s, zp, gs)
    return PackedWeight(pack_int4(q), s, gs, in_features=k)


def _carry_zero_point(fn: str, q: np.ndarray, s: np.ndarray, zp: np.ndarray, gs: int) -> np.ndarray:
    """q + c per group where zero_point == c * scale exactly (integer c) and q + c fits int4."""
    s64, zp64 = s.astype(np.float64), zp.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(s64 != 0, np.round(zp64 / s64), 0.0)
    inexact = (c * s64 != zp64)
    if inexact.any():
        g, col = np.argwhere(inexact)[0]
        raise AsymmetricError(
            fn, "zero_point", "0, or an exact integer multiple of the group's scale",
            f"zero_point {float(zp[g, col])!r} with scale {float(s[g, col])!r} (group {g}, row {col}; "
            f"{int(inexact.sum())} such groups): the weight is asymmetric (affine), which "
            "value = q * scale cannot carry; quantize the float weight with q4gsw.quantize instead",
        )
    n, k = q.shape
    c_nk = c.T[:, np.arange(k) // gs].astype(np.int16)  # (N, K)
    shifted = q.astype(np.int16) + c_nk
    bad = (shifted < QMIN) | (shifted > QMAX)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise AsymmetricError(
            fn, "zero_point", f"zero_point / scale = c with q + c in [{QMIN}, {QMAX}]",
            f"q + c = {int(shifted[row, col])} at (n={row}, k={col}): the weight is asymmetric (affine) "
            "beyond the int4 range; quantize the float weight with q4gsw.quantize instead",
        )
    return shifted.astype(np.int8)
