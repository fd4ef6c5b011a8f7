"""dense_linear: a linear kept in fp32 or fp16 beside the int4 ones (mixed precision); validate,
plan (the same steps as ops/plan.py), submit, read back."""

from __future__ import annotations

import math

import numpy as np

from ..checks import as_array, describe, is_torch_tensor
from ..errors import ArgumentError, DTypeError, ShapeError
from ..format import DenseWeight
from ..kernels.dense import DENSE_KERNELS, DenseProblem, DenseSpec, select_dense
from ..runtime import get_runtime
from ..runtime.dispatch import bind
from ..runtime.submit import submit
from ..runtime.weights import ObjectKeys
from .plan import LinearPlan, check_sizes, gpu_placeholder


def dense_linear(x, weight, bias=None, *, kernel=None):
    """out = x @ weight.T (+ bias) on the WebGPU device, with a dense fp32 or fp16 weight.

    Args:
        x: (..., K) float32 ndarray or torch.Tensor.
        weight: a DenseWeight, or an (N, K) float32/float16 ndarray or tensor (bfloat16 tensors
            become float32). A raw array's GPU copy is kept while the array object lives:
            treat it as a constant.
        bias: optional (N,) float32.
        kernel: force a kernel by name ("gemv", "gemm", "general"; see
            q4gsw.kernels.dense.DENSE_KERNELS) or as a DenseSpec; default: chosen.
    Returns:
        (..., N) float32, an ndarray (a CPU torch.Tensor when x is a torch.Tensor).
    Raises:
        a Q4gswError subclass naming the bad argument, before any GPU buffer is created.
    """
    fn = "dense_linear"
    weight, key = _as_dense(fn, weight)
    was_torch = is_torch_tensor(x)
    xa = as_array(fn, "x", x, np.float32, contiguous=False)
    k, n = weight.in_features, weight.out_features
    if xa.ndim < 1 or xa.shape[-1] != k:
        raise ShapeError(fn, "x", f"(..., K) with K = {k} (the weight's in_features)", describe(x))
    ba = None
    if bias is not None:
        ba = as_array(fn, "bias", bias, np.float32)
        if ba.shape != (n,):
            raise ShapeError(fn, "bias", f"shape ({n},) (the weight's out_features)", describe(bias))
    lead = xa.shape[:-1]
    p = DenseProblem(math.prod(lead), n, k, weight.dtype, ba is not None)
    if p.m == 0:
        if isinstance(kernel, str) and kernel not in DENSE_KERNELS:
            select_dense(p, None, kernel)  # raises for an unknown name
        return _wrap(np.zeros((*lead, n), np.float32), was_torch)
    runtime = get_runtime()
    spec = choose_dense(runtime, fn, p, kernel)  # every check before any GPU buffer exists
    x2d = np.ascontiguousarray(xa).reshape(p.m, k)
    usage = runtime.wgpu.BufferUsage
    with runtime.device_calls():
        x_buf = runtime.buffers.upload(x2d, usage.STORAGE, "q4gsw/x", align=16)
        out_buf = runtime.buffers.create(4 * p.m * n, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST, "q4gsw/out")
        runtime.poison(out_buf, p.m * n)
        bias_buf = gpu_placeholder(runtime) if ba is None else runtime.buffers.upload(ba, usage.STORAGE, "q4gsw/bias")
        plan = None
        try:
            plan = plan_dense(runtime, fn, weight, p, x_buf, out_buf, bias_buf, kernel=spec, weight_key=key)
            submit(runtime, plan.dispatches)
            out = runtime.buffers.read(out_buf, 4 * p.m * n, np.float32)
        finally:
            runtime.buffers.destroy(x_buf, out_buf, bias_buf)
            if plan is not None:
                plan.release(runtime)
    return _wrap(out.reshape(*lead, n), was_torch)


def choose_dense(runtime, fn: str, p: DenseProblem, kernel: "str | DenseSpec | None" = None) -> DenseSpec:
    """The dense kernel for p on runtime's device (kernels.dense.select_dense), then the size
    checks of ops.plan.check_sizes. Makes no GPU calls."""
    spec = select_dense(p, runtime.caps, kernel)
    check_sizes(fn, p, runtime.caps, spec)
    return spec


def plan_dense(runtime, fn: str, weight: DenseWeight, p: DenseProblem, x_buf, out_buf, bias_buf, *,
               kernel: "str | DenseSpec | None" = None, weight_key=None) -> LinearPlan:
    """Plan out = x @ weight.T (+ bias) on runtime's device, as ops.plan.plan_linear does for int4.

    Args:
        fn: the public function's name, for errors.
        weight: the DenseWeight (uploaded on first use, through runtime.weights).
        p: the problem, checked against weight by the caller.
        x_buf: (M, K) float32; out_buf: (M, N) float32; bias_buf: (N,) float32 or a 4-byte
            placeholder when p.has_bias is False.
        kernel: as choose_dense.
        weight_key: what the runtime keeps the weight's GPU copy for (default: the weight).
    Returns:
        the LinearPlan (one dispatch per weight chunk); submit its dispatches, then release() it.
    """
    spec = choose_dense(runtime, fn, p, kernel)
    owned: list = []
    dispatches = []
    usage = runtime.wgpu.BufferUsage
    try:
        for chunk in runtime.weights.chunks(weight, key=weight_key):
            cp = p.with_n(chunk.n)
            words = np.array(spec.params(cp, out_stride=p.n, out_offset=chunk.n0), np.uint32)
            params = runtime.buffers.upload(words, usage.UNIFORM, "q4gsw/dense-params")
            owned.append(params)
            n_tiles, m_tiles = spec.tiles(cp)
            nbytes = p.element_bytes * chunk.n * p.k + 4 * p.m * p.k + 4 * p.m * chunk.n
            dispatches.append(bind(runtime, spec.key(cp), (out_buf, x_buf, chunk.weights, bias_buf, params),
                                   n_tiles * m_tiles, nbytes=nbytes, flops=2 * p.m * p.k * chunk.n))
    except BaseException:
        runtime.buffers.destroy(*owned)
        raise
    return LinearPlan(spec, p, dispatches, owned)


def _as_dense(fn: str, weight) -> tuple[DenseWeight, object]:
    """(the DenseWeight, the runtime's key for its GPU copy): a DenseWeight is its own key; a
    raw array is wrapped, and keyed by a token that lives while the array object does."""
    if isinstance(weight, DenseWeight):
        return weight, weight
    if not (isinstance(weight, np.ndarray) or is_torch_tensor(weight)):
        raise DTypeError(fn, "weight", "a q4gsw.DenseWeight, or an (N, K) float32/float16 array or tensor",
                         describe(weight))
    try:
        dense = DenseWeight(weight)
    except ArgumentError as exc:  # report it as the op's error
        raise type(exc)(fn, "weight", exc.expected, exc.got) from None
    return dense, _array_keys.key((weight,))


#: The keys under which the runtime keeps the GPU copy of a raw dense weight array while it lives.
_array_keys = ObjectKeys()


def _wrap(out: np.ndarray, was_torch: bool):
    if was_torch:
        import torch

        return torch.from_numpy(out)
    return out
