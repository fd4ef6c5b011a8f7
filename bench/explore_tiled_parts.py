"""Diagnostic: where a step of the tiled kernel goes. Times src/q4gsw/kernels/tiled.wgsl as
shipped and with parts cut out of its k loop (results are then wrong; timing only):

- compute_1of32: the FMA loop runs 1 of its 32 k (the tile stores stay live);
- no_loads:      the next step's global loads are dropped (every step re-stores the first);
- no_barriers:   both workgroupBarrier() calls removed (a race; shows what the syncs cost);
- no_loads_no_barriers.

One split-free grid per shape (BM = 128 at M=512, BM = 64 at M=256: 128 workgroups each).
Usage: python bench/explore_tiled_parts.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import re
import statistics

import numpy as np

from q4gsw.bench import Workload, random_weight
from q4gsw.kernels.registry import Problem, TiledSplit
from q4gsw.runtime import get_runtime
from q4gsw.runtime.dispatch import Dispatch, fold_grid
from q4gsw.runtime.pipelines import load_wgsl
from q4gsw.runtime.timing import time_dispatch

NEXT_LOADS = re.compile(r"    // the next step's loads, in flight during this step's FMAs\n    let k1 = k0 \+ BK;\n"
                        r"    if \(k1 < k_end\) \{.*?\n    \}\n", re.S)


def variants(source: str) -> dict[str, str]:
    assert NEXT_LOADS.search(source) and "kk2 < BK;" in source and source.count("workgroupBarrier();") == 2
    no_loads = NEXT_LOADS.sub("", source)
    return {
        "shipped": source,
        "compute_1of32": source.replace("kk2 < BK;", "kk2 < 1u;"),
        "no_loads": no_loads,
        "no_barriers": source.replace("workgroupBarrier();", ""),
        "no_loads_no_barriers": no_loads.replace("workgroupBarrier();", ""),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--shapes", default="512x4096x4096:128,256x4096x4096:64")
    args = ap.parse_args()
    rt = get_runtime()
    rng = np.random.default_rng(7)
    sources = variants(load_wgsl("tiled"))
    for item in args.shapes.split(","):
        shape, rows = item.split(":")
        m, k, n = (int(v) for v in shape.split("x"))
        spec = TiledSplit(int(rows), 1)
        work = Workload.rotating(rt, random_weight(rng, n, k, 128), rng.standard_normal((m, k)).astype(np.float32))
        shipped = work.dispatches(spec)
        p = Problem(m, n, k, 128)
        constants = {name: float(v) for name, v in spec.key(p).constants}
        owned = work._params[-len(shipped):]
        steps = k // 32
        for name, source in sources.items():
            module = rt.device.create_shader_module(code=source)
            pipeline = rt.device.create_compute_pipeline(layout="auto", compute={
                "module": module, "entry_point": "main", "constants": constants})
            layout = pipeline.get_bind_group_layout(0)
            dispatches = []
            for d, chunk, params in zip(shipped, work.chunks, owned):
                entries = [{"binding": i, "resource": {"buffer": b}}
                           for i, b in enumerate((work.out, work.x, chunk.weights, chunk.scales, work.bias, params))]
                dispatches.append(Dispatch(d.key, pipeline, rt.device.create_bind_group(layout=layout, entries=entries),
                                           fold_grid(spec.tiles(p)[0] * spec.tiles(p)[1], rt.caps.max_workgroups_per_dimension)))
            us = statistics.median(time_dispatch(rt, dispatches, repeats=args.repeats, warmup_s=0.2)) / 1e3
            print(f"M={m} K={k} N={n} BM={rows} {name:>22}: {us:8.1f} µs  "
                  f"{us / steps:5.2f} µs a step of 32 k", flush=True)
        work.release()


if __name__ == "__main__":
    main()
