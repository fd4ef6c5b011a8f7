"""quantize_model: swap eligible nn.Linear modules for Q4Linear (or DenseLinear, the ones kept in
high precision) in place, and say what was done."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checks import describe, positive_int
from ..errors import ArgumentError, DTypeError, GroupSizeError
from ..format import DENSE_DTYPES
from ..mixed import choose_dense, dense_bytes, int4_bytes
from .module import DenseLinear, Q4Linear, check_activations
from .sensitivity import linear_sensitivities

log = logging.getLogger("q4gsw")


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """One nn.Linear that quantize_model looked at."""

    fqn: str
    in_features: int
    out_features: int
    bytes_before: int  # float weight + bias as they were
    bytes_after: int = 0  # packed weights + scales (or the dense weight) + float32 bias (0 when skipped)
    reason: str = ""  # why it was skipped ("" when converted)
    precision: str = "int4"  # "int4" (Q4Linear), or "float16" / "float32" (kept dense: DenseLinear)
    sensitivity: float | None = None  # measured output error with it alone in int4 (dense_budget runs)


@dataclasses.dataclass
class QuantizeSummary:
    """What quantize_model converted and skipped (with the reason), and the bytes before/after."""

    group_size: int
    converted: list[LayerRecord] = dataclasses.field(default_factory=list)
    skipped: list[LayerRecord] = dataclasses.field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        """Bytes of the converted layers' float weights and biases."""
        return sum(r.bytes_before for r in self.converted)

    @property
    def bytes_after(self) -> int:
        """Bytes of the same layers as Q4Linear or DenseLinear (weights, scales, biases)."""
        return sum(r.bytes_after for r in self.converted)

    @property
    def dense(self) -> list[LayerRecord]:
        """The converted layers kept dense (DenseLinear)."""
        return [r for r in self.converted if r.precision != "int4"]

    def __str__(self) -> str:
        lines = [f"q4gsw.quantize_model (group size {self.group_size}): {len(self.converted)} linear layers "
                 f"converted{f' ({len(self.dense)} kept dense)' if self.dense else ''}, {len(self.skipped)} skipped; "
                 f"{self.bytes_before / 2**20:.2f} MiB -> {self.bytes_after / 2**20:.2f} MiB"]
        lines += [f"  dense {r.fqn} ({r.precision})" for r in self.dense]
        lines += [f"  skipped {r.fqn or '(root)'}: {r.reason}" for r in self.skipped]
        return "\n".join(lines)


def _bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _ineligible(mod: nn.Linear) -> str | None:
    """Why this nn.Linear cannot become a Q4Linear, or None. Any K and N work (odd K too)."""
    w = mod.weight
    if type(w) not in (torch.Tensor, nn.Parameter):
        return f"weight is a {type(w).__name__} (already quantized or a tensor subclass)"
    if not w.is_floating_point():
        return f"weight dtype {w.dtype} is not floating point"
    if w.device.type != "cpu":
        return f"weight is on {w.device}; Q4Linear runs on CPU tensors (move the model to the CPU first)"
    if not torch.isfinite(w).all():
        return "weight holds NaN or Inf"
    if mod.bias is not None and not torch.isfinite(mod.bias).all():
        return "bias holds NaN or Inf"
    return None


