"""ONNX Runtime's com.microsoft MatMulNBits (bits=4, zero point 8) to PackedWeight."""

from __future__ import annotations

import os

import numpy as np

from ..arith import ceil_div
from ..checks import describe, existing_file, float_array, positive_int
from ..errors import AsymmetricError, DTypeError, FormatError, ShapeError
from ..format import PackedWeight, unpack_nibbles
from ._deps import require
from .report import ConvertedTensor, Imported, note_skipped

# The operator, per ONNX Runtime's docs/ContribOperators.md, "com.microsoft.MatMulNBits":
#   B: uint8 (N, k_blocks, blob_size), k_blocks = ceil(K / block_size),
#      blob_size = block_size * bits / 8, packed along K; for 4 bits the first element of a
#      byte is its low nibble, the second its high nibble.
#   scales: (N, k_blocks) (older exporters: flat N * k_blocks), the type of A.
#   zero_points (optional): packed uint8 (N, ceil(k_blocks * bits / 8)) with B's packing,
#      or unpacked in A's type (N, k_blocks); absent means 2 ** (bits - 1) = 8 for 4 bits.
#   dequantized_weight = (quantized_weight - zero_point) * scale.
# With zero point 8, q = nibble - 8 and our stored nibble q + 8 is the nibble itself: B's
# bytes are copied unchanged (blocks are whole bytes since block_size >= 16).
DEFAULT_ZERO_POINT = 8


