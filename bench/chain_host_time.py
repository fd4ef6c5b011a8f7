"""Host time per chained dispatch: a recorded q4gsw.chain.Chain of many linears, replayed.

Run from the repository root (no install needed on the GPU machine):

    PYTHONPATH=src python bench/chain_host_time.py                    # prints the figures
    PYTHONPATH=src python bench/chain_host_time.py --out bench/results/chaining-<card>-<date>

What is timed, per replay of a chain of --layers linears (M=1, K=N=--hidden), after warm-up:
  * host: Chain.run() — encoding every recorded dispatch (set_pipeline, set_bind_group,
    dispatch_workgroups) in one compute pass and submitting; it returns without waiting.
    Divided by the number of dispatches: the "host µs per chained dispatch".
  * wall: run() plus waiting for the GPU (a 4-byte readback of the last output).
  * uncached: the same dispatches rebuilt each replay with ops.linear.make_dispatch (a params
    buffer and a bind group per op, as q4gsw.linear does), then encoded and submitted.
  * op-by-op: q4gsw.linear per layer (upload x, one submit, read back), per layer.
Wall-clock (time.perf_counter_ns) medians; no GPU timestamps here: this measures the host.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

import numpy as np

import q4gsw
from q4gsw.chain import Chain
from q4gsw.kernels.registry import Problem, select
from q4gsw.ops.linear import make_dispatch
from q4gsw.ops.weights import gpu_weight
from q4gsw.runtime.dispatch import record


def random_weight(rng, n: int, k: int, group_size: int) -> q4gsw.PackedWeight:
    """Random bytes and non-zero scales of about 1/(5 sqrt(K)), so activations stay finite through 100 layers."""
    weights = rng.integers(0, 256, (n, (k + 1) // 2), dtype=np.uint8)
    scales = (rng.uniform(0.5, 1.5, (-(-k // group_size), n)) / (5 * np.sqrt(k))).astype(np.float32)
    return q4gsw.PackedWeight(weights, scales, group_size, in_features=k)


def _median_us(samples_ns, per: int = 1) -> float:
    return statistics.median(samples_ns) / per / 1e3


def measure(layers: int = 100, hidden: int = 512, group_size: int = 128, replays: int = 30, seed: int = 0) -> dict:
    """The figures as a dict (see the module docstring)."""
    rt = q4gsw.get_runtime()
    rng = np.random.default_rng(seed)
    pws = [random_weight(rng, hidden, hidden, group_size) for _ in range(layers)]
    x0 = rng.standard_normal((1, hidden)).astype(np.float32)

    chain = Chain()
    x = chain.input((1, hidden))
    h = x
    for pw in pws:
        h = chain.linear(h, pw)
    dispatches = len(chain)

    def wait():
        rt.buffers.read(h.buffer, 4, np.float32)

    for _ in range(3):  # warm-up: pipelines compiled, buffers touched
        chain.run({x: x0})
        wait()
    host, wall = [], []
    before = rt.buffers.created
    for _ in range(replays):
        t0 = time.perf_counter_ns()
        chain.run()
        t1 = time.perf_counter_ns()
        wait()
        t2 = time.perf_counter_ns()
        host.append(t1 - t0)
        wall.append(t2 - t0)
    replay_buffers = rt.buffers.created - before

    # Uncached: rebuild params buffer + bind group per op each replay (what q4gsw.linear does per call).
    p = Problem(1, hidden, hidden, group_size, False)
    spec = select(p, rt.caps)
    zero = rt.buffers.upload(np.zeros(1, np.float32), rt.wgpu.BufferUsage.STORAGE, "bench/bias")
    bufs = [x.buffer] + [rt.buffers.create(4 * hidden, rt.wgpu.BufferUsage.STORAGE | rt.wgpu.BufferUsage.COPY_SRC, "bench/act") for _ in pws]
    uncached = []
    for _ in range(max(3, replays // 3)):
        t0 = time.perf_counter_ns()
        made, temps = [], []
        for i, pw in enumerate(pws):
            for chunk in gpu_weight(rt, pw):
                d, owned = make_dispatch(rt, spec, p, chunk, bufs[i], bufs[i + 1], zero, pw)
                made.append(d)
                temps += owned
        encoder = rt.device.create_command_encoder()
        cpass = encoder.begin_compute_pass()
        for d in made:
            record(cpass, d)
        cpass.end()
        rt.submit(encoder)
        uncached.append(time.perf_counter_ns() - t0)
        rt.buffers.read(bufs[-1], 4, np.float32)
        rt.buffers.destroy(*temps)
    rt.buffers.destroy(zero, *bufs[1:])

    op_by_op = []
    for _ in range(3):
        y = x0
        t0 = time.perf_counter_ns()
        for pw in pws:
            y = q4gsw.linear(y, pw)
        op_by_op.append(time.perf_counter_ns() - t0)

    # Correctness of the measured chain against op-by-op (same kernels: equal bit for bit).
    chain.run({x: x0})
    chained_out = h.numpy()
    chain.release()
    c = rt.caps
    return {
        "date": datetime.date.today().isoformat(),
        "adapter": c.adapter_name, "adapter_type": c.adapter_type, "backend": c.backend, "driver": c.driver,
        "wgpu": getattr(rt.wgpu, "__version__", "?"), "python": sys.version.split()[0],
        "layers": layers, "hidden": hidden, "group_size": group_size, "kernel": spec.name,
        "dispatches_per_submit": dispatches, "replays": replays,
        "host_us_per_dispatch": _median_us(host, dispatches),
        "wall_us_per_dispatch": _median_us(wall, dispatches),
        "uncached_host_us_per_dispatch": _median_us(uncached, dispatches),
        "op_by_op_us_per_layer": _median_us(op_by_op, layers),
        "buffers_created_during_replays": replay_buffers,
        "chain_equals_op_by_op": bool(np.array_equal(chained_out, y)),
    }


def to_markdown(r: dict) -> str:
    return "\n".join([
        f"# Chained dispatch host time — {r['adapter']} ({r['date']})",
        "",
        f"Adapter: {r['adapter']} ({r['adapter_type']}, {r['backend']}; {r['driver']}), wgpu-py {r['wgpu']}, "
        f"Python {r['python']}. Produced by `bench/chain_host_time.py`.",
        "",
        f"A `q4gsw.chain.Chain` of {r['layers']} linears (M=1, K=N={r['hidden']}, group size {r['group_size']}, "
        f"kernel `{r['kernel']}`), recorded once and replayed {r['replays']} times: "
        f"{r['dispatches_per_submit']} dispatches in one compute pass, one submit per replay. "
        "Wall-clock medians (perf_counter), no GPU timestamps.",
        "",
        "| what | µs per dispatch |",
        "| --- | ---: |",
        f"| **host: Chain.run() (encode + submit, no wait)** | **{r['host_us_per_dispatch']:.1f}** |",
        f"| wall: run() + wait for the GPU | {r['wall_us_per_dispatch']:.1f} |",
        f"| uncached: params buffer + bind group rebuilt per op, encode + submit | {r['uncached_host_us_per_dispatch']:.1f} |",
        f"| op-by-op `q4gsw.linear` (upload, submit, read back per layer) | {r['op_by_op_us_per_layer']:.1f} |",
        "",
        f"GPU buffers created during the timed replays: {r['buffers_created_during_replays']}. "
        f"Chained result equal, bit for bit, to op-by-op: {r['chain_equals_op_by_op']}.",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--replays", type=int, default=30)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    r = measure(args.layers, args.hidden, args.group_size, args.replays)
    print(f"adapter: {r['adapter']} ({r['adapter_type']}, {r['backend']}; {r['driver']})")
    print(f"{r['dispatches_per_submit']} chained dispatches per submit, K=N={r['hidden']}, kernel {r['kernel']}")
    print(f"host µs per chained dispatch (Chain.run: encode + submit): {r['host_us_per_dispatch']:.1f}")
    print(f"wall µs per chained dispatch (run + wait):                {r['wall_us_per_dispatch']:.1f}")
    print(f"host µs per dispatch, uncached (bind group + params per op): {r['uncached_host_us_per_dispatch']:.1f}")
    print(f"µs per layer, op-by-op q4gsw.linear:                        {r['op_by_op_us_per_layer']:.1f}")
    print(f"buffers created during replays: {r['buffers_created_during_replays']}; "
          f"chain == op-by-op: {r['chain_equals_op_by_op']}")
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(r, f, indent=2)
        with open(args.out + ".md", "w") as f:
            f.write(to_markdown(r))
        print(f"wrote {args.out}.json, {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
