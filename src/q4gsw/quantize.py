"""Float weights to PackedWeight: torchao's symmetric int4 per-group rule, and its error."""

from __future__ import annotations

import dataclasses

import numpy as np

from .checks import as_array, describe, is_torch_tensor, positive_int
from .errors import DTypeError, ShapeError, ValueRangeError
from .format import QMAX, QMIN, PackedWeight, pack_int4

_EPS = float(np.finfo(np.float32).eps)


def quantize(w: np.ndarray, group_size: int = 128) -> PackedWeight:
    """Quantize a float weight to 4-bit groupwise-symmetric (round to nearest).

    The rule is torchao's `choose_qparams_affine` with `MappingType.SYMMETRIC`,
    quant_min=-8, quant_max=7 (as used by its int4 weight-only configs):
    per group of `group_size` consecutive k, `amax = max(|min(w, 0)|, max(w, 0))`,
    `scale = max(amax / ((7 - (-8)) / 2), eps)` = `max(amax / 7.5, eps)` with eps the
    float32 machine epsilon, zero point 0, and `q = clamp(round(w * (1 / scale)), -8, 7)`
    (round half to even, as torch.round). The last group of a K that group_size does not
    divide is the remainder of the row.

    Args:
        w: (N, K) float32 weight (row n = output feature n); float64 is also accepted.
        group_size: elements of K per scale, > 0.
    Returns:
        PackedWeight with scales of shape (ceil(K/group_size), N).
    """
    fn = "quantize"
    if is_torch_tensor(w):
        w = as_array(fn, "w", w, np.float32)
    elif not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64):
        raise DTypeError(fn, "w", "float32 or float64 ndarray (or float32 torch.Tensor)", describe(w))
    if w.ndim != 2 or 0 in w.shape:
        raise ShapeError(fn, "w", "(N, K) array with N, K >= 1", describe(w))
    if not np.isfinite(w).all():
        raise ValueRangeError(fn, "w", "finite values", "NaN or Inf in the weight")
    if w.dtype == np.float64 and np.abs(w).max() > np.finfo(np.float32).max:
        raise ValueRangeError(fn, "w", "values within float32 range", f"max |w| = {np.abs(w).max():.3g}")
    gs = positive_int(fn, "group_size", group_size)
    n, k = w.shape
    groups = -(-k // gs)
    padded = np.zeros((n, groups * gs), np.float32)
    padded[:, :k] = w
    blocks = padded.reshape(n, groups, gs)
    amax = np.maximum(-np.minimum(blocks.min(axis=2), 0), np.maximum(blocks.max(axis=2), 0))
    scale = np.maximum(amax / np.float32((QMAX - QMIN) / 2), np.float32(_EPS)).astype(np.float32)
    inv = (np.float32(1.0) / scale)[:, :, None]
    q = np.clip(np.round(blocks * inv), QMIN, QMAX).astype(np.int8).reshape(n, groups * gs)[:, :k]
    return PackedWeight(pack_int4(q), np.ascontiguousarray(scale.T), gs, in_features=k)


@dataclasses.dataclass(frozen=True)
class QuantizationError:
    """How far dequantize(quantize(w)) is from w."""

    relative_frobenius: float  # ||w - wq||_F / ||w||_F
    max_abs: float
    max_abs_over_scale: float  # max |w - wq| / scale; <= 0.5 (+-amax land exactly half a step off)

    def __str__(self) -> str:
        return (
            f"relative error {self.relative_frobenius:.4%}, max |err| {self.max_abs:.3g} "
            f"({self.max_abs_over_scale:.3f} of a step)"
        )


def quantization_error(w: np.ndarray, weight: PackedWeight) -> QuantizationError:
    """Compare a float weight with its PackedWeight.

    Args:
        w: (N, K) float weight that was quantized.
        weight: its PackedWeight.
    """
    w64 = np.asarray(w, np.float64)
    if w64.shape != (weight.out_features, weight.in_features):
        raise ShapeError(
            "quantization_error", "w", f"shape {(weight.out_features, weight.in_features)}", describe(w)
        )
    diff = np.abs(w64 - weight.dequantize())
    scale_nk = weight.scales[np.arange(weight.in_features) // weight.group_size, : weight.out_features].T
    norm = np.linalg.norm(w64)
    return QuantizationError(
        relative_frobenius=float(np.linalg.norm(diff) / norm) if norm else 0.0,
        max_abs=float(diff.max()),
        max_abs_over_scale=float((diff / scale_nk).max()),
    )
