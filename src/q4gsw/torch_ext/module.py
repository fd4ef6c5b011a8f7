"""Q4Linear: an nn.Module holding one PackedWeight (+ bias) whose forward runs q4gsw::linear_q4gsw;
DenseLinear: one kept in fp16 or fp32 (mixed precision), run by q4gsw::dense_linear."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..checks import as_array, describe
from ..errors import DTypeError, ShapeError, ValueRangeError
from ..format import DENSE_DTYPES, DenseWeight, PackedWeight
from ..quantize import quantize
from .ops import dense_linear_op, linear_dq8ca_q4gsw_op, linear_q4gsw_op

#: Q4Linear's activations: "f32" runs q4gsw::linear_q4gsw, "int8" q4gsw::linear_dq8ca_q4gsw.
ACTIVATIONS = {"f32": linear_q4gsw_op, "int8": linear_dq8ca_q4gsw_op}


def check_activations(fn: str, activations) -> str:
    """activations if it is "f32" or "int8", else ValueRangeError naming it."""
    if not isinstance(activations, str) or activations not in ACTIVATIONS:
        raise ValueRangeError(fn, "activations", "'f32' or 'int8'", repr(activations))
    return activations


def bias_tensor(fn: str, bias, n: int):
    """bias as a float32 (n,) CPU tensor (a copy), or None; ShapeError naming it otherwise."""
    if bias is None:
        return None
    b = as_array(fn, "bias", bias, np.float32)
    if b.shape != (n,):
        raise ShapeError(fn, "bias", f"shape ({n},) (the weight's out_features)", describe(bias))
    return torch.from_numpy(np.array(b))


def apply_keeping_dtypes(module: nn.Module, names, apply, fn, recurse):
    """Run apply(fn, recurse) (nn.Module._apply) but keep the dtypes of the named buffers: module-wide casts
    leave them as they are, device moves still apply."""
    kept = {name: getattr(module, name) for name in names}
    apply(fn, recurse)
    for name, before in kept.items():
        after = getattr(module, name)
        if before is not None and after is not None and after.dtype != before.dtype:
            setattr(module, name, before.to(after.device))  # the device move, without the cast
    return module


def checked_linear_weight(fn: str, linear) -> torch.Tensor:
    """linear.weight if linear is an nn.Linear with a floating-point CPU weight, else DTypeError."""
    if not isinstance(linear, nn.Linear):
        raise DTypeError(fn, "linear", "a torch.nn.Linear", describe(linear))
    w = linear.weight
    if not w.is_floating_point() or w.device.type != "cpu":
        raise DTypeError(fn, "linear", "a floating-point weight on the CPU", describe(w))
    return w


def check_input(fn: str, x, k: int) -> None:
    """DTypeError/ShapeError naming "input" unless x is a float32 CPU tensor (..., k)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.device.type != "cpu":
        raise DTypeError(fn, "input", "a float32 CPU torch.Tensor", describe(x) + (
            f" on {x.device}" if isinstance(x, torch.Tensor) else ""))
    if x.dim() < 1 or x.shape[-1] != k:
        raise ShapeError(fn, "input", f"(..., K) with K = {k}", describe(x))


