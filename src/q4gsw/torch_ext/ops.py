"""The torch.library custom ops q4gsw::linear_q4gsw, q4gsw::linear_dq8ca_q4gsw (the same with
int8 activations) and q4gsw::dense_linear: the WebGPU kernels on CPU tensors, and their fake
kernels."""

from __future__ import annotations

import torch

from ..errors import Q4gswError
from ..ops.dense import dense_linear
from ..ops.linear import linear_dq8ca_q4gsw, linear_q4gsw

#: ExecuTorch's et_vk::linear_q4gsw schema, under the q4gsw namespace.
SCHEMA = "(Tensor self, Tensor weights, Tensor weight_scales, int group_size, Tensor? bias=None) -> Tensor"

torch.library.define("q4gsw::linear_q4gsw", SCHEMA)
#: ExecuTorch's et_vk::linear_dq8ca_q4gsw takes x quantized beforehand (scales, zero points and
#: weight sums); here x is float and is quantized inside the op, so the schema is linear_q4gsw's.
torch.library.define("q4gsw::linear_dq8ca_q4gsw", SCHEMA)


@torch.library.impl("q4gsw::linear_q4gsw", "cpu")
def _linear_q4gsw_cpu(x, weights, weight_scales, group_size, bias=None):
    """CPU tensors in and out; the work runs on q4gsw's WebGPU device (q4gsw.linear_q4gsw)."""
    return linear_q4gsw(x, weights, weight_scales, group_size, bias)


@torch.library.impl("q4gsw::linear_dq8ca_q4gsw", "cpu")
def _linear_dq8ca_q4gsw_cpu(x, weights, weight_scales, group_size, bias=None):
    """As linear_q4gsw, with x quantized to int8 on the GPU (q4gsw.linear_dq8ca_q4gsw)."""
    return linear_dq8ca_q4gsw(x, weights, weight_scales, group_size, bias)


def _fake(name: str):
    def fake(x, weights, weight_scales, group_size, bias=None):
        """Shape and dtype only: (..., K) -> (..., N), N = weights.shape[0], x's dtype."""
        torch._check(x.dim() >= 1, lambda: f"q4gsw::{name}: x must be (..., K)")
        torch._check(weights.dim() == 2, lambda: f"q4gsw::{name}: weights must be (N, ceil(K/2))")
        torch._check(weights.shape[1] * 2 >= x.shape[-1],
                     lambda: f"q4gsw::{name}: weights must have ceil(K/2) bytes per row (or rows padded past it)")
        return x.new_empty((*x.shape[:-1], weights.shape[0]))

    return fake


_linear_q4gsw_fake = torch.library.register_fake("q4gsw::linear_q4gsw")(_fake("linear_q4gsw"))
torch.library.register_fake("q4gsw::linear_dq8ca_q4gsw")(_fake("linear_dq8ca_q4gsw"))


def _setup_context(ctx, inputs, output):
    pass


def _backward(ctx, grad):
    raise Q4gswError("q4gsw::linear_q4gsw is inference-only: it has no gradient (run the model under "
                     "torch.no_grad() or torch.inference_mode())")


def _backward_dq8ca(ctx, grad):
    raise Q4gswError("q4gsw::linear_dq8ca_q4gsw is inference-only: it has no gradient (run the model under "
                     "torch.no_grad() or torch.inference_mode())")


# An autograd kernel that refuses backward with a clear error (without one, torch warns and
# returns no gradient for the op's inputs).
torch.library.register_autograd("q4gsw::linear_q4gsw", _backward, setup_context=_setup_context)
torch.library.register_autograd("q4gsw::linear_dq8ca_q4gsw", _backward_dq8ca, setup_context=_setup_context)

#: q4gsw::dense_linear: a linear kept in fp32 or fp16 beside the int4 ones (mixed precision).
DENSE_SCHEMA = "(Tensor self, Tensor weight, Tensor? bias=None) -> Tensor"

torch.library.define("q4gsw::dense_linear", DENSE_SCHEMA)


@torch.library.impl("q4gsw::dense_linear", "cpu")
def _dense_linear_cpu(x, weight, bias=None):
    """CPU tensors in and out; the work runs on q4gsw's WebGPU device (q4gsw.dense_linear; the
    weight's GPU copy is kept while the weight tensor lives)."""
    return dense_linear(x, weight, bias)


@torch.library.register_fake("q4gsw::dense_linear")
def _dense_linear_fake(x, weight, bias=None):
    """Shape and dtype only: (..., K) -> (..., N), N = weight.shape[0], x's dtype."""
    torch._check(x.dim() >= 1, lambda: "q4gsw::dense_linear: x must be (..., K)")
    torch._check(weight.dim() == 2 and weight.shape[1] == x.shape[-1],
                 lambda: "q4gsw::dense_linear: weight must be (N, K)")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


torch.library.register_autograd("q4gsw::dense_linear", _backward, setup_context=_setup_context)


def linear_q4gsw_op(x, weights, weight_scales, group_size: int, bias=None):
    """torch.ops.q4gsw.linear_q4gsw: traceable by torch.export and torch.compile.

    Args:
        x: (..., K) float32 CPU tensor.
        weights: (N, ceil(K/2)) uint8 CPU tensor, ExecuTorch's packed bytes.
        weight_scales: (num_groups, padded_N) float32 CPU tensor.
        group_size: elements of K per scale.
        bias: optional (N,) float32 CPU tensor.
    Returns:
        (..., N) float32 CPU tensor (no autograd: inference only).
    """
    return torch.ops.q4gsw.linear_q4gsw(x, weights, weight_scales, group_size, bias)


def linear_dq8ca_q4gsw_op(x, weights, weight_scales, group_size: int, bias=None):
    """torch.ops.q4gsw.linear_dq8ca_q4gsw: linear_q4gsw_op with x quantized to int8 on the GPU
    (symmetric; one scale per (row, 32 k) at M <= 8, per (row, group of group_size k) above); same
    arguments and result.
    Needs K and group_size multiples of 32."""
    return torch.ops.q4gsw.linear_dq8ca_q4gsw(x, weights, weight_scales, group_size, bias)


def dense_linear_op(x, weight, bias=None):
    """torch.ops.q4gsw.dense_linear: traceable by torch.export and torch.compile.

    Args:
        x: (..., K) float32 CPU tensor.
        weight: (N, K) float16 or float32 CPU tensor.
        bias: optional (N,) float32 CPU tensor.
    Returns:
        (..., N) float32 CPU tensor (no autograd: inference only).
    """
    return torch.ops.q4gsw.dense_linear(x, weight, bias)
