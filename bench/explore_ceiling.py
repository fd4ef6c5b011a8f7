"""The read ceiling as a function of buffer size: how much of the 1 GiB figure one pass reaches.

Usage: python bench/explore_ceiling.py [--sizes 4,8,16,29.36,64,128,262.67,1GiB] [--out FILE.json]

In one process, for each size (MB = 10^6 bytes; 'MiB'/'GiB' suffixes also taken) it times
read_bandwidth.wgsl and read_bandwidth_x4.wgsl (4 independent vec4 loads per loop trip)
over a buffer of that size, on grids of 132 .. 4224 workgroups of 256, with GPU
timestamps: one compute pass per dispatch (median) and chained (32 dispatches in one timed
pass, per dispatch). On a GPU the timed passes rotate among copies of the buffer totalling
>= 256 MiB (sub-ranges of one pool buffer), so each pass reads from device memory, not
the 50 MB L2; on a CPU adapter there is one copy. It also times an empty pass (the read
kernel with 0 words) and the project's own ceiling (runtime/bandwidth.py), and prints,
per size: the best µs, GB/s and % of the largest size's best GB/s (the 1 GiB figure by
default), the same chained, and GB/s with the empty pass's time taken off.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import numpy as np

from q4gsw.runtime import get_runtime
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.dispatch import Dispatch
from q4gsw.runtime.pipelines import KernelKey
from q4gsw.runtime.timing import time_chain, time_dispatch

ROTATE_BYTES = 256 << 20
WG = 256
#: The default sizes: 4 to 128 MB, the int4 weights of 4096x14336 and 4096x128256, 1 GiB.
DEFAULT_SIZES = (4_000_000, 8_000_000, 16_000_000, 4096 * 14336 // 2, 64_000_000, 128_000_000,
                 4096 * 128256 // 2, 1 << 30)
KERNELS = ("read_bandwidth", "read_bandwidth_x4")


def parse_sizes(text: str) -> list[int]:
    """'4,29.36,1GiB' -> bytes (MB = 10^6 bytes), each rounded down to a multiple of 16."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        for suffix, unit in (("GiB", 1 << 30), ("MiB", 1 << 20), ("MB", 10**6), ("", 10**6)):
            if part.endswith(suffix):
                try:
                    value = float(part[: len(part) - len(suffix)] if suffix else part)
                except ValueError:
                    raise ValueError(f"size {part!r}: expected MB, e.g. 29.36, or 1GiB") from None
                sizes.append(int(value * unit) // 16 * 16)
                break
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", help="MB (10^6 bytes) or with MiB/GiB suffix; default: "
                    + ",".join(f"{s / 1e6:g}" for s in DEFAULT_SIZES[:-1]) + ",1GiB")
    ap.add_argument("--grids", default="132,264,528,1056,2112,4224", help="workgroups of 256")
    ap.add_argument("--repeats", type=int, default=None, help="single-pass runs (30 on a GPU, 10 on a CPU)")
    ap.add_argument("--per-pass", type=int, default=None, help="chained dispatches per pass (32; 4 on a CPU)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    t_start = time.perf_counter()

    rt = get_runtime()
    wgpu, caps = rt.wgpu, rt.caps
    usage = wgpu.BufferUsage
    cpu = caps.is_cpu
    sizes = parse_sizes(args.sizes) if args.sizes else list(DEFAULT_SIZES)
    grids = [int(g) for g in args.grids.split(",")]
    repeats = args.repeats or (10 if cpu else 30)
    per_pass = args.per_pass or (4 if cpu else 32)
    chain_repeats = 3 if cpu else 10
    warmup_s = 0.0 if cpu else 0.05
    align = int(caps.limits.get("min-storage-buffer-offset-alignment", 256))
    max_buffer = int(caps.limits.get("max-buffer-size", caps.max_binding_size))

    project = measure_read_bandwidth(rt)
    print(f"{caps.adapter_name} ({caps.adapter_type}, {caps.backend}); driver {caps.driver}")
    print(f"project ceiling (runtime/bandwidth.py): {project.bytes_per_second / 1e9:.1f} GB/s "
          f"over {project.nbytes >> 20} MiB, {project.median_ns / 1e3:.1f} µs")

    # One pool; size s reads copies of s at offsets i * stride (>= 256 MiB together on a GPU).
    skipped = {s: f"exceeds the {caps.max_binding_size}-byte storage binding limit"
               for s in sizes if s > caps.max_binding_size}
    sizes = [s for s in sizes if s not in skipped]
    plan = {}
    for s in sizes:
        stride = -(-s // align) * align
        copies = 1 if cpu else max(1, -(-ROTATE_BYTES // s))
        copies = max(1, min(copies, (max_buffer - s) // stride + 1))
        plan[s] = (stride, copies)
    pool_bytes = max([(c - 1) * st + s for s, (st, c) in plan.items()] + [16])
    pool = rt.buffers.create(pool_bytes, usage.STORAGE | usage.COPY_DST, "ceiling/pool", align=16)
    chunk = (np.arange((16 << 20) // 4, dtype=np.uint32) * np.uint32(2654435761)) | np.uint32(1)
    for offset in range(0, pool_bytes, chunk.nbytes):
        n = min(chunk.nbytes, pool_bytes - offset)
        rt.device.queue.write_buffer(pool, offset, chunk[: n // 4])
    sink = rt.buffers.create(4 * WG * max(grids + [1]), usage.STORAGE, "ceiling/sink")
    pipelines = {name: rt.pipelines.get(KernelKey(name, (("WG", WG),), family="q4gsw")) for name in KERNELS}
    params_bufs = []

    def dispatches(name, nbytes, grid, copies, stride):
        pipeline = pipelines[name]
        params = rt.buffers.upload(np.array([nbytes // 16, grid * WG, 0, 0], np.uint32), usage.UNIFORM, "ceiling/params")
        params_bufs.append(params)
        key = KernelKey(name, (("WG", WG),), family="q4gsw")
        return [Dispatch(key, pipeline, rt.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
            {"binding": 0, "resource": {"buffer": sink}},
            {"binding": 1, "resource": {"buffer": pool, "offset": i * stride, "size": max(nbytes, 16)}},
            {"binding": 2, "resource": {"buffer": params}}]), (grid, 1, 1), nbytes=nbytes)
            for i in range(copies)]

    def timed(ds):
        single = time_dispatch(rt, ds, repeats=repeats, warmup=3, warmup_s=warmup_s)
        chained = time_chain(rt, ds, per_pass=per_pass, repeats=chain_repeats, warmup_s=warmup_s) if caps.has_timestamps else None
        return {"median_us": statistics.median(single) / 1e3, "min_us": min(single) / 1e3,
                "chained_us": statistics.median(chained) / 1e3 if chained else None}

    # Clocks up before anything is timed.
    time_dispatch(rt, dispatches(KERNELS[0], sizes[-1] if sizes else 16, grids[-1], 1, 0), repeats=1,
                  warmup=0, warmup_s=0.0 if cpu else 1.0)

    empty = {f"grid {g}": timed(dispatches(KERNELS[0], 0, g, 1, 0)) for g in sorted({1, grids[-1]})}
    for name, e in empty.items():
        print(f"empty pass (read_bandwidth, 0 words), {name}: {e['median_us']:.2f} µs single, "
              + (f"{e['chained_us']:.2f} µs chained" if e["chained_us"] is not None else "no chain"))
    empty_us = empty["grid 1"]["median_us"]

    results = []
    for s in sizes:
        stride, copies = plan[s]
        runs = []
        for name in KERNELS:
            for g in grids:
                r = timed(dispatches(name, s, g, copies, stride))
                runs.append({"kernel": name, "grid": g, **r, "gb_per_s": s / (r["median_us"] * 1e3),
                             "chained_gb_per_s": s / (r["chained_us"] * 1e3) if r["chained_us"] else None})
        best = min(runs, key=lambda r: r["median_us"])
        chained = [r for r in runs if r["chained_us"]]
        best_chain = min(chained, key=lambda r: r["chained_us"]) if chained else None
        results.append({
            "bytes": s, "weight_copies": copies, "rotated_bytes": copies * s,
            "best": {"kernel": best["kernel"], "grid": best["grid"], "median_us": best["median_us"],
                     "gb_per_s": best["gb_per_s"],
                     "gb_per_s_excl_empty": s / ((best["median_us"] - empty_us) * 1e3) if best["median_us"] > empty_us else None},
            "best_chained": ({"kernel": best_chain["kernel"], "grid": best_chain["grid"],
                              "chained_us": best_chain["chained_us"], "gb_per_s": best_chain["chained_gb_per_s"]}
                             if best_chain else None),
            "runs": runs,
        })
        print(f"  {s / 1e6:8.2f} MB: best {best['median_us']:9.2f} µs {best['gb_per_s']:8.1f} GB/s "
              f"({best['kernel']}, grid {best['grid']}); {copies} copies")
    rt.buffers.destroy(pool, sink, *params_bufs)

    ref = results[-1] if results else None
    ref_name = (f"{ref['bytes'] / 2**30:g} GiB" if ref and ref["bytes"] % (1 << 30) == 0 else
                f"{ref['bytes'] / 1e6:.2f} MB") if ref else "–"
    for r in results:
        r["pct_of_largest"] = 100 * r["best"]["gb_per_s"] / ref["best"]["gb_per_s"]
        r["pct_of_project_ceiling"] = 100 * r["best"]["gb_per_s"] * 1e9 / project.bytes_per_second
        if r["best_chained"] and ref["best_chained"]:
            r["best_chained"]["pct_of_largest"] = 100 * r["best_chained"]["gb_per_s"] / ref["best_chained"]["gb_per_s"]

    print()
    print(f"Best over kernels x grids; % is of the {ref_name} figure of the same column "
          f"(single: {ref['best']['gb_per_s'] if ref else 0:.1f} GB/s). Empty pass: {empty_us:.2f} µs." if ref else "no sizes")
    print(f"{'size MB':>9} {'copies':>6} | {'best µs':>9} {'GB/s':>8} {'%':>6} {'config':>22} | "
          f"{'chained µs':>10} {'GB/s':>8} {'%':>6} | {'GB/s excl. empty':>16}")
    for r in results:
        b, c = r["best"], r["best_chained"]
        cfg = f"{b['kernel'].replace('read_bandwidth', 'rb')}/{b['grid']}"
        chain = (f"{c['chained_us']:10.2f} {c['gb_per_s']:8.1f} {c.get('pct_of_largest', 0):5.1f}%"
                 if c else f"{'–':>10} {'–':>8} {'–':>6}")
        net = f"{b['gb_per_s_excl_empty']:16.1f}" if b["gb_per_s_excl_empty"] else f"{'–':>16}"
        print(f"{r['bytes'] / 1e6:9.2f} {r['weight_copies']:6d} | {b['median_us']:9.2f} {b['gb_per_s']:8.1f} "
              f"{r['pct_of_largest']:5.1f}% {cfg:>22} | {chain} | {net}")
    print()
    print("All configurations, single-pass GB/s (rb = read_bandwidth, x4 = read_bandwidth_x4):")
    print(f"{'size MB':>9} | " + " ".join(f"{('rb' if k == KERNELS[0] else 'x4') + '/' + str(g):>9}"
                                         for k in KERNELS for g in grids))
    for r in results:
        print(f"{r['bytes'] / 1e6:9.2f} | " + " ".join(f"{x['gb_per_s']:9.1f}" for x in r["runs"]))
    for s, why in skipped.items():
        print(f"skipped {s / 1e6:.2f} MB: {why}")
    wall = time.perf_counter() - t_start
    print(f"wall time {wall:.1f} s")

    if args.out:
        with open(args.out, "w") as f:
            json.dump({
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "adapter": {"name": caps.adapter_name, "type": caps.adapter_type, "backend": caps.backend,
                            "driver": caps.driver},
                "timing": ("GPU timestamps; single: one compute pass per dispatch, median of "
                           f"{repeats}; chained: {per_pass} dispatches in one timed pass, per dispatch, "
                           f"median of {chain_repeats}"),
                "l2_eviction": ("none (CPU adapter)" if cpu else
                                f"passes rotate among copies totalling >= {ROTATE_BYTES >> 20} MiB "
                                "(sub-ranges of one pool buffer)"),
                "workgroup_size": WG, "grids": grids,
                "project_ceiling": {"gb_per_s": project.bytes_per_second / 1e9, "bytes": project.nbytes,
                                    "median_us": project.median_ns / 1e3},
                "empty_pass": empty, "reference_size": ref["bytes"] if ref else None,
                "sizes": results, "skipped": {str(s): why for s, why in skipped.items()},
                "wall_s": wall,
            }, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