class Q4Linear(nn.Module):
    """A 4-bit groupwise-symmetric linear layer, run on q4gsw's WebGPU device. Inference only.

    The packed bytes, scales and bias are buffers (`weights` uint8 (N, ceil(K/2)),
    `weight_scales` float32 (num_groups, padded_N), `bias` float32 (N,) or None), so they
    travel with state_dict(); there are no parameters. forward takes and returns float32 CPU
    tensors; nothing is differentiated (the op has no autograd formula; run it under
    torch.no_grad() / torch.inference_mode()). The GPU copy of the weight is made on the
    first forward and cached while the `weights` tensor lives.

    Args:
        weight: the PackedWeight (its arrays are copied into the buffers).
        bias: optional (N,) float32 ndarray or tensor.
        activations: "f32" (default), or "int8": x is quantized to int8 on the GPU and the
            layer runs q4gsw::linear_dq8ca_q4gsw (faster prefill where the adapter has integer
            dot products, ~1e-2 relative error; K and group_size multiples of 32).
    """

    def __init__(self, weight: PackedWeight, bias=None, *, activations: str = "f32"):
        super().__init__()
        fn = "Q4Linear"
        if not isinstance(weight, PackedWeight):
            raise DTypeError(fn, "weight", "a q4gsw.PackedWeight", describe(weight))
        self.activations = check_activations(fn, activations)
        self.in_features = weight.in_features
        self.out_features = weight.out_features
        self.group_size = weight.group_size
        self.register_buffer("weights", torch.from_numpy(np.array(weight.weights)))
        self.register_buffer("weight_scales", torch.from_numpy(np.array(weight.scales)))
        self.register_buffer("bias", bias_tensor(fn, bias, self.out_features))

    def _apply(self, fn, recurse=True):
        """Module-wide casts (model.half(), model.to(torch.bfloat16)) leave the packed format
        alone: the scales and bias stay float32, as linear_q4gsw requires; device moves apply."""
        return apply_keeping_dtypes(self, ("weight_scales", "bias"), super()._apply, fn, recurse)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, *, activations: str = "f32") -> "Q4Linear":
        """Quantize a float nn.Linear (torchao's symmetric int4 rule, see q4gsw.quantize).

        Args:
            linear: nn.Linear with a floating-point weight (N, K) on the CPU; it is not modified.
            group_size: elements of K per scale (any K works; the last group may be shorter).
            activations: "f32" or "int8", as for Q4Linear.
        """
        fn = "Q4Linear.from_linear"
        w = checked_linear_weight(fn, linear)
        check_activations(fn, activations)
        packed = quantize(w.detach().to(torch.float32).contiguous().numpy(), group_size)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).contiguous()
        return cls(packed, bias, activations=activations)

    @classmethod
    def from_executorch(cls, weights, weight_scales, group_size: int, bias=None, *,
                        in_features: int | None = None, activations: str = "f32") -> "Q4Linear":
        """Wrap ExecuTorch's serialized linear_q4gsw tensors, used as they are.

        Args:
            weights: (N, ceil(K/2)) uint8 ndarray or tensor, or rows padded as ExecuTorch's exporter
                pads them (pass in_features; the padding is ignored).
            weight_scales: (num_groups, padded_N) float32.
            group_size: elements of K per scale.
            bias: optional (N,) float32.
            in_features: K (default 2 * weights.shape[1]; pass it for odd K).
            activations: "f32" or "int8", as for Q4Linear (ExecuTorch's linear_dq8ca_q4gsw
                layers take "int8").
        """
        return cls(PackedWeight(weights, weight_scales, group_size, in_features=in_features), bias,
                   activations=activations)

    @property
    def packed(self) -> PackedWeight:
        """The PackedWeight over the current buffers (no copy)."""
        return PackedWeight(self.weights.numpy(), self.weight_scales.numpy(), self.group_size,
                            in_features=self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K) float32 CPU tensor -> (..., N) float32 CPU tensor."""
        fn = "Q4Linear.forward"
        check_input(fn, x, self.in_features)
        return ACTIVATIONS[self.activations](x, self.weights, self.weight_scales, self.group_size, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bias={self.bias is not None}"
                + (f", activations={self.activations}" if self.activations != "f32" else ""))


class DenseLinear(nn.Module):
    """A linear layer kept in high precision (fp16 or fp32) beside Q4Linear ones, run on q4gsw's
    WebGPU device by q4gsw.dense_linear. Inference only.

    `weight` (N, K) float16 or float32 and `bias` float32 (N,) or None are buffers (they travel
    with state_dict()); module-wide casts (model.half()) leave both as they are. The GPU copy of
    the weight is made on the first forward and kept while the `weight` tensor lives.

    Args:
        weight: a DenseWeight (its array is copied into the buffer).
        bias: optional (N,) float32 ndarray or tensor.
    """

    def __init__(self, weight: DenseWeight, bias=None):
        super().__init__()
        fn = "DenseLinear"
        if not isinstance(weight, DenseWeight):
            raise DTypeError(fn, "weight", "a q4gsw.DenseWeight", describe(weight))
        self.in_features, self.out_features = weight.in_features, weight.out_features
        self.register_buffer("weight", torch.from_numpy(np.array(weight.weights)))
        self.register_buffer("bias", bias_tensor(fn, bias, self.out_features))

    def _apply(self, fn, recurse=True):
        """Casts leave the stored precision and the float32 bias alone; device moves apply."""
        return apply_keeping_dtypes(self, ("weight", "bias"), super()._apply, fn, recurse)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: str = "float16") -> "DenseLinear":
        """Keep a float nn.Linear in `dtype` ("float16" or "float32"; see DenseWeight.from_float).

        Args:
            linear: nn.Linear with a floating-point weight on the CPU; it is not modified.
        """
        fn = "DenseLinear.from_linear"
        w = checked_linear_weight(fn, linear)
        if dtype not in DENSE_DTYPES:
            raise DTypeError(fn, "dtype", f"one of {DENSE_DTYPES}", repr(dtype))
        weight = DenseWeight.from_float(w.detach().to(torch.float32).contiguous().numpy(), dtype)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).contiguous()
        return cls(weight, bias)

    @property
    def dense(self) -> DenseWeight:
        """The DenseWeight over the current buffer (no copy)."""
        return DenseWeight(self.weight.numpy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K) float32 CPU tensor -> (..., N) float32 CPU tensor."""
        fn = "DenseLinear.forward"
        check_input(fn, x, self.in_features)
        return dense_linear_op(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={str(self.weight.dtype).removeprefix('torch.')}, bias={self.bias is not None}")