def quantize_model(model: nn.Module, group_size: int = 128,
                   filter_fn: Callable[[nn.Module, str], bool] | None = None, *,
                   progress: bool = True, activations: str = "f32", keep_dense=None,
                   dense_budget: float | None = None, calibration=None,
                   dense_dtype: str = "float16") -> QuantizeSummary:
    """Replace every eligible nn.Linear of `model` by Q4Linear.from_linear, in place (torchao's
    quantize_ walk), or by DenseLinear.from_linear for the ones kept in high precision.

    Eligible: an nn.Linear (or subclass) with a finite floating-point weight on the CPU, for
    which filter_fn(module, fqn) is true (default: every one). The root module itself is
    never replaced (there is no parent to hold the new module): use Q4Linear.from_linear.

    Args:
        model: the model; modified in place.
        group_size: elements of K per scale.
        filter_fn: (module, fully qualified name) -> bool; False leaves the layer as it is.
        progress: show a tqdm progress bar.
        activations: "f32" (default) or "int8": every converted layer quantizes its input to
            int8 on the GPU (q4gsw::linear_dq8ca_q4gsw; see Q4Linear). It needs group_size and
            each layer's in_features to be multiples of 32: other layers are skipped (with
            the reason in the summary), never run with f32 activations instead.
        keep_dense: eligible linears kept dense (DenseLinear, on the GPU beside the int4 ones):
            fqns or fnmatch patterns (e.g. ["lm_head", "layers.5.*"]), or a callable
            (module, fqn) -> bool.
        dense_budget: or let quantize_model choose them: the eligible linears' weights may take
            up to dense_budget (>= 1) times their bytes in int4. Each eligible linear's
            sensitivity is measured on `calibration`: the relative squared error of the model's
            output (its first tensor) when that linear alone is rounded to int4; the set with
            the largest total sensitivity within the budget is kept dense (q4gsw.mixed.choose_dense).
        calibration: a tensor, or a tuple of positional arguments, for model(...) (dense_budget only).
        dense_dtype: "float16" or "float32", the storage of the dense linears.
    Returns:
        QuantizeSummary: converted layers (with their precision), skipped layers with the
        reason, bytes before/after.
    """
    fn = "quantize_model"
    if not isinstance(model, nn.Module):
        raise DTypeError(fn, "model", "a torch.nn.Module", describe(model))
    group_size = positive_int(fn, "group_size", group_size)
    check_activations(fn, activations)
    if activations == "int8" and group_size % 32:
        raise GroupSizeError(fn, "group_size", "a multiple of 32 with activations='int8'", str(group_size))
    if filter_fn is not None and not callable(filter_fn):
        raise DTypeError(fn, "filter_fn", "a callable (module, fqn) -> bool, or None", describe(filter_fn))
    dense_of = _dense_rule(fn, keep_dense, dense_budget, calibration, dense_dtype)
    summary = QuantizeSummary(group_size)
    linears = [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    eligible, records = [], {}
    for fqn, mod in linears:
        record = LayerRecord(fqn, mod.in_features, mod.out_features, _bytes(mod.weight) + _bytes(mod.bias))
        reason = None
        if not fqn:
            reason = "the model itself is the nn.Linear (no parent to hold a Q4Linear): use Q4Linear.from_linear"
        elif filter_fn is not None and not filter_fn(mod, fqn):
            reason = "filter_fn returned False"
        elif activations == "int8" and mod.in_features % 32:
            reason = f"in_features={mod.in_features} is not a multiple of 32, which activations='int8' needs"
        else:
            reason = _ineligible(mod)
        if reason is not None:
            log.info("q4gsw.quantize_model: skipped %s: %s", fqn, reason)
            summary.skipped.append(dataclasses.replace(record, reason=reason))
            continue
        eligible.append((fqn, mod))
        records[fqn] = record
    dense, sensitivity = set(), {}
    if dense_budget is not None:
        dense, sensitivity = _choose_by_budget(model, eligible, dense_budget, calibration, group_size, dense_dtype)
    elif keep_dense is not None:
        dense = {fqn for fqn, mod in eligible if dense_of(mod, fqn)}
    for fqn, mod in tqdm(eligible, desc="q4gsw: quantizing", unit="layer", disable=not progress):
        if fqn in dense:
            q = DenseLinear.from_linear(mod, dense_dtype)
            after = _bytes(q.weight) + _bytes(q.bias)
        else:
            q = Q4Linear.from_linear(mod, group_size, activations=activations)
            after = _bytes(q.weights) + _bytes(q.weight_scales) + _bytes(q.bias)
        parent_name, _, child = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name), child, q)
        summary.converted.append(dataclasses.replace(
            records[fqn], bytes_after=after, precision=dense_dtype if fqn in dense else "int4",
            sensitivity=sensitivity.get(fqn)))
    return summary


def _dense_rule(fn: str, keep_dense, dense_budget, calibration, dense_dtype) -> Callable[[nn.Module, str], bool]:
    """Check the mixed-precision arguments; (module, fqn) -> whether keep_dense names it."""
    if dense_dtype not in DENSE_DTYPES:
        raise DTypeError(fn, "dense_dtype", f"one of {DENSE_DTYPES}", repr(dense_dtype))
    if keep_dense is not None and dense_budget is not None:
        raise ArgumentError(fn, "keep_dense", "None when dense_budget is given (one way to choose)", describe(keep_dense))
    if dense_budget is not None:
        if isinstance(dense_budget, bool) or not isinstance(dense_budget, (int, float)) or not 1.0 <= dense_budget < float("inf"):
            raise ArgumentError(fn, "dense_budget", "a number >= 1 (times the all-int4 bytes)", describe(dense_budget))
        if calibration is None:
            raise ArgumentError(fn, "calibration", "inputs for model(...) to measure sensitivities on", "None")
    if keep_dense is None or callable(keep_dense):
        return keep_dense or (lambda mod, fqn: False)
    patterns = [keep_dense] if isinstance(keep_dense, str) else list(keep_dense)
    if not all(isinstance(p, str) for p in patterns):
        raise DTypeError(fn, "keep_dense", "fqns or fnmatch patterns (str), or a callable (module, fqn) -> bool",
                         describe(keep_dense))
    return lambda mod, fqn: any(fnmatch.fnmatchcase(fqn, p) for p in patterns)


def _choose_by_budget(model, eligible, budget: float, calibration, group_size: int, dtype: str):
    """(the fqns kept dense, fqn -> measured sensitivity) under budget x the all-int4 bytes."""
    shapes = {fqn: (mod.out_features, mod.in_features) for fqn, mod in eligible}
    all_int4 = sum(int4_bytes(n, k, group_size) for n, k in shapes.values())
    extra = {fqn: dense_bytes(n, k, dtype) - int4_bytes(n, k, group_size) for fqn, (n, k) in shapes.items()}
    allowed = int((budget - 1.0) * all_int4)
    if not eligible or allowed < min(extra.values()):
        return set(), {}
    sensitivity = linear_sensitivities(model, eligible, calibration, group_size)
    return set(choose_dense(sensitivity, extra, allowed)), sensitivity
