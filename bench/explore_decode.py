"""Explore decode-kernel override constants on the current adapter (one process, one ceiling).

Usage: python bench/explore_decode.py [--shapes 1x4096x14336,...] [--rpw 4,8,16,32]
Prints µs, GB/s and % of the read ceiling per (shape, RPW); passes rotate among weight
copies (>= 256 MiB) so weights come from device memory.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from q4gsw.bench import Workload, parse_shapes, random_weight
from q4gsw.kernels.registry import KERNELS
from q4gsw.runtime import get_runtime
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.timing import time_dispatch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x4096x4096,1x4096x14336,1x14336x4096,1x4096x128256")
    ap.add_argument("--rpw", default="4,8,16,32")
    ap.add_argument("--kernels", default="decode_subgroup,decode_workgroup")
    args = ap.parse_args()
    rt = get_runtime()
    ceiling = measure_read_bandwidth(rt).bytes_per_second
    print(f"ceiling {ceiling / 1e9:.0f} GB/s  ({rt.caps.adapter_name})")
    rng = np.random.default_rng(1)
    for m, k, n in parse_shapes(args.shapes):
        weight = random_weight(rng, n, k, 128)
        work = Workload.rotating(rt, weight, rng.standard_normal((m, k)).astype(np.float32))
        p = work.problem()
        for name in args.kernels.split(","):
            for rpw in (int(v) for v in args.rpw.split(",")):
                spec = KERNELS[name].with_settings({"rows_per_workgroup": rpw})
                if spec.rpw(p) != rpw:  # more rows than workgroup memory holds partials for
                    continue
                ds = work.dispatches(spec)
                t = statistics.median(time_dispatch(rt, ds, repeats=50, warmup=3))
                print(f"M={m} K={k} N={n} {name:>16} RPW={rpw:>2} WG={spec.workgroup_size(p):>4}: "
                      f"{t / 1e3:8.1f} µs {ds[0].nbytes / t:7.0f} GB/s {100 * ds[0].nbytes / (t * 1e-9) / ceiling:5.1f}%")
        work.release()


if __name__ == "__main__":
    main()
