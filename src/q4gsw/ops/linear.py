"""linear_q4gsw: validate every argument, choose a kernel, bind, dispatch, read back."""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from ..checks import as_array, describe, is_torch_tensor, positive_int
from ..errors import ArgumentError, DTypeError, ShapeError, SizeLimitError
from ..format import PackedWeight
from ..kernels.registry import KERNELS, Problem, select
from ..profile import run
from ..runtime import get_runtime
from ..runtime.dispatch import Dispatch, fold_grid
from ..tuning_cache import tuned_choices
from .weights import gpu_weight

POISON = np.uint32(0x7FBADBAD)  # a NaN: an output element no kernel wrote fails any comparison


def linear(x, weight: PackedWeight, bias=None, *, kernel=None):
    """out = x @ dequantize(weight).T (+ bias), computed on the WebGPU device.

    Args:
        x: (..., K) float32 ndarray or torch.Tensor.
        weight: the PackedWeight (N output features, K input features).
        bias: optional (N,) float32.
        kernel: force a kernel by name (see q4gsw.kernels.registry.KERNELS) or as a KernelSpec
            with settings (e.g. TiledSplit(rows=64, split=4)); default: chosen.
    Returns:
        (..., N) float32, an ndarray (a CPU torch.Tensor when x is a torch.Tensor).
    Raises:
        a Q4gswError subclass naming the bad argument, before any GPU buffer is created.
    """
    return _linear("linear", x, weight, bias, kernel)


def linear_q4gsw(x, weights, weight_scales, group_size: int, bias=None, *, kernel=None):
    """ExecuTorch's et_vk.linear_q4gsw(input, weights, weight_scales, group_size, bias=None).

    Args:
        x: (..., K) float32.
        weights: (N, ceil(K/2)) uint8, ExecuTorch's packed bytes, used as they are.
        weight_scales: (num_groups, padded_N) float32.
        group_size: elements of K per scale.
        bias: optional (N,) float32.
    The GPU copy of (weights, weight_scales) is cached while both objects live: treat them as
    constants, as ExecuTorch does.
    """
    fn = "linear_q4gsw"
    xa = as_array(fn, "x", x, np.float32, contiguous=False)
    if xa.ndim < 1 or xa.shape[-1] < 1:
        raise ShapeError(fn, "x", "(..., K) array with K >= 1", describe(x))
    positive_int(fn, "group_size", group_size)
    try:
        weight = PackedWeight(weights, weight_scales, group_size, in_features=xa.shape[-1])
    except ArgumentError as exc:  # report it as the op's error
        raise type(exc)(fn, exc.argument, exc.expected, exc.got) from None
    _share_gpu_cache(weight, weights, weight_scales)
    return _linear(fn, x, weight, bias, kernel)


_cache_lock = threading.Lock()
_gpu_caches: dict[tuple, tuple] = {}


def _share_gpu_cache(weight: PackedWeight, weights, scales) -> None:
    """Give `weight` the GPU cache of earlier calls with the same (weights, scales) objects.

    Only the GPU buffers are cached (keyed by the objects' identity, checked through weak
    references); an entry goes when `weights` is garbage-collected.
    """
    key = (id(weights), id(scales), weight.group_size, weight.in_features)
    with _cache_lock:
        hit = _gpu_caches.get(key)
        if hit is not None and hit[0]() is weights and hit[1]() is scales:
            object.__setattr__(weight, "_gpu", hit[2])
            return
        try:
            refs = (weakref.ref(weights, lambda _, key=key: _gpu_caches.pop(key, None)), weakref.ref(scales))
        except TypeError:
            return  # not weak-referenceable: no caching
        _gpu_caches[key] = (*refs, weight._gpu)


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


def check_sizes(fn: str, p: Problem, caps, spec) -> None:
    """Refuse what the adapter cannot bind or dispatch, naming the argument.

    The weight itself never is refused: ops.weights splits it along N to fit the binding
    limit (a single row always fits once x does, as 4K bytes of x exceed K/2 of a row).
    """
    limit = caps.max_binding_size
    if 4 * p.m * p.k > limit:
        raise SizeLimitError(fn, "x", f"at most {limit} bytes (the adapter's storage binding limit)",
                             f"{4 * p.m * p.k} bytes (M={p.m}, K={p.k})")
    if 4 * p.m * p.n > limit:
        raise SizeLimitError(fn, "x", f"M with M * N * 4 <= {limit} bytes of output",
                             f"{4 * p.m * p.n} bytes (M={p.m}, N={p.n})")
    n_tiles, m_tiles = spec.tiles(p)
    dim = caps.max_workgroups_per_dimension
    if n_tiles * m_tiles > dim * dim:
        raise SizeLimitError(fn, "x", f"at most {dim}^2 workgroups", f"{n_tiles * m_tiles} for M={p.m}, N={p.n}")


