"""Experiment: the prefill kernels in one process (same ceiling, same weight copies).

- `tiled` as shipped against an earlier version (--old, default bench/experiments/tiled_v1.wgsl: no prefetch;
  tiled_double_buffer.wgsl: 16-k steps in two buffers) with the
  same override constants (64- and 128-row tiles, no split) at M >= 256;
- every `tiled_split` variant (64 / 128 rows, split 1..16) and the decode kernel, at the
  mid M where the 128 x 128 grid underfills the GPU.

Usage: python bench/explore_tiled.py [--shapes 512x4096x4096,...] [--out results.json]
Prints µs and TFLOP/s per kernel and shape (GPU timestamps, median, weights rotated past L2).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, parse_shapes, random_weight
from q4gsw.format import linear_reference
from q4gsw.kernels.registry import KERNELS, Problem, TiledSplit
from q4gsw.runtime import get_runtime
from q4gsw.runtime.dispatch import Dispatch
from q4gsw.runtime.timing import time_dispatch

DEFAULT_SHAPES = ("512x4096x4096,512x4096x14336,2048x4096x4096,"
                  "16x4096x4096,32x4096x4096,64x4096x4096,128x4096x4096,256x4096x4096,"
                  "64x4096x14336,128x4096x14336,64x14336x4096,128x14336x4096")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--old", default=str(Path(__file__).parent / "experiments" / "tiled_v1.wgsl"))
    ap.add_argument("--out")
    args = ap.parse_args()
    rt = get_runtime()
    rng = np.random.default_rng(5)
    old_source = Path(args.old).read_text()
    old = rt.device.create_shader_module(code=old_source)
    old_name = Path(args.old).stem
    rows = []
    for m, k, n in parse_shapes(args.shapes):
        weight = random_weight(rng, n, k, 128)
        x = rng.standard_normal((m, k)).astype(np.float32)
        work = Workload.rotating(rt, weight, x)
        p = Problem(m, n, k, 128)
        flops = 2 * m * n * k
        ref = linear_reference(x, weight)
        ref_max = np.abs(ref).max()

        def timed(name, dispatches, check=True):
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            time_dispatch(rt, dispatches[0], repeats=1, warmup=0)
            err = float(np.abs(work.read_out() - ref).max() / ref_max) if check else None
            us = statistics.median(time_dispatch(rt, dispatches, repeats=args.repeats, warmup_s=0.1)) / 1e3
            rows.append({"m": m, "k": k, "n": n, "kernel": name, "us": us, "tflop_per_s": flops / us / 1e6,
                         "rel_error": err})
            print(f"M={m:5d} K={k:5d} N={n:5d} {name:>28}: {us:9.1f} µs {flops / us / 1e6:6.2f} TFLOP/s"
                  + (f"  rel.err {err:.1e}" if err is not None else ""), flush=True)

        timed("tiled", work.dispatches(KERNELS["tiled"]))
        if m >= 256:
            for bm in (128, 64) if "override BM" in old_source else (128,):
                spec = TiledSplit(bm, 1)
                new = work.dispatches(spec)
                params = work._params[-len(new):]
                constants = {c: float(v) for c, v in spec.key(p).constants if f"override {c}:" in old_source}
                pipeline = rt.device.create_compute_pipeline(layout="auto", compute={
                    "module": old, "entry_point": "main", "constants": constants})
                layout = pipeline.get_bind_group_layout(0)
                olds = [Dispatch(d.key, pipeline, rt.device.create_bind_group(layout=layout, entries=[
                    {"binding": i, "resource": {"buffer": b}}
                    for i, b in enumerate((work.out, work.x, c.weights, c.scales, work.bias, pb))]), d.grid)
                    for d, c, pb in zip(new, work.chunks, params)]
                timed(f"rows {bm}: shipped", new)
                timed(f"rows {bm}: {old_name}", olds)
        if m <= 256:
            timed("decode_subgroup", work.dispatches(KERNELS["decode_subgroup"]))
            for variant in TiledSplit().variants(p):
                timed(f"tiled_split rows={variant.rows} split={variant.fixed_split}", work.dispatches(variant))
            auto = KERNELS["tiled_split"]
            timed(f"tiled_split auto ({auto.tile_rows(p)}, {auto.split(p)})", work.dispatches(auto), check=False)
        work.release()
    if args.out:
        Path(args.out).write_text(json.dumps({"adapter": rt.caps.adapter_name, "driver": rt.caps.driver,
                                              "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
