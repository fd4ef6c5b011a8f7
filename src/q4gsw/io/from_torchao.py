"""torchao int4 weight-only tensors (plain packing) to PackedWeight, exactly or not at all."""

from __future__ import annotations

import numpy as np

from ..checks import describe, is_torch_tensor, positive_int
from ..errors import AsymmetricError, DTypeError, GroupSizeError, ShapeError, ValueRangeError
from ..format import QMAX, QMIN, PackedWeight


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
    q_bytes = _bytes(fn, "qdata", qdata)
    gs = positive_int(fn, "group_size", group_size)
    n, kb = q_bytes.shape
    k = 2 * kb if in_features is None else positive_int(fn, "in_features", in_features, ShapeError)
    if n == 0 or kb != (k + 1) // 2:
        raise ShapeError(fn, "qdata", f"(N >= 1, ceil(K/2) = {(k + 1) // 2}) for K={k}", describe(qdata))
    groups = -(-k // gs)
    s = _floats(fn, "scale", scale)
    if s.shape != (groups, n):
        raise GroupSizeError(fn, "scale", f"shape (ceil(K/group_size), N) = {(groups, n)}", describe(scale))
    lo = (q_bytes & 0x0F).astype(np.int8)
    hi = (q_bytes >> 4).astype(np.int8)
    nib = np.empty((n, 2 * kb), np.int8)
    nib[:, 0::2], nib[:, 1::2] = lo, hi
    q = np.where(nib >= 8, nib - 16, nib)[:, :k].astype(np.int8)  # two's complement int4
    if zero_point is not None:
        zp = _floats(fn, "zero_point", zero_point)
        if zp.shape != s.shape:
            raise ShapeError(fn, "zero_point", f"the shape of scale {s.shape}", describe(zero_point))
        if np.any(zp != 0):
            q = _carry_zero_point(fn, q, s, zp, gs)
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    if k % 2:
        u = np.concatenate([u, np.full((n, 1), 8, np.uint8)], axis=1)
    weights = (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)
    return PackedWeight(weights, s, gs, in_features=k)


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


def _bytes(fn: str, name: str, value) -> np.ndarray:
    """int8/uint8 torch tensor or ndarray -> 2-D uint8 ndarray of the same bits."""
    if is_torch_tensor(value):
        value = value.detach().cpu().contiguous()
        if str(value.dtype) not in ("torch.int8", "torch.uint8"):
            raise DTypeError(fn, name, "int8 or uint8 tensor", describe(value))
        value = value.numpy()
    if not isinstance(value, np.ndarray) or value.dtype not in (np.int8, np.uint8):
        raise DTypeError(fn, name, "int8 or uint8 array", describe(value))
    if value.ndim != 2:
        raise ShapeError(fn, name, "a 2-D array (N, ceil(K/2))", describe(value))
    return np.ascontiguousarray(value).view(np.uint8)


def _floats(fn: str, name: str, value) -> np.ndarray:
    """float16/bfloat16/float32 torch tensor or float16/float32 ndarray -> float32 (exact)."""
    if is_torch_tensor(value):
        if str(value.dtype) not in ("torch.float32", "torch.float16", "torch.bfloat16"):
            raise DTypeError(fn, name, "float32, float16 or bfloat16 tensor", describe(value))
        value = value.detach().cpu().float().contiguous().numpy()
    if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float16):
        raise DTypeError(fn, name, "float32 or float16 array (or a bfloat16 tensor)", describe(value))
    if value.ndim != 2:
        raise ShapeError(fn, name, "a 2-D array (ceil(K/group_size), N)", describe(value))
    if not np.isfinite(value).all():
        raise ValueRangeError(fn, name, "finite values", "NaN or Inf")
    return np.ascontiguousarray(value, dtype=np.float32)
