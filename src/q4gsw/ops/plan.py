"""The one planning step of linear_q4gsw: a problem, a weight and its buffers -> the dispatches
that compute it and the buffers they own. q4gsw.linear, Chain.linear, the benchmark and the
tuner all plan through here, so they choose kernels (the tuning cache included), check sizes
and upload weights the same way."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import SizeLimitError, ValueRangeError
from ..kernels import REGISTRIES, KernelSpec, Problem, check_activations, select
from ..kernels.spec import reduce_workgroups
from ..runtime.dispatch import Dispatch, bind
from ..runtime.weights import WeightChunk

@dataclasses.dataclass
class LinearPlan:
    """What plan_linear made: the kernel, the dispatches (one per weight chunk, each with its
    split-K reduction as a follow-up) and the buffers they own (params, partial sums)."""

    spec: KernelSpec
    problem: Problem
    dispatches: list[Dispatch]
    owned: list

    def release(self, runtime) -> None:
        """Free the owned buffers (the dispatches must not run afterwards)."""
        runtime.buffers.destroy(*self.owned)
        self.owned.clear()


def choose_kernel(runtime, fn: str, p: Problem, kernel: "str | KernelSpec | None" = None, *,
                  activations: str = "f32") -> KernelSpec:
    """The kernel for p on runtime's device: `kernel` if given (name or KernelSpec), else the
    tuned choice for p's bucket, else the least predicted time (kernels.select), among the
    kernels computing with `activations` ("f32", or "int8": x quantized on the GPU, see
    kernels/int8.py); then the size checks. Makes no GPU calls; raises ValueRangeError for
    another `activations`, UnsupportedShapeError / SizeLimitError."""
    try:
        check_activations(activations)
    except ValueError:
        raise ValueRangeError(fn, "activations", f"one of {', '.join(map(repr, REGISTRIES))}",
                              repr(activations)) from None
    spec = select(p, runtime.caps, kernel, tuned=runtime.tuned, activations=activations)
    check_sizes(fn, p, runtime.caps, spec)
    return spec


def check_sizes(fn: str, p: Problem, caps, spec: KernelSpec) -> None:
    """Refuse what the adapter cannot bind or dispatch, naming the argument.

    The weight itself never is refused: the runtime splits it along N to fit the binding
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


def plan_linear(runtime, fn: str, weight, p: Problem, x_buf, out_buf, bias_buf, *,
                kernel: "str | KernelSpec | None" = None, weight_key=None, activations: str = "f32") -> LinearPlan:
    """Plan out = x @ dequantize(weight).T (+ bias) on runtime's device.

    Args:
        fn: the public function's name, for errors.
        weight: the PackedWeight (uploaded on first use, through runtime.weights).
        p: the problem (M, N, K, group size, has_bias), checked against weight by the caller.
        x_buf: (M, K) float32; out_buf: (M, N) float32; bias_buf: (N,) float32 or a
            placeholder of 4 bytes when p.has_bias is False.
        kernel: as choose_kernel.
        weight_key: what the runtime keeps the weight's GPU copy for (default: the weight).
        activations: "f32" (default) or "int8" (as choose_kernel). With "int8" and a GEMM kernel
            (spec.separate_quantize) the plan owns two scratch buffers (x as int8, its scales)
            and its first dispatch quantizes x, followed in the same compute pass by the first
            chunk's GEMM; decode_int8 quantizes x inside its own dispatch.
    Returns:
        the LinearPlan; run its dispatches (e.g. runtime.submit.submit), then release() it.
    """
    spec = choose_kernel(runtime, fn, p, kernel, activations=activations)
    owned: list = []
    dispatches = []
    try:
        head, x_bufs = None, (x_buf,)
        if spec.separate_quantize:
            head, x_bufs = _quantize_dispatch(runtime, spec, p, x_buf, owned)
        for chunk in runtime.weights.chunks(weight, key=weight_key):
            dispatches.append(_chunk_dispatch(runtime, spec, p, chunk, x_bufs, out_buf, bias_buf, owned))
        if head is not None:
            # the quantization heads the first chunk's pass; the pass is counted as the op
            head.then = (dispatches[0],)
            head.nbytes += dispatches[0].nbytes
            head.flops += dispatches[0].flops
            dispatches[0] = head
    except BaseException:
        runtime.buffers.destroy(*owned)
        raise
    return LinearPlan(spec, p, dispatches, owned)


