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


def quantize_gptq(w: np.ndarray, x: np.ndarray, group_size: int = 128, *, damp: float = 0.01) -> PackedWeight:
    """Quantize with GPTQ (Frantar et al., 2022): same format and scale rule as quantize(),
    but each column's rounding error is pushed onto the columns not yet quantized, weighted
    by the inverse Hessian of the layer's inputs, so that x @ w.T is kept rather than w.

    Columns are taken in order (no reordering); a group's scale is chosen (torchao's rule,
    as in quantize) from the error-updated weights when the group starts.

    Args:
        w: (N, K) float weight.
        x: (S, K) float inputs of the layer on calibration data (S samples, S >= 1).
        group_size: elements of K per scale.
        damp: added to the Hessian's diagonal, as a fraction of its mean.
    Returns:
        PackedWeight (dequantize() differs from quantize()'s, x @ W.T usually less).
    """
    fn = "quantize_gptq"
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64) or w.ndim != 2 or 0 in w.shape:
        raise DTypeError(fn, "w", "(N, K) float32 or float64 ndarray", describe(w))
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) or x.ndim != 2 \
            or x.shape[1] != w.shape[1] or x.shape[0] == 0:
        raise ShapeError(fn, "x", f"(S, K={w.shape[1]}) float array with S >= 1", describe(x))
    if not (np.isfinite(w).all() and np.isfinite(x).all()):
        raise ValueRangeError(fn, "w", "finite w and x", "NaN or Inf")
    gs = positive_int(fn, "group_size", group_size)
    n, k = w.shape
    x64 = x.astype(np.float64)
    hessian = x64.T @ x64 / x64.shape[0]
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    hessian += damp * np.mean(np.diag(hessian)) * np.eye(k)
    # upper Cholesky factor of H^-1: row i holds how column i's error spreads to columns > i
    hinv = np.linalg.cholesky(np.linalg.inv(hessian)).T
    work = w.astype(np.float64)
    work[:, dead] = 0.0
    groups = -(-k // gs)
    q = np.zeros((n, k), np.int8)
    scales = np.zeros((groups, n), np.float32)
    for g in range(groups):
        b0, b1 = g * gs, min((g + 1) * gs, k)
        block = work[:, b0:b1].copy()
        amax = np.maximum(-np.minimum(block.min(axis=1), 0), np.maximum(block.max(axis=1), 0))
        s = np.maximum(amax / ((QMAX - QMIN) / 2), _EPS).astype(np.float32)
        scales[g] = s
        inv = (np.float32(1.0) / s).astype(np.float64)
        errors = np.zeros_like(block)
        for j in range(b1 - b0):
            col = block[:, j]
            qj = np.clip(np.round(col * inv), QMIN, QMAX)
            q[:, b0 + j] = qj
            err = (col - qj * s) / hinv[b0 + j, b0 + j]
            block[:, j:] -= np.outer(err, hinv[b0 + j, b0 + j:b1])
            errors[:, j] = err
        work[:, b1:] -= errors @ hinv[b0:b1, b1:]
    return PackedWeight(pack_int4(q), np.ascontiguousarray(scales), gs, in_features=k)
