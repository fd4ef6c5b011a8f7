"""Measured per-layer sensitivity of a torch model: the model's output error when one linear
alone is rounded to int4, on calibration inputs (what quantize_model's dense_budget spends on)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DTypeError
from ..quantize import quantize


def first_tensor(output) -> torch.Tensor:
    """The tensor a model's output leads with: the output itself, or the first tensor of a
    tuple, list or dict (a Hugging Face ModelOutput's logits or last_hidden_state)."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) or isinstance(value, (tuple, list, dict)):
            try:
                return first_tensor(value)
            except DTypeError:
                continue
    raise DTypeError("quantize_model", "calibration", "a model whose output is or holds a tensor",
                     f"an output of type {type(output).__name__}")


def linear_sensitivities(model: nn.Module, linears: list[tuple[str, nn.Linear]], calibration,
                         group_size: int) -> dict[str, float]:
    """For each (fqn, linear): |y_q - y|^2 / |y|^2 over the calibration inputs, where y is the
    model's output (first_tensor) and y_q the same with only that linear's weight rounded to
    int4 (q4gsw.quantize at group_size, dequantized). The weights are restored after each run.

    Args:
        calibration: a tensor, or a tuple of positional arguments, for model(...).
    """
    args = calibration if isinstance(calibration, tuple) else (calibration,)
    out = {}
    with torch.no_grad():
        ref = first_tensor(model(*args)).double()
        energy = float((ref * ref).sum()) or 1.0
        for fqn, mod in linears:
            saved = mod.weight.data
            w = saved.detach().to(torch.float32).contiguous().numpy()
            mod.weight.data = torch.from_numpy(quantize(w, group_size).dequantize()).to(saved.dtype)
            try:
                y = first_tensor(model(*args)).double()
            finally:
                mod.weight.data = saved
            out[fqn] = float(((y - ref) ** 2).sum()) / energy
    return out
