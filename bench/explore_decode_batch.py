"""Experiment: bench/experiments/decode_batch.wgsl (2 <= M <= 8, the weight unpack shared by
the rows of x, transpose-reduction across the subgroup) against the shipped decode kernel
and the default route, in one process (same weight copies, L2 rotation).

Usage: python bench/explore_decode_batch.py [--shapes 2x4096x14336,...] [--rows 16,32]
K must be 8 x (a workgroup size <= 1024). Prints µs, the ratio to M=1 of the same weight,
and the max relative error against the float64 reference.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, parse_shapes, random_weight
from q4gsw.format import linear_reference
from q4gsw.kernels.registry import KERNELS, Problem, select
from q4gsw.runtime import get_runtime
from q4gsw.runtime.dispatch import Dispatch, fold_grid
from q4gsw.runtime.pipelines import KernelKey
from q4gsw.runtime.timing import time_dispatch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x4096x14336,2x4096x14336,4x4096x14336,8x4096x14336,16x4096x4096")
    ap.add_argument("--rows", default="16,32")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    rt = get_runtime()
    usage = rt.wgpu.BufferUsage
    source = (Path(__file__).parent / "experiments" / "decode_batch.wgsl").read_text()
    module = rt.device.create_shader_module(code=source)
    rng = np.random.default_rng(11)
    m1_us = {}
    for m, k, n in parse_shapes(args.shapes):
        weight = random_weight(rng, n, k, 128)
        x = rng.standard_normal((m, k)).astype(np.float32)
        ref = linear_reference(x, weight)
        work = Workload.rotating(rt, weight, x)
        p = Problem(m, n, k, 128)

        def timed(name, dispatches):
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            time_dispatch(rt, dispatches[0], repeats=1, warmup=0)
            err = float(np.abs(work.read_out() - ref).max() / np.abs(ref).max())
            us = statistics.median(time_dispatch(rt, dispatches, repeats=args.repeats, warmup_s=0.2)) / 1e3
            if m == 1:
                m1_us[(k, n)] = us
            base = m1_us.get((k, n))
            print(f"M={m:3d} K={k} N={n} {name:>34}: {us:8.1f} µs"
                  + (f"  {us / base:4.2f}x M=1" if base else "") + f"  rel.err {err:.1e}", flush=True)

        timed("decode_subgroup (shipped)", work.dispatches(KERNELS["decode_subgroup"]))
        route = select(p, rt.caps)
        if route.name != "decode_subgroup":
            timed(f"{route.name} (route)", work.dispatches(route))
        if m > 1 and k % 8 == 0 and k // 8 <= 1024 and (k // 8) % 32 == 0:
            wg = k // 8
            for rows in (int(r) for r in args.rows.split(",")):
                for mb in (2, 4, 8):
                    if mb > 2 * m or (mb < m and mb != 8):
                        continue
                    constants = {"WG": wg, "ROWS": rows, "MB": mb, "MIN_LANES": 4 if rt.caps.is_cpu else 32,
                                 "HAS_BIAS": 0}
                    pipeline = rt.device.create_compute_pipeline(layout="auto", compute={
                        "module": module, "entry_point": "main", "constants": {c: float(v) for c, v in constants.items()}})
                    n_tiles = -(-n // rows)
                    tiles = n_tiles * -(-m // mb)
                    params = rt.buffers.upload(np.array([m, n, k, k // 2, 128, -(-k // 128), work.chunks[0].scale_stride,
                                                         n, 0, n_tiles, tiles, 0], np.uint32), usage.UNIFORM, "p")
                    layout = pipeline.get_bind_group_layout(0)
                    key = KernelKey("decode_batch", tuple(constants.items()))
                    dispatches = [Dispatch(key, pipeline, rt.device.create_bind_group(layout=layout, entries=[
                        {"binding": i, "resource": {"buffer": b}}
                        for i, b in enumerate((work.out, work.x, c.weights, c.scales, work.bias, params))]),
                        fold_grid(tiles, rt.caps.max_workgroups_per_dimension)) for c in work.chunks]
                    timed(f"decode_batch rows={rows} MB={mb}", dispatches)
                    rt.buffers.destroy(params)
        work.release()


if __name__ == "__main__":
    main()
