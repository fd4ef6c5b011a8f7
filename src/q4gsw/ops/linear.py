"""linear_q4gsw (and linear_dq8ca_q4gsw, its int8-activation form): validate every argument,
plan (ops/plan.py), submit, read back."""

from __future__ import annotations

import math

import numpy as np

from ..checks import as_array, describe, is_torch_tensor, positive_int
from ..errors import ArgumentError, DTypeError, ShapeError, ValueRangeError
from ..format import PackedWeight
from ..kernels import REGISTRIES, Problem, select
from ..runtime import get_runtime
from ..runtime.submit import submit
from ..runtime.weights import ObjectKeys
from .plan import choose_kernel, gpu_placeholder, plan_linear


def linear(x, weight: PackedWeight, bias=None, *, kernel=None, activations: str = "f32"):
    """out = x @ dequantize(weight).T (+ bias), computed on the WebGPU device.

    Args:
        x: (..., K) float32 ndarray or torch.Tensor.
        weight: the PackedWeight (N output features, K input features).
        bias: optional (N,) float32.
        kernel: force a kernel by name (see q4gsw.kernels.KERNELS, or INT8_KERNELS with
            activations="int8") or as a KernelSpec with settings (e.g.
            TiledSplit(x_rows_per_tile=64, split=4)); default: chosen.
        activations: "f32" (default): x is used as it is. "int8": x is quantized on the GPU to
            symmetric int8 and multiplied with int8 dot products (ExecuTorch's
            linear_dq8ca_q4gsw): at M <= 8 by decode_int8 in one dispatch, one scale per (row,
            32 k); above, by a quantize dispatch (one scale per (row, group of group_size k))
            and an int8 GEMM (kernels/int8.py). Faster where the adapter has integer dot
            products, at a relative error of about 5e-3 instead of 5e-7 (docs/kernels-decode.md,
            docs/kernels-prefill.md). Needs K and group_size multiples of 32. Never chosen
            unless asked for.
    Returns:
        (..., N) float32, an ndarray (a CPU torch.Tensor when x is a torch.Tensor).
    Raises:
        a Q4gswError subclass naming the bad argument, before any GPU buffer is created.
    """
    return _linear("linear", x, weight, bias, kernel, activations=activations)


def linear_dq8ca_q4gsw(x, weights, weight_scales, group_size: int, bias=None, *, kernel=None):
    """ExecuTorch's et_vk.linear_dq8ca_q4gsw with the activation quantization inside: x is
    quantized to int8 on the GPU and multiplied by int8 dot products; same arguments and
    result as linear_q4gsw (which it is, with activations="int8").

    ExecuTorch's op takes x already quantized per token (asymmetric int8, with
    input_scale / input_zero_point and the weight sums for the zero-point correction); its
    reference implementation returns linear_q4gsw(x, weights, weight_scales, group_size).
    Here the quantization is symmetric, per (token, group of group_size k) in the GEMMs and per
    (token, 32 k) at M <= 8 (decode_int8): finer than a scale per token, no zero point to
    correct; its error is measured in docs/kernels-prefill.md and docs/kernels-decode.md.
    """
    return _linear_q4gsw("linear_dq8ca_q4gsw", x, weights, weight_scales, group_size, bias, kernel, "int8")


def linear_q4gsw(x, weights, weight_scales, group_size: int, bias=None, *, kernel=None, activations: str = "f32"):
    """ExecuTorch's et_vk.linear_q4gsw(input, weights, weight_scales, group_size, bias=None).

    Args:
        x: (..., K) float32.
        weights: (N, ceil(K/2)) uint8, ExecuTorch's packed bytes, used as they are (rows padded
            past ceil(K/2) by ExecuTorch's exporter are accepted; the padding is ignored).
        weight_scales: (num_groups, padded_N) float32.
        group_size: elements of K per scale.
        bias: optional (N,) float32.
        activations: "f32" or "int8", as for linear.
    The GPU copy of (weights, weight_scales) is kept while both objects live: treat them as
    constants, as ExecuTorch does.
    """
    return _linear_q4gsw("linear_q4gsw", x, weights, weight_scales, group_size, bias, kernel, activations)


