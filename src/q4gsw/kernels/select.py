"""The kernel choice: KERNELS, and select(problem, caps) -> KernelSpec (pure: no GPU calls)."""

from __future__ import annotations

from ..errors import UnsupportedShapeError
from .decode import Decode, DecodeBatch
from .general import General, Rowwise
from .problem import Problem, tuning_bucket
from .spec import KernelSpec
from .tiled import Tiled, TiledSplit

#: Every kernel, by name, in the order ties are broken.
KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (Decode("subgroup", 32768), Decode("workgroup", 4096), DecodeBatch(), Tiled(), TiledSplit(),
                 General(), Rowwise())
}


def select(p: Problem, caps, kernel: "str | KernelSpec | None" = None, tuned: dict | None = None) -> KernelSpec:
    """The kernel to run p on a device with capabilities `caps` (None: shape checks only).

    Args:
        kernel: a name from KERNELS, or a KernelSpec (e.g. with settings): that kernel or
            UnsupportedShapeError saying why it cannot run p.
        tuned: the tuning cache's entries ({bucket: {"kernel", "settings"}}, see q4gsw tune):
            the entry of p's bucket wins when it supports p.
    Returns:
        else the supported kernel with the least predicted_seconds (ties: KERNELS order),
        else the first supported fallback (predicted_seconds None).
    """
    if kernel is not None:
        return _named(p, caps, kernel)
    if tuned:
        entry = tuned.get(tuning_bucket(p))
        spec = KERNELS.get(entry["kernel"]) if entry else None
        if spec is not None:
            spec = spec.bind(caps).with_settings(entry.get("settings", {}))
            if spec.supports(p, caps) is None:
                return spec
    reasons, best, fallback = [], None, None
    for spec in KERNELS.values():
        if spec.baseline:
            continue
        spec = spec.bind(caps)
        reason = spec.supports(p, caps)
        if reason is not None:
            reasons.append(f"{spec.name}: {reason}")
            continue
        seconds = spec.predicted_seconds(p)
        if seconds is None:
            fallback = fallback or spec
        elif best is None or seconds < best[0]:
            best = (seconds, spec)
    if best is not None:
        return best[1]
    if fallback is not None:
        return fallback
    raise UnsupportedShapeError(f"no kernel runs M={p.m} N={p.n} K={p.k} group_size={p.group_size}: "
                                + "; ".join(reasons))


def _named(p: Problem, caps, kernel: "str | KernelSpec") -> KernelSpec:
    if isinstance(kernel, KernelSpec):
        spec = kernel
    elif kernel in KERNELS:
        spec = KERNELS[kernel].bind(caps)
    else:
        raise UnsupportedShapeError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    reason = spec.supports(p, caps)
    if reason:
        raise UnsupportedShapeError(f"kernel {spec.name!r} cannot run M={p.m} N={p.n} K={p.k} "
                                    f"group_size={p.group_size}: {reason}")
    return spec
