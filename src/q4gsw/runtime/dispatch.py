"""Dispatches: a pipeline, its bind group and grid, labelled; bound by bind(), recorded by record()."""

from __future__ import annotations

import dataclasses

from ..arith import ceil_div
from .pipelines import KernelKey


@dataclasses.dataclass
class Dispatch:
    """One labelled dispatch, with the bytes and flops it is counted for in profiles."""

    key: KernelKey
    pipeline: object
    bind_group: object
    grid: tuple[int, int, int]
    nbytes: int = 0
    flops: int = 0
    #: dispatches that finish the job in the same compute pass (a split-K kernel's reduction)
    then: tuple["Dispatch", ...] = ()


def fold_grid(workgroups: int, max_per_dimension: int) -> tuple[int, int, int]:
    """(x, y, 1) with x * y >= workgroups, each <= max_per_dimension; kernels linearize
    workgroup_id.x + workgroup_id.y * num_workgroups.x and drop ids past the count."""
    if workgroups <= max_per_dimension:
        return (max(workgroups, 1), 1, 1)
    y = ceil_div(workgroups, max_per_dimension)
    if y > max_per_dimension:
        raise ValueError(f"{workgroups} workgroups exceed {max_per_dimension}^2")
    x = ceil_div(workgroups, y)
    return (x, y, 1)


def bind(runtime, key: KernelKey, buffers, workgroups: int, *, nbytes: int = 0, flops: int = 0) -> Dispatch:
    """A Dispatch of key's pipeline on runtime's device, with `buffers` bound at bindings
    0, 1, ... of group 0 and `workgroups` folded into a grid (see fold_grid).

    Args:
        buffers: wgpu buffers in binding order (every kernel's header lists its bindings).
        nbytes, flops: what the dispatch is counted for in profiles.
    """
    pipeline = runtime.pipelines.get(key)
    bind_group = runtime.device.create_bind_group(
        label=str(key), layout=pipeline.get_bind_group_layout(0),
        entries=[{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)])
    grid = fold_grid(workgroups, runtime.caps.max_workgroups_per_dimension)
    return Dispatch(key, pipeline, bind_group, grid, nbytes, flops)


def record(cpass, dispatch: Dispatch) -> None:
    """Record dispatch and its follow-ups into an open compute pass (WebGPU orders a
    dispatch's storage writes before the next dispatch of the pass reads them)."""
    cpass.set_pipeline(dispatch.pipeline)
    cpass.set_bind_group(0, dispatch.bind_group)
    cpass.dispatch_workgroups(*dispatch.grid)
    for follow_up in dispatch.then:
        record(cpass, follow_up)