def from_matmul_nbits(b, scales, zero_points=None, *, in_features: int, out_features: int,
                      block_size: int, bits: int = 4) -> PackedWeight:
    """Convert MatMulNBits' B, scales and zero_points (numpy arrays) exactly.

    Args:
        b: uint8 (N, k_blocks, block_size / 2) (or any shape of that size).
        scales: float32/float16 (N, k_blocks) or flat (N * k_blocks,).
        zero_points: None, packed uint8 (N, ceil(k_blocks / 2)), or float (N, k_blocks);
            every zero point must be 8 (otherwise AsymmetricError).
        in_features: the K attribute.
        out_features: the N attribute.
        block_size: the block_size attribute (a power of two >= 16).
        bits: the bits attribute; only 4.
    Returns:
        PackedWeight with weights (N, ceil(K/2)), scales (k_blocks, N) float32,
        group_size = block_size.
    """
    fn = "from_matmul_nbits"
    if bits != 4:
        raise FormatError(fn, "bits", "4 (q4gsw holds int4 weights)", repr(bits))
    k = positive_int(fn, "in_features", in_features, ShapeError)
    n = positive_int(fn, "out_features", out_features, ShapeError)
    bs = positive_int(fn, "block_size", block_size)
    if bs < 16 or bs & (bs - 1):
        raise FormatError(fn, "block_size", "a power of two >= 16 (the operator's rule)", repr(bs))
    k_blocks, blob = ceil_div(k, bs), bs // 2
    if not isinstance(b, np.ndarray) or b.dtype != np.uint8:
        raise DTypeError(fn, "b", "uint8 ndarray", describe(b))
    if b.size != n * k_blocks * blob:
        raise ShapeError(fn, "b", f"(N, k_blocks, blob_size) = {(n, k_blocks, blob)}", describe(b))
    s = float_array(fn, "scales", scales)
    if s.size != n * k_blocks:
        raise ShapeError(fn, "scales", f"(N, k_blocks) = {(n, k_blocks)} elements", describe(scales))
    s = s.reshape(n, k_blocks)
    if zero_points is not None:
        _check_zero_points(fn, zero_points, n, k_blocks)
    weights = np.ascontiguousarray(b.reshape(n, k_blocks * blob)[:, : (k + 1) // 2])
    return PackedWeight(weights, np.ascontiguousarray(s.T.astype(np.float32)), bs, in_features=k)


def read_onnx(model) -> Imported:
    """Convert every MatMulNBits node of an ONNX model whose B, scales and zero_points are
    initializers.

    Initializers that no converted node uses (float MatMul/Gemm weights, biases, norms, other
    quantized operators' data) are left out: each is listed in the result's `.skipped` with
    the operators that use it, and one warning names them.

    Args:
        model: a path to a .onnx file or an onnx.ModelProto.
    Returns:
        Imported: {B's initializer name: PackedWeight} in graph order, with `.skipped`.
    """
    fn = "read_onnx"
    onnx = require("onnx", fn)
    from google.protobuf.message import DecodeError  # onnx's own dependency
    from onnx import numpy_helper

    if isinstance(model, (str, os.PathLike)):
        path = existing_file(fn, "model", model)
        try:
            model = onnx.load(path)
        except (DecodeError, OSError, ValueError) as exc:
            raise FormatError(fn, "model", "an ONNX file", f"{path!r} ({exc})") from exc
    elif not isinstance(model, onnx.ModelProto):
        raise FormatError(fn, "model", "a path or onnx.ModelProto", describe(model))
    inits = {t.name: t for t in model.graph.initializer}
    out, used = Imported(), set()
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * 3
        b_name, s_name, z_name = inputs[1], inputs[2], inputs[3]
        for name in (b_name, s_name) + ((z_name,) if z_name else ()):
            if name not in inits:
                raise FormatError(fn, "model", f"node {node.name!r} input {name!r} as an initializer",
                                  "a runtime input (only constant weights can be converted)")
        if attrs.get("weight_prepacked", 0):
            raise FormatError(fn, "model", f"node {node.name!r} with plain B", "weight_prepacked=1")
        if len(node.input) > 4 and node.input[4]:
            raise FormatError(fn, "model", f"node {node.name!r} without g_idx", "a g_idx input (deprecated)")
        used.update((b_name, s_name, z_name))
        zp = numpy_helper.to_array(inits[z_name]) if z_name else None
        out[b_name] = from_matmul_nbits(
            numpy_helper.to_array(inits[b_name]), numpy_helper.to_array(inits[s_name]), zp,
            in_features=attrs.get("K"), out_features=attrs.get("N"),
            block_size=attrs.get("block_size"), bits=attrs.get("bits", 4),
        )
    if not out:
        raise FormatError(fn, "model", "a graph with MatMulNBits nodes", "none")
    users: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    for t in model.graph.initializer:
        if t.name not in used:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
            ops = ", ".join(sorted(set(users.get(t.name, [])))) or "no node"
            out.skipped.append(ConvertedTensor(t.name, "skipped", f"{dtype} {list(t.dims)} used by {ops}: "
                                               "not a MatMulNBits weight"))
    return note_skipped(fn, "the model", out, len(model.graph.initializer))


def _check_zero_points(fn: str, zp, n: int, k_blocks: int) -> None:
    """Raise AsymmetricError unless every zero point is 8."""
    if not isinstance(zp, np.ndarray):
        raise DTypeError(fn, "zero_points", "ndarray", describe(zp))
    if zp.dtype == np.uint8:
        packed_cols = ceil_div(k_blocks, 2)
        if zp.size != n * packed_cols:
            raise ShapeError(fn, "zero_points", f"packed (N, ceil(k_blocks/2)) = {(n, packed_cols)}", describe(zp))
        p = zp.reshape(n, packed_cols)
        nib = unpack_nibbles(p, k_blocks)
    else:
        nib = float_array(fn, "zero_points", zp)
        if nib.size != n * k_blocks:
            raise ShapeError(fn, "zero_points", f"(N, k_blocks) = {(n, k_blocks)}", describe(zp))
        nib = nib.reshape(n, k_blocks)
    bad = nib != DEFAULT_ZERO_POINT
    if bad.any():
        row, blk = np.argwhere(bad)[0]
        raise AsymmetricError(
            fn, "zero_points", f"{DEFAULT_ZERO_POINT} everywhere (symmetric int4)",
            f"{nib[row, blk].item()!r} at (n={row}, block={blk}) ({int(bad.sum())} blocks): value = q * scale "
            "cannot carry another zero point exactly; dequantize and use q4gsw.quantize instead",
        )
