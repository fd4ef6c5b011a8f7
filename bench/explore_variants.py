"""Diagnose the decode kernel on the current adapter: text-patched variants of decode.wgsl.

Experiments only (the library never patches WGSL): each variant replaces one piece of the
kernel to see what limits it.
  base      decode.wgsl + reduce_subgroup.wgsl as shipped
  loadonly  the unpack+FMA replaced by an XOR of the words: the memory-side ceiling
  exact     unpack as f32 bits 0x4B000000|u minus 2^23+8 (one more FADD per weight)
  empty     a kernel that returns at once: the fixed cost of a timed pass
Usage: python bench/explore_variants.py [--shapes ...] [--rpw 16]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from q4gsw.bench import EVICT_BYTES, parse_shapes, random_weight
from q4gsw.kernels.registry import KERNELS, Problem
from q4gsw.ops.linear import make_dispatch
from q4gsw.ops.weights import gpu_weight, release_gpu_weight
from q4gsw.runtime import get_runtime
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.dispatch import Dispatch
from q4gsw.runtime.pipelines import load_wgsl
from q4gsw.runtime.timing import time_dispatch

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
    src = load_wgsl("decode") + "\n" + load_wgsl("reduce_subgroup")
    if name == "loadonly":
        return _replace_fn(src, "dot32", DOT32_LOADONLY)
    if name == "exact":
        src = _replace_fn(src, "dot8", DOT8_EXACT)
        return src.replace("s * (16.0 * d - 24.0 * x_sum)", "s * d")
    return src


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x4096x4096,1x4096x14336,1x14336x4096,1x4096x128256")
    ap.add_argument("--variants", default="base,loadonly,exact")
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
        t = statistics.median(time_dispatch(rt, Dispatch(None, pipe, bg, (groups, 1, 1)), repeats=50))
        print(f"empty kernel, {groups} workgroups: {t / 1e3:.2f} µs")
    spec = KERNELS["decode_subgroup"]
    rng = np.random.default_rng(2)
    for m, k, n in parse_shapes(args.shapes):
        weight = random_weight(rng, n, k, 128)
        p = Problem(m, n, k, 128)
        chunk = gpu_weight(rt, weight)[0]
        x = rt.buffers.upload(rng.standard_normal((m, k)).astype(np.float32), usage.STORAGE, "x")
        out = rt.buffers.create(4 * m * n, usage.STORAGE | usage.COPY_SRC, "out")
        bias = rt.buffers.upload(np.zeros(1, np.float32), usage.STORAGE, "bias")
        d, _ = make_dispatch(rt, spec, p, chunk, x, out, bias, weight)
        for name in args.variants.split(","):
            module = dev.create_shader_module(code=variant_source(name))
            pipeline = dev.create_compute_pipeline(layout="auto", compute={
                "module": module, "entry_point": "main",
                "constants": {k: float(v) for k, v in d.key.constants}})
            bind = dev.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
                {"binding": i, "resource": {"buffer": b}}
                for i, b in enumerate((out, x, chunk.weights, chunk.scales, bias))] + [
                {"binding": 5, "resource": {"buffer": rt.buffers.upload(np.array(
                    [m, n, k, k // 2, 128, -(-k // 128), chunk.scale_stride, n, 0,
                     spec.tiles(p)[0], spec.tiles(p)[0] * spec.tiles(p)[1], 0], np.uint32), usage.UNIFORM, "p")}}])
            t = statistics.median(time_dispatch(rt, Dispatch(d.key, pipeline, bind, d.grid), repeats=50,
                                                warmup=3, evict_bytes=EVICT_BYTES))
            print(f"M={m} K={k} N={n} {name:>9}: {t / 1e3:8.1f} µs {d.nbytes / t:7.0f} GB/s "
                  f"{100 * d.nbytes / (t * 1e-9) / ceiling:5.1f}%")
        release_gpu_weight(weight)


if __name__ == "__main__":
    main()
