"""Experiment: f16 prefill kernels (bench/experiments/tiled_f16smem.wgsl, tiled_f16acc.wgsl)
timed against the shipped `tiled` kernel in one process, with their error against float64.

Variants (all keep the shipped 128 x 128 tile, 256 invocations, 8 x 8 register tile):
  f16smem_bk32      x and dequantized weight tiles stored as f16 in workgroup memory
                    (16 KiB of the 32), 32 k per step; converted to f32 per use, f32 FMAs.
  f16smem_bk64      the same with 64 k per step in the full 32 KiB (half the barriers).
  f16smem_bk64_xh   the same, x read as f16 from its buffer (half the x bytes, no cvt on load).
  f16acc_bk64_fF    OPT-IN f16 ACCUMULATION: packed vec4<f16> FMAs (HFMA2) summing F k in
                    f16, then flushed into f32 accumulators; F in {8, 16, 64}.
  f16acc_bk64_f16_xh  f16acc with F = 16 and x read as f16.

Predictions, written before any H100 measurement (ratio = shipped time / variant time; the
shipped kernel runs ~23 TFLOP/s = 35 % of the 67 TFLOP/s FFMA peak, so it is not purely
FFMA-issue-bound: load/dequant/barrier phases of a single-buffered tile with ~2 workgroups
per SM cost the rest):
  f16smem_bk32      0.80-0.90x  each of the 16 operands loaded per k costs a cvt (HADD2.F32
                    or F2F) in the issue stream beside the 64 FFMA: 80 issues per 64 FMA vs 64
                    (plus the same ~4 LDS); half the LDS bytes buys nothing, LDS is not the limit.
  f16smem_bk64      0.85-1.00x  same per-k cvt tax, but half as many barriers/tile-load phases
                    per k and twice the loads in flight per phase recover some of it.
  f16smem_bk64_xh   = bk64 +-3%  x is ~1 % of the bytes and its cvt is per tile load, not per FMA.
  f16acc_bk64_f8    1.15-1.30x  32 HFMA2 per k replace 64 FFMA and operands need no cvt, but the
                    flush (64 cvt + 64 FADD per 8 k = 16 issues per k) leaves 48 issues per k
                    (1.33x ceiling); 32 more registers for f16 accumulators (~130 vs ~100) may
                    cost the second workgroup per SM.
  f16acc_bk64_f16   1.25-1.45x  flush is 8 issues per k: 40 per k (1.6x issue ceiling), diluted
                    by the unchanged load/dequant/barrier phases and possibly lower occupancy.
  f16acc_bk64_f64   1.30-1.55x  flush once per step: 34 issues per k (1.9x ceiling); error grows
                    (f16 partial sums over 64 k).
  f16acc_bk64_f16_xh = f16acc_bk64_f16 +-3%.
Error (K = 4096, x ~ N(0,1), scales ~0.02), measured on lavapipe (not a prediction):
max|err|/max|ref| 2.6e-6 for f32 `tiled`; 2.6e-4 for every f16smem variant, exactly the
"f16 inputs, exact sum" floor (rounding x and w to f16, 2^-12 relative, dominates); f16acc
5.2e-4 (F=8), 6.1e-4 (F=16), 1.2e-3 (F=64): the f16 partial sums add 2-5x the floor.

Usage: python bench/explore_f16.py [--small] [--shapes MxKxN,...] [--variants f16smem_bk64,...]
                                   [--repeats 20]
Default shapes: M in {128, 512, 2048} x (K, N) in {(4096, 4096), (4096, 14336), (14336, 4096)},
group size 128; --small: shapes that run on lavapipe in seconds (correctness only). Timing:
GPU timestamps, one compute pass per dispatch, median after 0.2 s of warm-up; passes rotate
among weight copies totalling >= 256 MiB (past the H100's 50 MB L2). Errors are measured on
up to 128 rows of x spread over every 128-row tile: max|y - ref| / max|ref| and the worst
|y - ref| / (|x| @ |w|.T) per element, ref in float64.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, parse_shapes, random_weight
from q4gsw.kernels.registry import KERNELS
from q4gsw.runtime import get_runtime
from q4gsw.runtime.dispatch import Dispatch, fold_grid
from q4gsw.runtime.pipelines import KernelKey
from q4gsw.runtime.timing import time_dispatch

EXPERIMENTS = Path(__file__).parent / "experiments"
#: name -> (file, override constants, x element type)
VARIANTS = {
    "f16smem_bk32": ("tiled_f16smem", {"BK": 32}, "f32"),
    "f16smem_bk64": ("tiled_f16smem", {"BK": 64}, "f32"),
    "f16smem_bk64_xh": ("tiled_f16smem", {"BK": 64}, "f16"),
    "f16acc_bk64_f8": ("tiled_f16acc", {"BK": 64, "FLUSH": 8}, "f32"),
    "f16acc_bk64_f16": ("tiled_f16acc", {"BK": 64, "FLUSH": 16}, "f32"),
    "f16acc_bk64_f64": ("tiled_f16acc", {"BK": 64, "FLUSH": 64}, "f32"),
    "f16acc_bk64_f16_xh": ("tiled_f16acc", {"BK": 64, "FLUSH": 16}, "f16"),
}
#: predicted speed ratio (low, high) vs shipped tiled, from the docstring
PREDICTED = {
    "f16smem_bk32": (0.80, 0.90), "f16smem_bk64": (0.85, 1.00), "f16smem_bk64_xh": (0.85, 1.03),
    "f16acc_bk64_f8": (1.15, 1.30), "f16acc_bk64_f16": (1.25, 1.45), "f16acc_bk64_f64": (1.30, 1.55),
    "f16acc_bk64_f16_xh": (1.22, 1.50),
}
FULL_SHAPES = [(m, k, n) for m in (128, 512, 2048) for k, n in ((4096, 4096), (4096, 14336), (14336, 4096))]
SMALL_SHAPES = [(64, 256, 256), (200, 512, 320), (128, 1024, 136)]


def compile_variant(rt, name: str):
    """(KernelKey, compute pipeline) of VARIANTS[name] with HAS_BIAS off; None if it fails to compile."""
    file, constants, xtype = VARIANTS[name]
    source = (EXPERIMENTS / f"{file}.wgsl").read_text().replace("{{XTYPE}}", xtype)
    key = KernelKey(name, tuple(sorted(constants.items())), family="experiment", files=(file,))
    try:
        module = rt.device.create_shader_module(label=str(key), code=source)
        pipeline = rt.device.create_compute_pipeline(
            label=str(key), layout="auto",
            compute={"module": module, "entry_point": "main",
                     "constants": {"HAS_BIAS": 0.0, **{k: float(v) for k, v in constants.items()}}})
    except rt.wgpu.GPUError as exc:  # reported; the other variants still run
        print(f"{name} (bench/experiments/{file}.wgsl, XTYPE={xtype}) failed to compile, skipped:\n{exc}")
        return None
    return key, pipeline


def unsupported(name: str, k: int, group_size: int) -> str | None:
    bk = VARIANTS[name][1]["BK"]
    if k % bk or min(group_size, k) % bk:
        return f"needs K and group_size multiples of BK={bk}"
    return None


def variant_dispatches(rt, work: Workload, key, pipeline, x_buf, params_buf) -> list[Dispatch]:
    """One dispatch per weight copy of work, in the binding order of tiled.wgsl."""
    m, k, n = work.m, work.weight.in_features, work.weight.out_features
    tiles = -(-n // 128) * -(-m // 128)
    grid = fold_grid(tiles, rt.caps.max_workgroups_per_dimension)
    layout = pipeline.get_bind_group_layout(0)
    return [Dispatch(key, pipeline, rt.device.create_bind_group(label=str(key), layout=layout, entries=[
        {"binding": i, "resource": {"buffer": b}}
        for i, b in enumerate((work.out, x_buf, chunk.weights, chunk.scales, work.bias, params_buf))]),
        grid, flops=2 * m * k * n) for chunk in work.chunks]


def params_for(work: Workload, chunk) -> np.ndarray:
    """tiled.wgsl's Params (HEAD layout) for the whole weight in one chunk."""
    w = work.weight
    m, k, n = work.m, w.in_features, w.out_features
    n_tiles = -(-n // 128)
    return np.array([m, n, k, (k + 1) // 2, min(w.group_size, k), w.num_groups, chunk.scale_stride,
                     n, 0, n_tiles, n_tiles * -(-m // 128), 0], np.uint32)


class Reference:
    """float64 reference rows of x @ dequantize(w).T and the |x| @ |w|.T error scale."""

    def __init__(self, x: np.ndarray, w64: np.ndarray, abs_w64: np.ndarray, w16: np.ndarray):
        m = x.shape[0]
        self.rows = np.unique(np.linspace(0, m - 1, min(m, 128)).round().astype(int))
        x64 = x[self.rows].astype(np.float64)
        self.ref = x64 @ w64.T
        self.scale = np.abs(x64) @ abs_w64.T
        # what rounding x and the dequantized weights to f16 alone costs (float64 sums)
        self.floor = self.errors(x[self.rows].astype(np.float16).astype(np.float64) @ w16.T, rows_only=True)

    def errors(self, y: np.ndarray, rows_only: bool = False) -> tuple[float, float]:
        """(max|y - ref| / max|ref|, max |y - ref| / (|x| @ |w|.T)) over the reference rows."""
        err = np.abs((y if rows_only else y[self.rows]).astype(np.float64) - self.ref)
        if not np.all(np.isfinite(err)):
            return math.inf, math.inf
        return float(err.max() / np.abs(self.ref).max()), float((err / np.maximum(self.scale, 1e-30)).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small shapes (lavapipe correctness run)")
    ap.add_argument("--shapes", default=None, help="MxKxN,... instead of the default set")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per kernel and shape")
    ap.add_argument("--group-size", type=int, default=128)
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    repeats = args.repeats or (3 if args.small else 20)
    t_start = time.perf_counter()
    rt = get_runtime()
    if not rt.caps.has_f16:
        raise SystemExit(f"{rt.caps.adapter_name}: the device has no `shader-f16` feature "
                         f"(offered and requested: {sorted(rt.caps.features)})")
    print(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    pipelines = {v: compile_variant(rt, v) for v in names}
    names = [v for v in names if pipelines[v] is not None]
    usage = rt.wgpu.BufferUsage
    rng = np.random.default_rng(0)
    ratios: dict[str, list[float]] = {v: [] for v in names}
    gs = args.group_size
    shapes = parse_shapes(args.shapes) if args.shapes else SMALL_SHAPES if args.small else FULL_SHAPES
    current = None
    for m, k, n in sorted(shapes, key=lambda s: (s[1], s[2], s[0])):  # one weight per (K, N)
        if current != (k, n):
            current = (k, n)
            weight = random_weight(rng, n, k, gs)
            w64 = weight.dequantize()
            abs_w64, w16 = np.abs(w64), w64.astype(np.float16).astype(np.float64)
        x = rng.standard_normal((m, k)).astype(np.float32)
        ref = Reference(x, w64, abs_w64, w16)
        work = Workload.rotating(rt, weight, x)
        x16 = rt.buffers.upload(x.astype(np.float16), usage.STORAGE, "explore_f16/x16")
        params = rt.buffers.upload(params_for(work, work.chunks[0]), usage.UNIFORM, "explore_f16/params")
        flops = 2 * m * k * n

        def run(label, dispatches, base=None):
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            time_dispatch(rt, dispatches[0], repeats=1, warmup=0)
            rel, bound = ref.errors(work.read_out())
            t = statistics.median(time_dispatch(rt, dispatches, repeats=repeats, warmup=2, warmup_s=0.2))
            ratio = base / t if base else 1.0
            print(f"M={m:5d} K={k:5d} N={n:5d} {label:>20}: {t / 1e3:9.1f} µs {flops / t / 1e3:6.2f} TFLOP/s "
                  f"{ratio:5.2f}x  rel.err {rel:.1e}  err/(|x||w|) {bound:.1e}")
            return t, ratio

        shipped = work.dispatches(KERNELS["tiled"])
        print(f"M={m:5d} K={k:5d} N={n:5d} {'f16 inputs, exact sum':>20}: rel.err {ref.floor[0]:.1e}  "
              f"err/(|x||w|) {ref.floor[1]:.1e}   (shipped: {shipped[0].key}, {len(shipped)} weight copies)")
        base, _ = run("tiled (shipped)", shipped)
        for v in names:
            reason = unsupported(v, k, gs)
            if reason:
                print(f"M={m:5d} K={k:5d} N={n:5d} {v:>20}: skipped ({reason})")
                continue
            key, pipeline = pipelines[v]
            x_buf = x16 if VARIANTS[v][2] == "f16" else work.x
            _, ratio = run(v, variant_dispatches(rt, work, key, pipeline, x_buf, params), base)
            ratios[v].append(ratio)
        rt.buffers.destroy(x16, params)
        work.release()
    print("\nsummary: speed ratio to shipped tiled (geometric mean [min, max] over shapes), predicted range")
    for v in names:
        r = ratios[v]
        if r:
            gmean = math.exp(sum(math.log(x) for x in r) / len(r))
            lo, hi = PREDICTED[v]
            print(f"  {v:>20}: {gmean:5.2f}x [{min(r):.2f}, {max(r):.2f}]   predicted {lo:.2f}-{hi:.2f}x")
    print(f"wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
