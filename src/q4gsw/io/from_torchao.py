"""torchao int4 weight tensors to PackedWeight, exactly or not at all.

Read by type name (torchao is not imported here): IntxUnpackedToInt8Tensor (what torchao's
IntxWeightOnlyConfig makes, on any device), and Int4Tensor with the plain packing (what
Int4WeightOnlyConfig(int4_packing_format="plain") makes, on CUDA with mslk). Every other
torchao tensor is refused with the reason and the way to convert.
"""

from __future__ import annotations

import numpy as np

from ..arith import ceil_div
from ..checks import describe, float_array, foreign_array, positive_int
from ..errors import AsymmetricError, DTypeError, FormatError, GroupSizeError, ShapeError
from ..format import QMAX, QMIN, PackedWeight, pack_int4, unpack_nibbles

#: How to get a weight q4gsw reads from a float model with torchao (CPU or CUDA).
CONVERT_HINT = (
    "quantize the float model with torchao's IntxWeightOnlyConfig(weight_dtype=torch.int4, "
    "granularity=PerGroup(group_size), mapping_type=MappingType.SYMMETRIC) and pass module.weight, "
    "or quantize the float weight with q4gsw.quantize (torchao's symmetric rule; from "
    "weight.dequantize() it re-rounds, so it is not the same weight)"
)
#: torchao tensor types q4gsw knows and refuses, with the reason.
REFUSED = {
    "Int4TilePackedTo4dTensor": "tinygemm's tiled CUDA layout (int4_packing_format='tile_packed_to_4d'), "
                                "unpacked only by CUDA kernels, with affine zero points (min + 8 * scale)",
    "Int4PreshuffledTensor": "mslk's preshuffled layout for its H100 kernels (int4_packing_format='preshuffled')",
    "Int4PlainInt32Tensor": "the XPU/NPU layout (int4_packing_format='plain_int32'), quantized asymmetrically "
                            "(unsigned 0..15 with an integer zero point)",
    "IntxOpaqueTensor": "packed for torchao's CPU kernels (an opaque intx_packing_format)",
}


def from_torchao(weight, *, ignore_activation_quantization: bool = False) -> PackedWeight:
    """Convert a torchao int4 weight tensor (e.g. `model.linear.weight` after torchao's
    `quantize_`) to a PackedWeight, exactly; q4gsw.linear on it equals torchao's forward to
    fp32 rounding.

    Supported:
        IntxUnpackedToInt8Tensor: from IntxWeightOnlyConfig(weight_dtype=torch.int4 (or int1-int3),
            granularity=PerGroup(g) or PerAxis(0), mapping_type=MappingType.SYMMETRIC), which runs
            on the CPU. value = (q - zero_point) * scale per group of K; carried exactly when
            every zero point is an integer and every q - zero_point fits [-8, 7] (SYMMETRIC gives
            zero points 0). See from_torchao_intx.
        Int4Tensor, plain packing: from Int4WeightOnlyConfig(int4_packing_format="plain") (CUDA,
            mslk). value = q * scale + zero_point (a float zero point); carried exactly when every
            zero point is 0 or c * scale with q + c in [-8, 7] (torchao's own qparams are affine,
            min + 8 * scale, and are refused). See from_torchao_plain.

    Args:
        weight: the torchao tensor (any device; read on the CPU).
        ignore_activation_quantization: import the weight of a tensor whose torchao forward
            also quantizes the activations (Int8DynamicActivationIntxWeightConfig); q4gsw runs
            it weight-only, so the outputs differ from torchao's by the activation rounding.
    Returns:
        PackedWeight with scales (ceil(K/group_size), N) float32.
    Raises:
        DTypeError for something that is not a torchao tensor; FormatError naming the type, the
        supported types and how to convert, for any other torchao tensor; AsymmetricError for
        zero points the symmetric format cannot carry.
    """
    fn = "from_torchao"
    names = [cls.__name__ for cls in type(weight).__mro__]
    if "IntxUnpackedToInt8Tensor" in names:
        return _from_intx(fn, weight, ignore_activation_quantization)
    if "Int4Tensor" in names:
        return _from_int4_tensor(fn, weight)
    supported = "IntxUnpackedToInt8Tensor (int1-int4, block_size (1, group_size)) or Int4Tensor (plain packing)"
    if not type(weight).__module__.startswith("torchao"):
        raise DTypeError(fn, "weight", f"a torchao weight tensor: {supported}", describe(weight))
    kind = type(weight).__name__
    why = REFUSED.get(kind, "not a symmetric int4 weight layout q4gsw reads")
    raise FormatError(fn, "weight", supported, f"a {kind}: {why}; to convert, {CONVERT_HINT}")


def _from_intx(fn: str, weight, ignore_activation_quantization: bool) -> PackedWeight:
    bits = str(weight.target_dtype).removeprefix("torch.")
    if bits not in ("int1", "int2", "int3", "int4"):
        raise FormatError(fn, "weight", "an IntxUnpackedToInt8Tensor with target_dtype int1-int4 (values in [-8, 7])",
                          f"target_dtype {weight.target_dtype}; to convert, {CONVERT_HINT}")
    act = getattr(weight, "activation_quantization", None)
    if act is not None and not ignore_activation_quantization:
        raise FormatError(
            fn, "weight", "a weight-only IntxUnpackedToInt8Tensor (activation_quantization None)",
            f"activation_quantization {getattr(act, 'value', act)!r}: torchao's forward quantizes the activations "
            "too, q4gsw runs weight-only; pass ignore_activation_quantization=True to import the weight anyway, "
            "or quantize with IntxWeightOnlyConfig")
    block = [int(b) for b in weight.block_size]
    shape = tuple(int(s) for s in weight.shape)
    if len(shape) != 2 or block[0] != 1:
        raise ShapeError(fn, "weight", "a 2-D weight with block_size [1, group_size]",
                         f"shape {shape}, block_size {block}")
    return from_torchao_intx(weight.qdata, weight.scale, weight.zero_point, group_size=block[1], function=fn)


