"""Diagnose the decode kernel on the current adapter: text-patched variants of decode.wgsl.

Experiments only (the library never patches WGSL): each variant replaces one piece of the
kernel to see what limits it.
  base      decode.wgsl + reduce_subgroup.wgsl as shipped
  loadonly  the unpack+FMA replaced by an XOR of the words: the memory-side ceiling
  exact     unpack as f32 bits 0x4B000000|u minus 2^23+8 (one more FADD per weight)
  rb8       bench/experiments/decode_rb8.wgsl: 8 rows a step instead of 4
  scalar-scales  bench/experiments/decode_scalar_scales.wgsl: 4 scalar scale loads a step
  noscale   base without the per-row scale loads (scale 1): what the scattered scale reads cost
  nox       base with x from registers set to a constant (no x loads): what loading x costs
  lo-noscale-nox  loadonly without scale and x loads: weights alone
  empty     a kernel that returns at once: the fixed cost of a timed pass
Each variant is timed one pass per dispatch and chained (32 dispatches in one pass).
Usage: python bench/explore_variants.py [--shapes ...] [--rpw 16]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, parse_shapes, random_weight
from q4gsw.kernels.registry import KERNELS
from q4gsw.runtime import get_runtime
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.dispatch import Dispatch
from q4gsw.runtime.pipelines import load_wgsl
from q4gsw.runtime.timing import time_chain, time_dispatch

DOT32_LOADONLY = """fn dot32(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
         x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
  return bitcast<f32>(((w.x ^ w.y ^ w.z ^ w.w) & 0x007FFFFFu) | 0x3F800000u) * x0.x;
}
"""
DOT8_EXACT = """fn dot8(w: u32, lo: vec4<f32>, hi: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
  let a = ((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
  let b = ((vec4<u32>(w) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
  return fma(bitcast<vec4<f32>>(b) - 8388616.0, hi, fma(bitcast<vec4<f32>>(a) - 8388616.0, lo, acc));
}
"""
EMPTY = """@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  if (wid.x == 0xFFFFFFFFu) { out[0] = 1.0; }
}
"""


def _replace_fn(src: str, name: str, new: str) -> str:
    start = src.index(f"fn {name}(")
    end = src.index("\n}\n", start) + 3
    return src[:start] + new + src[end:]


def variant_source(name: str) -> str:
    if name == "scalar-scales":
        body = (Path(__file__).parent / "experiments" / "decode_scalar_scales.wgsl").read_text()
        return body + "\n" + load_wgsl("reduce_subgroup")
    if name == "rb8":
        body = (Path(__file__).parent / "experiments" / "decode_rb8.wgsl").read_text()
        return body + "\n" + load_wgsl("reduce_subgroup")
    src = load_wgsl("decode") + "\n" + load_wgsl("reduce_subgroup")
    if name.startswith("lo-"):
        src = _replace_fn(src, "dot32", DOT32_LOADONLY)
    if name == "loadonly":
        return _replace_fn(src, "dot32", DOT32_LOADONLY)
    if "noscale" in name:
        src = src.replace("let s = vec4<f32>(scales[scale_base + n_a], scales[scale_base + n_b],\n"
                          "                      scales[scale_base + n_c], scales[scale_base + n_d]);",
                          "let s = vec4<f32>(1.0 + 0.0 * scales[0]);")
    if "nox" in name:
        for i in range(8):
            src = src.replace(f"x{i} = x[xb" + ("" if i == 0 else f" + {i}u") + "];",
                              f"x{i} = vec4<f32>(f32(xb + {i}u) * 1e-7) + 0.0 * x[0];")
    if name in ("noscale", "nox", "lo-noscale-nox"):
        return src
    if name == "exact":
        src = _replace_fn(src, "dot8", DOT8_EXACT)
        return src.replace("s * (16.0 * d - 24.0 * x_sum)", "s * d")
    return src


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x4096x4096,1x4096x14336,1x14336x4096,1x4096x128256")
    ap.add_argument("--variants", default="base,loadonly,exact,rb8,noscale,nox,lo-noscale-nox")
    args = ap.parse_args()
    rt = get_runtime()
    dev = rt.device
    ceiling = measure_read_bandwidth(rt).bytes_per_second
    print(f"ceiling {ceiling / 1e9:.0f} GB/s  ({rt.caps.adapter_name})")
    usage = rt.wgpu.BufferUsage
    # the fixed cost of one timed pass
    sink = rt.buffers.create(256, usage.STORAGE, "sink")
    pipe = dev.create_compute_pipeline(layout="auto", compute={
        "module": dev.create_shader_module(code=EMPTY), "entry_point": "main"})
    bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[{"binding": 0, "resource": {"buffer": sink}}])
    for groups in (1, 1024):
        empty = Dispatch(None, pipe, bg, (groups, 1, 1))
        t = statistics.median(time_dispatch(rt, empty, repeats=50, warmup_s=0.2))
        tc = statistics.median(time_chain(rt, [empty]))
        print(f"empty kernel, {groups} workgroups: {t / 1e3:.2f} µs a pass, {tc / 1e3:.2f} µs chained")
    spec = KERNELS["decode_subgroup"]
    rng = np.random.default_rng(2)
    for m, k, n in parse_shapes(args.shapes):
        work = Workload.rotating(rt, random_weight(rng, n, k, 128), rng.standard_normal((m, k)).astype(np.float32))
        shipped = work.dispatches(spec)
        params = work._params[-len(shipped):]
        for name in args.variants.split(","):
            module = dev.create_shader_module(code=variant_source(name))
            pipeline = dev.create_compute_pipeline(layout="auto", compute={
                "module": module, "entry_point": "main",
                "constants": {c: float(v) for c, v in shipped[0].key.constants}})
            variants = [
                Dispatch(d.key, pipeline, dev.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
                    {"binding": i, "resource": {"buffer": b}}
                    for i, b in enumerate((work.out, work.x, chunk.weights, chunk.scales, work.bias, prm))]), d.grid)
                for d, chunk, prm in zip(shipped, work.chunks, params)
            ]
            t = statistics.median(time_dispatch(rt, variants, repeats=60, warmup=3, warmup_s=0.2))
            tc = statistics.median(time_chain(rt, variants))
            nbytes = shipped[0].nbytes
            print(f"M={m} K={k} N={n} {name:>9}: {t / 1e3:7.1f} µs {100 * nbytes / (t * 1e-9) / ceiling:5.1f}% a pass; "
                  f"chained {tc / 1e3:7.1f} µs {100 * nbytes / (tc * 1e-9) / ceiling:5.1f}%  ({len(variants)} copies)")
        work.release()

if __name__ == "__main__":
    main()