def _linear(fn, x, weight, bias, kernel):
    was_torch = is_torch_tensor(x)
    xa, ba, p = _validate(fn, x, weight, bias)
    lead = xa.shape[:-1]
    if p.m == 0:
        if isinstance(kernel, str) and kernel not in KERNELS:
            select(p, None, kernel)  # raises for an unknown name
        return _wrap(np.zeros((*lead, p.n), np.float32), was_torch)
    runtime = get_runtime()
    spec = select(p, runtime.caps, kernel, tuned=tuned_choices(runtime))
    check_sizes(fn, p, runtime.caps, spec)
    x2d = np.ascontiguousarray(xa).reshape(p.m, p.k)
    if ba is not None:
        ba = np.ascontiguousarray(ba)
    with runtime.device_calls():
        out = _run(runtime, spec, p, x2d, weight, ba)
    return _wrap(out.reshape(*lead, p.n), was_torch)


def _wrap(out: np.ndarray, was_torch: bool):
    if was_torch:
        import torch

        return torch.from_numpy(out)
    return out


def _run(runtime, spec, p: Problem, x2d: np.ndarray, weight: PackedWeight, bias) -> np.ndarray:
    wgpu = runtime.wgpu
    usage = wgpu.BufferUsage
    chunks = gpu_weight(runtime, weight)
    x_buf = runtime.buffers.upload(x2d, usage.STORAGE, "q4gsw/x")
    out_buf = runtime.buffers.create(4 * p.m * p.n, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST, "q4gsw/out")
    if runtime.poison_outputs:
        runtime.device.queue.write_buffer(out_buf, 0, np.full(p.m * p.n, POISON, np.uint32))
    bias_buf = runtime.buffers.upload(bias if bias is not None else np.zeros(1, np.float32), usage.STORAGE, "q4gsw/bias")
    temps = [x_buf, out_buf, bias_buf]
    try:
        dispatches = []
        for c in chunks:
            dispatch, owned = make_dispatch(runtime, spec, p, c, x_buf, out_buf, bias_buf, weight)
            temps += owned
            dispatches.append(dispatch)
        run(dispatches, runtime)
        return runtime.buffers.read(out_buf, 4 * p.m * p.n, np.float32).reshape(p.m, p.n)
    finally:
        runtime.buffers.destroy(*temps)


def make_dispatch(runtime, spec, p: Problem, chunk, x_buf, out_buf, bias_buf, weight: PackedWeight):
    """The dispatch of spec over one weight chunk, and the buffers it owns (params; with a
    split-K kernel also the partial sums and the reduction's params): the caller frees them.

    A split-K kernel (spec.split(p) > 1) writes SPLIT partial M x n slices into its own
    buffer; a reduce_splits dispatch in the same pass adds them (and the bias) into out.
    """
    usage = runtime.wgpu.BufferUsage
    cp = Problem(p.m, chunk.n, p.k, p.group_size, p.has_bias)
    n_tiles, m_tiles = spec.tiles(cp)
    tiles = n_tiles * m_tiles
    split = spec.split(cp)
    slice_size = cp.m * cp.n
    owned = []
    target, out_stride, out_offset = out_buf, p.n, chunk.n0
    if split > 1:
        target = runtime.buffers.create(4 * split * slice_size, usage.STORAGE | usage.COPY_DST, "q4gsw/partial-sums")
        owned.append(target)
        if runtime.poison_outputs:
            runtime.device.queue.write_buffer(target, 0, np.full(split * slice_size, POISON, np.uint32))
        out_stride, out_offset = cp.n, 0
    # min(group_size, K): the same groups for every k < K, and always fits a u32
    params = np.array([cp.m, cp.n, cp.k, cp.row_bytes, min(cp.group_size, cp.k), cp.num_groups, chunk.scale_stride,
                       out_stride, out_offset, n_tiles, tiles, slice_size if split > 1 else 0], np.uint32)
    params_buf = runtime.buffers.upload(params, usage.UNIFORM, "q4gsw/params")
    owned.append(params_buf)
    d = _bound(runtime, spec.key(cp), (target, x_buf, chunk.weights, chunk.scales, bias_buf, params_buf), tiles)
    if split > 1:
        reduce_params = runtime.buffers.upload(
            np.array([cp.m, cp.n, p.n, chunk.n0, slice_size, slice_size, 0, 0], np.uint32), usage.UNIFORM,
            "q4gsw/reduce-params")
        owned.append(reduce_params)
        reduce_key = spec.reduce_key(cp)
        d.then = (_bound(runtime, reduce_key, (out_buf, target, bias_buf, reduce_params),
                         -(-slice_size // dict(reduce_key.constants)["WG"])),)
    d.nbytes = chunk.n * cp.row_bytes + 4 * cp.num_groups * chunk.n + 4 * cp.m * cp.k + 4 * cp.m * chunk.n
    d.flops = 2 * cp.m * cp.k * chunk.n
    return d, owned


def _bound(runtime, key, buffers, workgroups: int) -> Dispatch:
    """A Dispatch of key's pipeline with buffers bound at 0, 1, ... of group 0."""
    pipeline = runtime.pipelines.get(key)
    bind_group = runtime.device.create_bind_group(
        label=str(key),
        layout=pipeline.get_bind_group_layout(0),
        entries=[{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)],
    )
    return Dispatch(key, pipeline, bind_group, fold_grid(workgroups, runtime.caps.max_workgroups_per_dimension))
