"""How MiniLM's 36 linears are quantized: round to nearest, or the calibrated "gptq" recipe
(searched static scales, GPTQ with them, bias correction; docs/quantization.md)."""

from __future__ import annotations

import numpy as np

from ...format import PackedWeight
from ...quantize import corrected_bias, quantize, quantize_gptq, search_scales

#: How MiniLM.load quantizes the 36 linears (see quantize_linears).
QUANTIZATION_METHODS = ("rtn", "gptq")


def quantize_linears(model, method: str, group_size: int, calibration):
    """Quantize model's 36 linears; every result is in the q4gsw format at `group_size`.

    Args:
        model: the MiniLM (its float tensors, linear names and linear_inputs()).
        method: one of QUANTIZATION_METHODS.
        group_size: elements of K per scale.
        calibration: list of str (method "gptq" only).
    Returns:
        (name -> PackedWeight, name -> float32 bias the quantized linear adds).
    """
    if method not in QUANTIZATION_METHODS:
        raise ValueError(f"method: expected one of {QUANTIZATION_METHODS}, got {method!r}")
    t = model.tensors
    biases = {name: t[name + ".bias"] for name in model.linear_names}
    if method == "rtn":
        return {name: quantize(t[name + ".weight"], group_size) for name in model.linear_names}, biases
    inputs = model.linear_inputs(list(calibration))
    packed = {}
    for name in model.linear_names:
        w, x = t[name + ".weight"], inputs.pop(name)
        packed[name] = quantize_gptq_static(w, x, group_size)
        biases[name] = corrected_bias(w, packed[name], x.mean(axis=0, dtype=np.float64), t[name + ".bias"])
    return packed, biases


def quantize_gptq_static(w: np.ndarray, x: np.ndarray, group_size: int = 128) -> PackedWeight:
    """The "gptq" recipe for one linear: search_scales weighted by E[x_k^2], then GPTQ with those
    scales fixed (static groups, columns in order).

    Args:
        w: (N, K) float32 weight.
        x: (S, K) float inputs of the linear on calibration data.
        group_size: elements of K per scale.
    Returns:
        PackedWeight.
    """
    importance = np.einsum("sk,sk->k", x, x, dtype=np.float64) / x.shape[0]
    return quantize_gptq(w, x, group_size, scales=search_scales(w, group_size, importance=importance))
