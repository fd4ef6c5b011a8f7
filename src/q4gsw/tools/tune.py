"""`q4gsw tune`: time every kernel configuration per shape bucket and cache the fastest."""

from __future__ import annotations

import statistics

import numpy as np

from ..errors import Q4gswError
from ..kernels import REGISTRIES, Problem, check_activations, tuning_bucket
from ..ops.plan import check_sizes
from ..runtime import get_runtime
from ..runtime.timing import time_dispatch
from ..runtime.tuning_cache import write_cache
from .workload import Workload, parse_shapes, random_weight


def tune(shapes, *, group_size: int = 128, repeats: int = 20, seed: int = 0, activations: str = "f32",
         log=print) -> dict:
    """For each (M, K, N): time each supported kernel's variants (GPU timestamps, median,
    weight rotation past L2 as in the benchmark), write the fastest into the tuning cache
    and return {bucket: entry}. Baseline kernels are not candidates. activations: "f32", or
    "int8" (the int8-activation kernels, cached in their own buckets: tuning_bucket(p, "int8"))."""
    kernels = REGISTRIES[check_activations(activations)]
    rt = get_runtime()
    rng = np.random.default_rng(seed)
    entries = {}
    for m, k, n in shapes:
        p = Problem(m, n, k, group_size)
        candidates = []
        for spec in kernels.values():
            if spec.baseline:
                continue
            for variant in spec.bind(rt.caps).variants(p):
                if variant.supports(p, rt.caps) is None:
                    try:
                        check_sizes("tune", p, rt.caps, variant)
                    except Q4gswError:
                        continue
                    candidates.append(variant)
        if not candidates:
            log(f"M={m} K={k} N={n}: no kernel supports it; nothing cached")
            continue
        work = Workload.rotating(rt, random_weight(rng, n, k, group_size),
                                 rng.standard_normal((m, k)).astype(np.float32))
        timings = []
        for variant in candidates:
            us = statistics.median(time_dispatch(rt, work.dispatches(variant), repeats=repeats, warmup_s=0.1)) / 1e3
            timings.append((us, variant))
            log(f"M={m} K={k} N={n} {variant.name} {variant.settings() or ''}: {us:.1f} µs")
        work.release()
        us, best = min(timings, key=lambda t: t[0])
        entries[tuning_bucket(p, activations)] = {"kernel": best.name, "settings": best.settings(), "us": us,
                                                  "shape": [m, k, n]}
        log(f"  -> {best.name} {best.settings() or ''}")
    path = write_cache(rt.caps, entries)
    rt.forget_tuning()  # re-read on next use
    log(f"wrote {path}")
    return entries


__all__ = ["tune", "parse_shapes"]
