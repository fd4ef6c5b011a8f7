"""MLC LLM group-quantized weights (q4f16_1, q4f32_1, q4f16_0, q4f32_0) to PackedWeight."""

from __future__ import annotations

import numpy as np

from ..arith import ceil_div
from ..checks import describe, float_array, foreign_array, positive_int
from ..errors import FormatError, GroupSizeError, ShapeError, ValueRangeError
from ..format import PackedWeight, pack_nibbles

#: MLC's GroupQuantize presets (mlc_llm/quantization/quantization.py): group size, linear
#: weight layout, scale dtype. All are int4 in uint32 storage, 8 elements per word.
MLC_SCHEMES = {
    "q4f16_1": (32, "NK", np.float16),
    "q4f32_1": (32, "NK", np.float32),
    "q4f16_0": (32, "KN", np.float16),
    "q4f32_0": (32, "KN", np.float32),
}
#: MLC's max_int_value for int4: 2 ** (4 - 1) - 1. Stored u = round(w / scale + 7) in [0, 14].
MLC_OFFSET = 7


def from_mlc(q_weight, q_scale, *, in_features: int, scheme: str = "q4f16_1") -> PackedWeight:
    """Convert an MLC group-quantized linear weight (`q_weight`, `q_scale`) exactly.

    MLC's rule (mlc_llm/quantization/group_quantization.py, GroupQuantize._dequantize and
    utils.convert_uint_to_float): element i of a group-axis run sits in uint32 word i // 8
    at bits 4 * (i % 8); value = (u - 7) * scale[group]. Our q is u - 7 and our stored
    nibble q + 8 = u + 1, so u = 15 (which MLC's quantizer never writes: it clips to
    [0, 14]) has no int4 equivalent and raises ValueRangeError. Scales become float32
    exactly. MLC computes the product in the model dtype (fp16 for q4f16_*), which can round
    it; PackedWeight.dequantize() is the exact product, which fp32 kernels compute exactly.

    Args:
        q_weight: uint32 (N, ceil(K/group_size) * group_size / 8) for the "NK" layout
            (q4f*_1), or its transpose for "KN" (q4f*_0); numpy or torch (int32 bits accepted).
        q_scale: (N, ceil(K/group_size)) for "NK", transposed for "KN"; float16 or float32.
        in_features: K (the word padding past K is dropped).
        scheme: one of MLC_SCHEMES.
    Returns:
        PackedWeight with scales (ceil(K/32), N) float32, group size 32.
    """
    fn = "from_mlc"
    if scheme not in MLC_SCHEMES:
        raise FormatError(fn, "scheme", f"one of {sorted(MLC_SCHEMES)}", repr(scheme))
    gs, layout, scale_dtype = MLC_SCHEMES[scheme]
    k = positive_int(fn, "in_features", in_features, ShapeError)
    words = foreign_array(fn, "q_weight", q_weight, ("uint32", "int32"), ndim=2).view(np.uint32)
    scales = float_array(fn, "q_scale", foreign_array(fn, "q_scale", q_scale, (np.dtype(scale_dtype).name,), ndim=2))
    if layout == "KN":
        words, scales = words.T, scales.T
    groups = ceil_div(k, gs)
    n = words.shape[0]
    if n == 0 or words.shape[1] != groups * gs // 8:
        raise ShapeError(fn, "q_weight", f"{groups * gs // 8} words per output feature for K={k} ({layout})",
                         describe(q_weight))
    if scales.shape != (n, groups):
        raise GroupSizeError(fn, "q_scale", f"{(n, groups)} ({layout}: N, ceil(K/{gs}))", describe(q_scale))
    shifts = (4 * np.arange(8, dtype=np.uint32))
    u = ((words[:, :, None] >> shifts) & 0xF).astype(np.uint8).reshape(n, -1)[:, :k]
    if (u == 15).any():
        row, col = np.argwhere(u == 15)[0]
        raise ValueRangeError(fn, "q_weight", "stored values u in [0, 14] (value (u - 7) * scale)",
                              f"u = 15 at (n={row}, k={col}), i.e. q = 8, outside int4 [-8, 7]")
    weights = pack_nibbles(u + 1)  # stored q + 8 = (u - 7) + 8
    return PackedWeight(weights, np.ascontiguousarray(scales.T.astype(np.float32)), gs, in_features=k)
