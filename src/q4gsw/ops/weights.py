"""A PackedWeight on the GPU: uploaded once per device, split along N to fit the binding limit."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..format import PackedWeight


@dataclasses.dataclass
class WeightChunk:
    """Output features [n0, n0 + n) of a weight, as GPU buffers."""

    n0: int
    n: int
    weights: object
    scales: object
    scale_stride: int


def fits_one_binding(weight: PackedWeight, max_binding: int) -> bool:
    """Whether the bytes and the used scale rows (padded_N wide) each fit one binding."""
    return (weight.weights.nbytes <= max_binding
            and 4 * weight.num_groups * weight.scales.shape[1] <= max_binding)


def rows_per_chunk(weight: PackedWeight, max_binding: int) -> int:
    """Output features per chunk: all of them when they fit one binding, else as many as
    keep a chunk's bytes and its own scale columns within the limit."""
    if fits_one_binding(weight, max_binding):
        return weight.out_features
    per_row = max(weight.weights.shape[1], 4 * weight.num_groups)
    return max(1, min(weight.out_features, max_binding // per_row))


def gpu_weight(runtime, weight: PackedWeight) -> list[WeightChunk]:
    """The weight's chunks on runtime's device, uploaded on first use and cached on the weight.

    One chunk uploads ExecuTorch's bytes and scales as they are (scales keep their padded_N
    stride); larger weights are split along N, each chunk with its own rows and scale columns.
    """
    cached = weight._gpu.get(id(runtime))
    if cached is not None and cached[0] is runtime:
        return cached[1]
    usage = runtime.wgpu.BufferUsage.STORAGE
    as_is = fits_one_binding(weight, runtime.caps.max_binding_size)
    step = rows_per_chunk(weight, runtime.caps.max_binding_size)
    n_total = weight.out_features
    chunks = []
    for n0 in range(0, n_total, step):
        n = min(step, n_total - n0)
        if as_is:
            scales, stride = weight.scales[: weight.num_groups], weight.scales.shape[1]
        else:
            scales, stride = np.ascontiguousarray(weight.scales[: weight.num_groups, n0 : n0 + n]), n
        chunks.append(WeightChunk(
            n0, n,
            runtime.buffers.upload(weight.weights[n0 : n0 + n], usage, f"q4gsw/weights[{n0}:{n0 + n}]"),
            runtime.buffers.upload(scales, usage, f"q4gsw/scales[{n0}:{n0 + n}]", align=16),  # read as vec4
            stride,
        ))
    weight._gpu[id(runtime)] = (runtime, chunks)
    return chunks


def release_gpu_weight(weight: PackedWeight) -> None:
    """Free the weight's GPU buffers on every device now (they are also freed with the weight)."""
    for runtime, chunks in weight._gpu.values():
        for c in chunks:
            runtime.buffers.destroy(c.weights, c.scales)
    weight._gpu.clear()