def _from_int4_tensor(fn: str, weight) -> PackedWeight:
    missing = [a for a in ("qdata", "scale", "zero_point", "block_size", "shape") if not hasattr(weight, a)]
    if missing:
        raise DTypeError(fn, "weight", "a torchao Int4Tensor (plain packing format)",
                         f"{type(weight).__name__} without {missing}")
    if getattr(weight, "act_pre_scale", None) is not None:
        raise FormatError(fn, "weight", "an Int4Tensor without act_pre_scale",
                          "an act_pre_scale (torchao's forward scales the activations per input feature, "
                          "which int4 groups along K cannot absorb exactly)")
    block = list(weight.block_size)
    shape = tuple(int(s) for s in weight.shape)
    if len(shape) != 2 or len(block) != 2 or block[0] != 1:
        raise ShapeError(fn, "weight", "a 2-D weight with block_size [1, group_size]",
                         f"shape {shape}, block_size {block}")
    return from_torchao_plain(weight.qdata, weight.scale, weight.zero_point,
                              group_size=block[1], in_features=shape[1], function=fn)


def from_torchao_intx(qdata, scale, zero_point=None, *, group_size: int,
                      function: str = "from_torchao_intx") -> PackedWeight:
    """Convert the tensors of torchao's IntxUnpackedToInt8Tensor (or a state dict that holds
    them as plain tensors) to a PackedWeight, exactly.

    The value of element (n, k) is (q - zero_point[n, g]) * scale[n, g], g = k // group_size
    (torchao's dequantize_affine). It is carried as q' = q - zero_point when every zero point
    is an integer and every q' is in [-8, 7]; otherwise AsymmetricError.

    Args:
        qdata: (N, K) int8 (torch or numpy), one value per element.
        scale: (N, K / group_size) float32/float16 (or a bfloat16 torch tensor).
        zero_point: same shape as scale, int8 or float, or None (zero).
        group_size: elements of K per scale; divides K.
    Returns:
        PackedWeight with scales (K/group_size, N) float32.
    """
    fn = function
    q = foreign_array(fn, "qdata", qdata, ("int8",), ndim=2)
    gs = positive_int(fn, "group_size", group_size)
    n, k = q.shape
    if n == 0 or k == 0 or k % gs:
        raise ShapeError(fn, "qdata", f"(N >= 1, K >= 1) with K a multiple of group_size {gs}", describe(qdata))
    groups = k // gs
    s = float_array(fn, "scale", scale, ndim=2)
    if s.shape != (n, groups):
        raise GroupSizeError(fn, "scale", f"shape (N, K/group_size) = {(n, groups)}", describe(scale))
    shifted = q.astype(np.int16)
    if zero_point is not None:
        zp = foreign_array(fn, "zero_point", zero_point, ("int8", "int16", "int32", "float32", "float16", "bfloat16"),
                           ndim=2).astype(np.float64)
        if zp.shape != s.shape:
            raise ShapeError(fn, "zero_point", f"the shape of scale {s.shape}", describe(zero_point))
        if not np.isfinite(zp).all() or np.any(zp != np.round(zp)):
            row, g = np.argwhere(~np.isfinite(zp) | (zp != np.round(zp)))[0]
            raise AsymmetricError(fn, "zero_point", "integer zero points (torchao's integer domain)",
                                  f"{zp[row, g]!r} at (n={row}, group={g})")
        shifted = shifted - np.repeat(zp.astype(np.int16), gs, axis=1)
    bad = (shifted < QMIN) | (shifted > QMAX)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise AsymmetricError(
            fn, "zero_point", f"q - zero_point in [{QMIN}, {QMAX}]",
            f"q - zero_point = {int(shifted[row, col])} at (n={row}, k={col}) ({int(bad.sum())} elements): the "
            "weight is asymmetric beyond the int4 range; quantize with mapping_type=MappingType.SYMMETRIC")
    return PackedWeight(pack_int4(shifted), np.ascontiguousarray(s.T), gs, in_features=k)


def from_torchao_plain(qdata, scale, zero_point=None, *, group_size: int, in_features: int | None = None,
                       function: str = "from_torchao_plain") -> PackedWeight:
    """Convert the tensors of torchao's plain-packed Int4Tensor (or a state dict that holds
    them as plain tensors) to a PackedWeight, exactly.

    The value of element (n, k) is q * scale[g, n] + zero_point[g, n], g = k // group_size,
    q the signed nibble. It is carried exactly when, in every group, zero_point is 0, or is
    an exact integer multiple c * scale with q + c in [-8, 7] for every q of the group
    (then the stored q becomes q + c). Otherwise AsymmetricError: a symmetric format
    (value = q * scale) cannot represent an affine group without requantizing.

    torchao's plain layout (`Int4PackingFormat.PLAIN`, produced by mslk/fbgemm's
    `int4_row_quantize_zp` + `pack_int4`): `qdata` (N, K/2) int8, two's-complement int4 with
    even k in the low nibble; `scale` and `zero_point` (K/group_size, N) in the weight's
    float dtype; value = q * scale + zero_point (zero_point in the float domain, as
    torchao's `_dequantize_affine_tinygemm` with the unsigned nibble u = q + 8 computes
    (u - 8) * scale + zero_point).

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
            f"value = q * scale cannot carry; to convert, {CONVERT_HINT}",
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
            f"beyond the int4 range; to convert, {CONVERT_HINT}",
        )
    return shifted.astype(np.int8)