def _linear_q4gsw(fn, x, weights, weight_scales, group_size, bias, kernel, activations):
    xa = as_array(fn, "x", x, np.float32, contiguous=False)
    if xa.ndim < 1 or xa.shape[-1] < 1:
        raise ShapeError(fn, "x", "(..., K) array with K >= 1", describe(x))
    group_size = positive_int(fn, "group_size", group_size)
    try:
        weight = PackedWeight(weights, weight_scales, group_size, in_features=xa.shape[-1])
    except ArgumentError as exc:  # report it as the op's error
        raise type(exc)(fn, exc.argument, exc.expected, exc.got) from None
    return _linear(fn, x, weight, bias, kernel, _tensor_pairs.key((weights, weight_scales), (group_size, xa.shape[-1])),
                   activations=activations)


#: The keys under which the runtime keeps the GPU copy of a (weights, weight_scales) pair of
#: linear_q4gsw's tensors while they live.
_tensor_pairs = ObjectKeys()


def _validate(fn, x, weight, bias):
    if not isinstance(weight, PackedWeight):
        raise DTypeError(fn, "weight", "a q4gsw.PackedWeight", describe(weight))
    xa = as_array(fn, "x", x, np.float32, contiguous=False)  # copied after the size checks
    k, n = weight.in_features, weight.out_features
    if xa.ndim < 1 or xa.shape[-1] != k:
        raise ShapeError(fn, "x", f"(..., K) with K = {k} (the weight's in_features)", describe(x))
    ba = None
    if bias is not None:
        ba = as_array(fn, "bias", bias, np.float32, contiguous=False)
        if ba.shape != (n,):
            raise ShapeError(fn, "bias", f"shape ({n},) (the weight's out_features)", describe(bias))
    m = math.prod(xa.shape[:-1])
    return xa, ba, Problem(m, n, k, weight.group_size, ba is not None)


def _linear(fn, x, weight, bias, kernel, weight_key=None, *, activations="f32"):
    was_torch = is_torch_tensor(x)
    if not isinstance(activations, str) or activations not in REGISTRIES:
        raise ValueRangeError(fn, "activations", f"one of {', '.join(map(repr, REGISTRIES))}", repr(activations))
    xa, ba, p = _validate(fn, x, weight, bias)
    lead = xa.shape[:-1]
    if p.m == 0:
        if isinstance(kernel, str) and kernel not in REGISTRIES[activations]:
            select(p, None, kernel, activations=activations)  # raises for an unknown name
        return _wrap(np.zeros((*lead, p.n), np.float32), was_torch)
    runtime = get_runtime()
    spec = choose_kernel(runtime, fn, p, kernel, activations=activations)  # every check before any GPU buffer exists
    x2d = np.ascontiguousarray(xa).reshape(p.m, p.k)
    with runtime.device_calls():
        out = _run(runtime, fn, spec, p, x2d, weight, None if ba is None else np.ascontiguousarray(ba), weight_key)
    return _wrap(out.reshape(*lead, p.n), was_torch)


def _wrap(out: np.ndarray, was_torch: bool):
    if was_torch:
        import torch

        return torch.from_numpy(out)
    return out


def _run(runtime, fn, spec, p: Problem, x2d: np.ndarray, weight: PackedWeight, bias, weight_key) -> np.ndarray:
    usage = runtime.wgpu.BufferUsage
    x_buf = runtime.buffers.upload(x2d, usage.STORAGE, "q4gsw/x")
    out_buf = runtime.buffers.create(4 * p.m * p.n, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST, "q4gsw/out")
    runtime.poison(out_buf, p.m * p.n)
    bias_buf = (gpu_placeholder(runtime) if bias is None
                else runtime.buffers.upload(bias, usage.STORAGE, "q4gsw/bias"))
    plan = None
    try:
        plan = plan_linear(runtime, fn, weight, p, x_buf, out_buf, bias_buf, kernel=spec, weight_key=weight_key,
                           activations=spec.activations)
        submit(runtime, plan.dispatches)
        return runtime.buffers.read(out_buf, 4 * p.m * p.n, np.float32).reshape(p.m, p.n)
    finally:
        runtime.buffers.destroy(x_buf, out_buf, bias_buf)
        if plan is not None:
            plan.release(runtime)
