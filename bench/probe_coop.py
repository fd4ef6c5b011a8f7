"""Probe: can WGSL cooperative matrices (naga's `wgpu_cooperative_matrix`) run here?

For each configuration (tile, A/B type, C type) it compiles a one-subgroup kernel that
computes C = A x B + C for one tile from storage buffers, runs it, and compares with
numpy. Prints one line per configuration: compiled?, ran?, max error.
Usage: python bench/probe_coop.py
"""

from __future__ import annotations

import numpy as np
import wgpu

CONFIGS = [(8, "f32", "f32"), (16, "f16", "f32"), (16, "f16", "f16"), (8, "f16", "f32")]


def source(tile: int, ab: str, c: str) -> str:
    enable = "enable f16;\n" if "f16" in (ab, c) else ""
    return f"""{enable}enable wgpu_cooperative_matrix;
alias CA = coop_mat{tile}x{tile}<{ab}, A>;
alias CB = coop_mat{tile}x{tile}<{ab}, B>;
alias CC = coop_mat{tile}x{tile}<{c}, C>;
@group(0) @binding(0) var<storage, read> sa: array<{ab}>;
@group(0) @binding(1) var<storage, read> sb: array<{ab}>;
@group(0) @binding(2) var<storage, read_write> sc: array<{c}>;
@compute @workgroup_size(32)
fn main() {{
  let a = coopLoad<CA>(&sa[0], {tile}u);
  let b = coopLoad<CB>(&sb[0], {tile}u);
  let acc = coopMultiplyAdd(a, b, coopLoad<CC>(&sc[0], {tile}u));
  coopStore(acc, &sc[0], {tile}u);
}}
"""


def main():
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    print("adapter:", adapter.info["device"], "| cooperative-matrix offered:", "cooperative-matrix" in adapter.features)
    if "cooperative-matrix" not in adapter.features:
        return
    features = [f for f in ("cooperative-matrix", "shader-f16", "subgroup") if f in adapter.features]
    device = adapter.request_device_sync(required_features=features)
    rng = np.random.default_rng(0)
    for tile, ab, c in CONFIGS:
        np_ab = np.float16 if ab == "f16" else np.float32
        np_c = np.float16 if c == "f16" else np.float32
        a = rng.integers(-4, 5, (tile, tile)).astype(np_ab)
        b = rng.integers(-4, 5, (tile, tile)).astype(np_ab)
        cc = rng.integers(-4, 5, (tile, tile)).astype(np_c)
        try:
            pipeline = device.create_compute_pipeline(layout="auto", compute={
                "module": device.create_shader_module(code=source(tile, ab, c)), "entry_point": "main"})
        except Exception as exc:  # report and go on: this is a probe
            print(f"{tile}x{tile} {ab}->{c}: does not compile: {str(exc).splitlines()[-1][:200]}")
            continue
        usage = wgpu.BufferUsage
        bufs = [device.create_buffer_with_data(data=arr.tobytes(), usage=usage.STORAGE | usage.COPY_SRC)
                for arr in (a, b, cc)]
        bg = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
            {"binding": i, "resource": {"buffer": buf}} for i, buf in enumerate(bufs)])
        enc = device.create_command_encoder()
        p = enc.begin_compute_pass()
        p.set_pipeline(pipeline)
        p.set_bind_group(0, bg)
        p.dispatch_workgroups(1)
        p.end()
        device.queue.submit([enc.finish()])
        got = np.frombuffer(device.queue.read_buffer(bufs[2]), np_c).reshape(tile, tile).astype(np.float64)
        want = a.astype(np.float64) @ b.astype(np.float64) + cc.astype(np.float64)
        want_t = a.astype(np.float64).T @ b.astype(np.float64).T + cc.astype(np.float64)
        print(f"{tile}x{tile} {ab}->{c}: ran; max |C - (A B + C)| = {np.abs(got - want).max():.3g}"
              f" (vs transposed reading {np.abs(got - want_t).max():.3g})")


if __name__ == "__main__":
    main()
