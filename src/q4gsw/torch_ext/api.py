"""quantize_model: swap eligible nn.Linear modules for Q4Linear in place, and say what was done."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checks import describe, positive_int
from ..errors import DTypeError, GroupSizeError
from .module import Q4Linear, check_activations

log = logging.getLogger("q4gsw")


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """One nn.Linear that quantize_model looked at."""

    fqn: str
    in_features: int
    out_features: int
    bytes_before: int  # float weight + bias as they were
    bytes_after: int = 0  # packed weights + scales + float32 bias (0 when skipped)
    reason: str = ""  # why it was skipped ("" when converted)


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
        """Bytes of the same layers as Q4Linear (packed weights, scales, biases)."""
        return sum(r.bytes_after for r in self.converted)

    def __str__(self) -> str:
        lines = [f"q4gsw.quantize_model (group size {self.group_size}): {len(self.converted)} linear layers "
                 f"converted, {len(self.skipped)} skipped; {self.bytes_before / 2**20:.2f} MiB -> "
                 f"{self.bytes_after / 2**20:.2f} MiB"]
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
                   progress: bool = True, activations: str = "f32") -> QuantizeSummary:
    """Replace every eligible nn.Linear of `model` by Q4Linear.from_linear, in place (torchao's quantize_ walk).

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
    Returns:
        QuantizeSummary: converted layers, skipped layers with the reason, bytes before/after.
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
    summary = QuantizeSummary(group_size)
    linears = [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]
    for fqn, mod in tqdm(linears, desc="q4gsw: quantizing", unit="layer", disable=not progress):
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
        q = Q4Linear.from_linear(mod, group_size, activations=activations)
        parent_name, _, child = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name), child, q)
        after = _bytes(q.weights) + _bytes(q.weight_scales) + _bytes(q.bias)
        summary.converted.append(dataclasses.replace(record, bytes_after=after))
    return summary