def _quantize_dispatch(runtime, spec: KernelSpec, p: Problem, x_buf, owned: list) -> tuple[Dispatch, tuple]:
    """The int8 path's first dispatch (quantize_int8.wgsl): x -> int8 x and per-(row, group)
    scales, in scratch buffers added to `owned`. Returns it and the GEMM's x bindings:
    (int8 x at binding 1, scales at binding 6)."""
    usage = runtime.wgpu.BufferUsage
    xq_bytes, xs_bytes = spec.scratch_bytes(p)
    scratch = usage.STORAGE | usage.COPY_SRC  # COPY_SRC: tests read the quantized x back
    xq = runtime.buffers.create(xq_bytes, scratch, "q4gsw/x-int8")
    owned.append(xq)
    xs = runtime.buffers.create(xs_bytes, scratch, "q4gsw/x-scales")
    owned.append(xs)
    gs, groups = spec.x_group_size(p), spec.x_groups(p)
    params = runtime.buffers.upload(np.array([p.m, p.k, gs, groups, p.m * groups, 0, 0, 0], np.uint32),
                                    usage.UNIFORM, "q4gsw/quantize-params")
    owned.append(params)
    d = bind(runtime, spec.quantize_key(p), (xq, x_buf, xs, params), spec.quantize_workgroups(p),
             nbytes=4 * p.m * p.k + xq_bytes + xs_bytes)
    return d, (xq, xs)


def _chunk_dispatch(runtime, spec: KernelSpec, p: Problem, chunk: WeightChunk, x_bufs: tuple, out_buf, bias_buf,
                    owned: list) -> Dispatch:
    """The dispatch of spec over output features [chunk.n0, chunk.n0 + chunk.n).

    x_bufs: (x,) bound at 1; on the int8 path (int8 x, its scales), bound at 1 and 6.

    A split-K kernel (spec.split > 1) writes SPLIT partial M x n slices into a buffer of its
    own; a reduce_splits dispatch in the same pass adds them (and the bias) into out.
    """
    usage = runtime.wgpu.BufferUsage
    cp = p.with_n(chunk.n)
    n_tiles, m_tiles = spec.tiles(cp)
    tiles = n_tiles * m_tiles
    split = spec.split(cp)
    slice_size = cp.m * cp.n
    target, out_stride, out_offset = out_buf, p.n, chunk.n0
    if split > 1:
        target = runtime.buffers.create(4 * split * slice_size, usage.STORAGE | usage.COPY_DST, "q4gsw/partial-sums")
        owned.append(target)
        runtime.poison(target, split * slice_size)
        out_stride, out_offset = cp.n, 0
    # min(group_size, K): the same groups for every k < K, and always fits a u32
    params = np.array([cp.m, cp.n, cp.k, cp.row_bytes, min(cp.group_size, cp.k), cp.num_groups, chunk.scale_stride,
                       out_stride, out_offset, n_tiles, tiles, slice_size if split > 1 else 0], np.uint32)
    params_buf = runtime.buffers.upload(params, usage.UNIFORM, "q4gsw/params")
    owned.append(params_buf)
    x_bytes = 4 * cp.m * cp.k if len(x_bufs) == 1 else sum(spec.scratch_bytes(cp))
    nbytes = chunk.n * cp.row_bytes + 4 * cp.num_groups * chunk.n + x_bytes + 4 * cp.m * chunk.n
    buffers = (target, x_bufs[0], chunk.weights, chunk.scales, bias_buf, params_buf, *x_bufs[1:])
    d = bind(runtime, spec.key(cp), buffers, tiles, nbytes=nbytes, flops=2 * cp.m * cp.k * chunk.n)
    if split > 1:
        reduce_params = runtime.buffers.upload(
            np.array([cp.m, cp.n, p.n, chunk.n0, slice_size, slice_size, 0, 0], np.uint32), usage.UNIFORM,
            "q4gsw/reduce-params")
        owned.append(reduce_params)
        d.then = (bind(runtime, spec.reduce_key(cp), (out_buf, target, bias_buf, reduce_params),
                       reduce_workgroups(cp)),)
    return d


def gpu_placeholder(runtime):
    """A 4-byte storage buffer bound where a kernel's optional input is absent (bias)."""
    return runtime.buffers.upload(np.zeros(1, np.float32), runtime.wgpu.BufferUsage.STORAGE, "q4gsw/placeholder")
