"""Run by tests/test_ops_linear.py in a subprocess with LP_NATIVE_VECTOR_WIDTH set, so that
llvmpipe runs subgroups of 4, 8 or 16 invocations: decode_batch against the float64
reference under that subgroup size. Prints one JSON line: the subgroup size the kernels ran
with and, per case, the worst error relative to the test tolerance.
"""

from __future__ import annotations

import json

import numpy as np

import q4gsw
from q4gsw.kernels.registry import DecodeBatch, Problem
from q4gsw.runtime import get_runtime

from tests.utils import random_problem, tolerance

PROBE = """
@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_size) n: u32) { if (lid == 0u) { o[0] = n; } }
"""


def subgroup_size(rt) -> int:
    wgpu = rt.wgpu
    pipeline = rt.device.create_compute_pipeline(layout="auto", compute={
        "module": rt.device.create_shader_module(code=PROBE), "entry_point": "main"})
    buf = rt.buffers.create(4, wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC, "probe")
    group = rt.device.create_bind_group(layout=pipeline.get_bind_group_layout(0),
                                        entries=[{"binding": 0, "resource": {"buffer": buf}}])
    encoder = rt.device.create_command_encoder()
    cpass = encoder.begin_compute_pass()
    cpass.set_pipeline(pipeline)
    cpass.set_bind_group(0, group)
    cpass.dispatch_workgroups(1)
    cpass.end()
    rt.submit(encoder)
    return int(rt.buffers.read(buf, 4, np.uint32)[0])


def main():
    rt = get_runtime()
    rng = np.random.default_rng(5)
    results = []
    for m, n, k, gs, rows in [(2, 37, 256, 32, 8), (3, 20, 520, 40, 16), (8, 33, 1024, 128, 32),
                              (11, 9, 64, 8, 4), (4, 130, 2048, 64, 16)]:
        case = random_problem(rng, m, n, k, gs)
        spec = DecodeBatch(rows).bind(rt.caps)
        assert spec.supports(Problem(m, n, k, gs, True), rt.caps) is None
        y = q4gsw.linear(case.x, case.pw, case.bias, kernel=spec)
        ref = q4gsw.linear_reference(case.x, case.pw, case.bias)
        worst = float(np.max(np.abs(y - ref) / tolerance(case.x, case.pw, case.bias))) if np.isfinite(y).all() else None
        results.append({"case": [m, n, k, gs, rows], "worst_over_tolerance": worst})
    print(json.dumps({"subgroup_size": subgroup_size(rt), "results": results}))


if __name__ == "__main__":
    main()
