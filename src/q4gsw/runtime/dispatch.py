"""Dispatches: a pipeline, its bind group and grid, encoded one compute pass each, labelled."""

from __future__ import annotations

import dataclasses

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
    y = -(-workgroups // max_per_dimension)
    if y > max_per_dimension:
        raise ValueError(f"{workgroups} workgroups exceed {max_per_dimension}^2")
    x = -(-workgroups // y)
    return (x, y, 1)


def encode(encoder, dispatch: Dispatch, timestamp_writes=None) -> None:
    """Encode dispatch as its own compute pass, labelled with its kernel key."""
    cpass = encoder.begin_compute_pass(label=str(dispatch.key), timestamp_writes=timestamp_writes)
    record(cpass, dispatch)
    cpass.end()


def record(cpass, dispatch: Dispatch) -> None:
    """Record dispatch and its follow-ups into an open compute pass (WebGPU orders a
    dispatch's storage writes before the next dispatch of the pass reads them)."""
    cpass.set_pipeline(dispatch.pipeline)
    cpass.set_bind_group(0, dispatch.bind_group)
    cpass.dispatch_workgroups(*dispatch.grid)
    for follow_up in dispatch.then:
        record(cpass, follow_up)
