"""Experiment: the decode kernel with a persistent grid (bench/experiments/decode_persistent.wgsl)
against the shipped decode kernel, in one process (same ceiling, same weight copies).

Usage: python bench/explore_persistent.py [--shapes 1x4096x14336,...] [--grids 264,528,1056]
       [--variants 1,2] [--rpw 16,32,64]
Variant 1: decode_persistent.wgsl (three barriers a block, composed with reduce_<reduction>);
variant 2: decode_persistent2.wgsl (one barrier a block, double-buffered subgroup partials).
--rpw also times the shipped kernel with those rows per workgroup.
M = 1 only. Prints µs and % of the read ceiling (one pass per dispatch, and chained) and the
persistent variant's max relative error against the float64 reference.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, _reference_rel_error, parse_shapes, random_weight
from q4gsw.kernels.registry import KERNELS
from q4gsw.runtime import get_runtime
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.dispatch import Dispatch, fold_grid
from q4gsw.runtime.pipelines import load_wgsl
from q4gsw.runtime.timing import time_chain, time_dispatch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x4096x4096,1x4096x14336,1x14336x4096,1x4096x128256")
    ap.add_argument("--grids", default="264,528,1056")
    ap.add_argument("--reduction", default="subgroup")
    ap.add_argument("--variants", default="1,2")
    ap.add_argument("--rpw", default="")
    args = ap.parse_args()
    rt = get_runtime()
    dev = rt.device
    usage = rt.wgpu.BufferUsage
    ceiling = measure_read_bandwidth(rt).bytes_per_second
    print(f"ceiling {ceiling / 1e9:.0f} GB/s ({rt.caps.adapter_name})")
    spec = KERNELS[f"decode_{args.reduction}"]
    experiments = Path(__file__).parent / "experiments"
    modules = {}
    for v in args.variants.split(","):
        source = ((experiments / "decode_persistent.wgsl").read_text() + "\n" + load_wgsl(f"reduce_{args.reduction}")
                  if v == "1" else (experiments / "decode_persistent2.wgsl").read_text())
        modules[v] = dev.create_shader_module(code=source)
    rng = np.random.default_rng(3)
    for m, k, n in parse_shapes(args.shapes):
        if m != 1:
            continue
        weight = random_weight(rng, n, k, 128)
        x = rng.standard_normal((m, k)).astype(np.float32)
        work = Workload.rotating(rt, weight, x)
        p = work.problem()
        shipped = work.dispatches(spec)

        def report(name, dispatches):
            t = statistics.median(time_dispatch(rt, dispatches, repeats=60, warmup_s=0.3))
            tc = statistics.median(time_chain(rt, dispatches))
            nb = shipped[0].nbytes
            print(f"M=1 K={k} N={n} {name:>16}: {t / 1e3:7.1f} µs {100 * nb / (t * 1e-9) / ceiling:5.1f}% a pass; "
                  f"chained {tc / 1e3:7.1f} µs {100 * nb / (tc * 1e-9) / ceiling:5.1f}%")

        report("shipped", shipped)
        for r in (int(v) for v in args.rpw.split(",") if v):
            report(f"shipped rpw {r}", work.dispatches(spec.with_settings({"rows_per_workgroup": r})))
        rows = spec.rpw(p)
        blocks = -(-n // rows)
        for (v, module), grid in itertools.product(modules.items(), (int(g) for g in args.grids.split(","))):
            pipeline = dev.create_compute_pipeline(layout="auto", compute={
                "module": module, "entry_point": "main",
                "constants": {c: float(v) for c, v in shipped[0].key.constants}})
            tiles = min(grid, blocks)
            params = rt.buffers.upload(np.array([1, n, k, k // 2, 128, -(-k // 128), work.chunks[0].scale_stride,
                                                 n, 0, blocks, tiles, 0], np.uint32), usage.UNIFORM, "p")
            variants = [Dispatch(shipped[0].key, pipeline, dev.create_bind_group(
                layout=pipeline.get_bind_group_layout(0), entries=[
                    {"binding": i, "resource": {"buffer": b}}
                    for i, b in enumerate((work.out, work.x, chunk.weights, chunk.scales, work.bias, params))]),
                fold_grid(tiles, rt.caps.max_workgroups_per_dimension)) for chunk in work.chunks]
            rt.device.queue.write_buffer(work.out, 0, np.full(n, np.nan, np.float32))
            time_dispatch(rt, variants[0], repeats=1, warmup=0)
            err = _reference_rel_error(work.read_out(), x, weight)
            report(f"persistent{v} {tiles}", variants)
            print(f"    persistent{v} {tiles}: rel. error {err:.1e}")
            rt.buffers.destroy(params)
        work.release()


if __name__ == "__main__":
    main()
