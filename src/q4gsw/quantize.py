"""Float weights to PackedWeight: torchao's symmetric int4 per-group rule, and its error."""

from __future__ import annotations

import dataclasses

import numpy as np

from .arith import ceil_div
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
    groups = ceil_div(k, gs)
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


def quantize_gptq(w: np.ndarray, x: np.ndarray, group_size: int = 128, *, damp: float = 0.01,
                  scales: np.ndarray | None = None, act_order: bool = False) -> PackedWeight:
    """Quantize with GPTQ (Frantar et al., 2022): same format and scale rule as quantize(),
    but each column's rounding error is pushed onto the columns not yet quantized, weighted
    by the inverse Hessian of the layer's inputs, so that x @ w.T is kept rather than w.

    Without `scales`, columns are taken in order and a group's scale is chosen (torchao's
    rule, as in quantize) from the error-updated weights when the group starts. With `scales`
    the groups are static: every scale is fixed before the first column (e.g. by
    search_scales), so the columns may also be taken in act-order (largest input second
    moment first, Frantar et al.'s `act_order` with `static_groups`) and the result keeps
    the format: group g still covers k in [g * group_size, (g + 1) * group_size).

    Args:
        w: (N, K) float weight.
        x: (S, K) float inputs of the layer on calibration data (S samples, S >= 1).
        group_size: elements of K per scale.
        damp: added to the Hessian's diagonal, as a fraction of its mean (>= 0).
        scales: None, or (ceil(K/group_size), N) positive finite float32 scales to use.
        act_order: take columns by decreasing input second moment; needs `scales`.
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
    groups = ceil_div(k, gs)
    if not isinstance(damp, (int, float)) or isinstance(damp, bool) or not damp >= 0 or not np.isfinite(damp):
        raise ValueRangeError(fn, "damp", "a finite float >= 0", describe(damp))
    if scales is not None:
        scales = _check_scales(fn, scales, groups, n)
    elif act_order:
        raise ValueRangeError(fn, "act_order", "False when no static scales are given", "True")
    hessian = _hessian(x)
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k)
    hessian = hessian[np.ix_(order, order)]
    hessian += damp * np.mean(np.diag(hessian)) * np.eye(k)
    # upper Cholesky factor of H^-1: row i holds how column i's error spreads to columns > i
    hinv = np.linalg.cholesky(np.linalg.inv(hessian)).T
    work = w.astype(np.float64)
    work[:, dead] = 0.0
    work = work[:, order]
    q = np.zeros((n, k), np.int8)
    # the scale of each (permuted) column; filled group by group when the scales are chosen on the fly
    col_scale = np.zeros((n, k), np.float32) if scales is None else scales.T[:, order // gs]
    for b0 in range(0, k, gs):
        b1 = min(b0 + gs, k)
        block = work[:, b0:b1].copy()
        if scales is None:
            amax = np.maximum(-np.minimum(block.min(axis=1), 0), np.maximum(block.max(axis=1), 0))
            col_scale[:, b0:b1] = np.maximum(amax / ((QMAX - QMIN) / 2), _EPS).astype(np.float32)[:, None]
        s = col_scale[:, b0:b1].astype(np.float64)
        inv = (np.float32(1.0) / col_scale[:, b0:b1]).astype(np.float64)
        errors = np.zeros_like(block)
        for j in range(b1 - b0):
            col = block[:, j]
            qj = np.clip(np.round(col * inv[:, j]), QMIN, QMAX)
            q[:, b0 + j] = qj
            err = (col - qj * s[:, j]) / hinv[b0 + j, b0 + j]
            block[:, j:] -= np.outer(err, hinv[b0 + j, b0 + j:b1])
            errors[:, j] = err
        work[:, b1:] -= errors @ hinv[b0:b1, b1:]
    back = np.argsort(order)
    q, col_scale = q[:, back], col_scale[:, back]
    return PackedWeight(pack_int4(q), np.ascontiguousarray(col_scale[:, ::gs].T), gs, in_features=k)


def _check_weight(fn: str, w) -> np.ndarray:
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64) or w.ndim != 2 or 0 in w.shape:
        raise DTypeError(fn, "w", "(N, K) float32 or float64 ndarray", describe(w))
    if not np.isfinite(w).all():
        raise ValueRangeError(fn, "w", "finite values", "NaN or Inf in the weight")
    if np.abs(w).max() > np.finfo(np.float32).max:
        raise ValueRangeError(fn, "w", "values within float32 range", f"max |w| = {np.abs(w).max():.3g}")
    return w


def _check_scales(fn: str, scales, groups: int, n: int) -> np.ndarray:
    if not isinstance(scales, np.ndarray) or scales.dtype != np.float32 or scales.shape != (groups, n):
        raise ShapeError(fn, "scales", f"({groups}, {n}) float32 ndarray", describe(scales))
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueRangeError(fn, "scales", "positive finite values", "a scale <= 0, NaN or Inf")
    return scales


def _hessian(x: np.ndarray) -> np.ndarray:
    """(K, K) float64 second moment x.T @ x / S of the layer inputs."""
    x64 = x.astype(np.float64)
    return x64.T @ x64 / x64.shape[0]


#: The scales search_scales tries, as fractions r of torchao's amax / 7.5: 1.0 (torchao's rule)
#: first, then down to 0.5 in steps of 0.01 (clipping the largest weights), amax / 8 (-amax
#: exactly -8) and amax / 7 (+amax exactly 7).
SCALE_GRID = (1.0,) + tuple(round(1.0 - 0.01 * i, 2) for i in range(1, 51)) + (7.5 / 8.0, 7.5 / 7.0)


def search_scales(w: np.ndarray, group_size: int = 128, *, importance: np.ndarray | None = None,
                  grid=SCALE_GRID) -> np.ndarray:
    """Per-group scales that minimize the (importance-weighted) rounding error.

    For every group (row n, k in one group) each candidate scale `r * amax / 7.5` (r in
    `grid`) is tried with round-to-nearest q = clamp(round(w / scale), -8, 7), and the one
    with the least `sum_k importance[k] * (w[n, k] - q * scale)^2` is kept (ties: the first
    in `grid`). r = 1 (torchao's rule) is in the default grid, so the error never exceeds
    quantize()'s. With importance = the diagonal of the inputs' second moment E[x_k^2],
    the error weighs each k by how much it moves the layer's output.

    Args:
        w: (N, K) float weight.
        group_size: elements of K per scale.
        importance: None (plain squared error) or (K,) finite non-negative weights.
        grid: the ratios r tried, each > 0.
    Returns:
        (ceil(K/group_size), N) float32 scales, all > 0, for quantize_with_scales or quantize_gptq.
    """
    fn = "search_scales"
    w = _check_weight(fn, w)
    gs = positive_int(fn, "group_size", group_size)
    n, k = w.shape
    if importance is None:
        importance = np.ones(k)
    elif not isinstance(importance, np.ndarray) or importance.shape != (k,) \
            or not (np.isfinite(importance).all() and (importance >= 0).all()):
        raise ValueRangeError(fn, "importance", f"(K={k},) finite values >= 0", describe(importance))
    ratios = np.asarray(grid, np.float64)
    if ratios.ndim != 1 or ratios.size == 0 or not (np.isfinite(ratios).all() and (ratios > 0).all()):
        raise ValueRangeError(fn, "grid", "a non-empty sequence of positive ratios", describe(grid))
    groups = ceil_div(k, gs)
    blocks = np.zeros((n, groups * gs), np.float32)
    blocks[:, :k] = w
    blocks = blocks.reshape(n, groups, gs)
    blocks64 = blocks.astype(np.float64)
    weight = np.zeros(groups * gs)
    weight[:k] = importance
    weight = weight.reshape(1, groups, gs)
    amax = np.abs(blocks64).max(axis=2) / ((QMAX - QMIN) / 2)
    best_err = np.full((n, groups), np.inf)
    best = np.zeros((n, groups), np.float32)
    for r in ratios:
        s = np.maximum(amax * r, _EPS).astype(np.float32)
        # q exactly as quantize() computes it (float32 w * float32 1/scale), the error in float64
        q = np.clip(np.round(blocks * (np.float32(1.0) / s)[:, :, None]), QMIN, QMAX)
        err = (((blocks64 - q * s[:, :, None].astype(np.float64)) ** 2) * weight).sum(axis=2)
        better = err < best_err
        best_err[better], best[better] = err[better], s[better]
    return np.ascontiguousarray(best.T)


def quantize_with_scales(w: np.ndarray, scales: np.ndarray, group_size: int = 128) -> PackedWeight:
    """Round to nearest with given scales: q = clamp(round(w * (1 / scale)), -8, 7).

    Args:
        w: (N, K) float weight.
        scales: (ceil(K/group_size), N) positive finite float32 (e.g. from search_scales).
        group_size: elements of K per scale.
    Returns:
        PackedWeight holding exactly these scales.
    """
    fn = "quantize_with_scales"
    w = _check_weight(fn, w)
    gs = positive_int(fn, "group_size", group_size)
    n, k = w.shape
    scales = _check_scales(fn, scales, ceil_div(k, gs), n)
    inv = (np.float32(1.0) / scales).T[:, np.arange(k) // gs]
    q = np.clip(np.round(w.astype(np.float32) * inv), QMIN, QMAX).astype(np.int8)
    return PackedWeight(pack_int4(q), np.ascontiguousarray(scales), gs, in_features=k)


def corrected_bias(w: np.ndarray, weight: PackedWeight, x_mean: np.ndarray,
                   bias: np.ndarray | None = None) -> np.ndarray:
    """Bias correction: the bias that makes the quantized layer's mean output the float one's.

    Returns `bias + (w - dequantize(weight)) @ x_mean`, so that E[x @ Wq.T + b'] equals
    E[x @ W.T + b] over the inputs whose mean is x_mean.

    Args:
        w: (N, K) float weight that was quantized.
        weight: its PackedWeight.
        x_mean: (K,) finite mean of the layer's inputs on calibration data.
        bias: (N,) float bias, or None for zero.
    Returns:
        (N,) float32 bias.
    """
    fn = "corrected_bias"
    w = _check_weight(fn, w)
    if not isinstance(weight, PackedWeight) or (weight.out_features, weight.in_features) != w.shape:
        raise ShapeError(fn, "weight", f"PackedWeight of shape {w.shape}", describe(weight))
    n, k = w.shape
    if not isinstance(x_mean, np.ndarray) or x_mean.shape != (k,) or not np.isfinite(x_mean).all():
        raise ShapeError(fn, "x_mean", f"(K={k},) finite array", describe(x_mean))
    if bias is None:
        bias = np.zeros(n, np.float32)
    elif not isinstance(bias, np.ndarray) or bias.shape != (n,) or not np.isfinite(bias).all():
        raise ShapeError(fn, "bias", f"(N={n},) finite array", describe(bias))
    shift = (w.astype(np.float64) - weight.dequantize()) @ x_mean.astype(np.float64)
    return (bias.astype(np.float64) + shift).astype(np.float32)
