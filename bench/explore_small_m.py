"""Experiment: small M (1-8) and the LM head, in one process against the kernels before.

Usage: python bench/explore_small_m.py [--shapes 4096x14336,14336x4096,4096x4096]
       [--ms 1,2,3,4,8] [--lm-head 1,2,4] [--out FILE.json]

Variants (each compared with the float64 reference; `decode_none` is wrong on purpose):
- decode_subgroup rR shift|imad: the decode kernel with either unpack of unpack.wgsl.
- decode_workgroup rR shift|imad (--workgroup): the same with the workgroup-memory reduction.
- decode_v1 rR: decode.wgsl before unpack.wgsl (bench/experiments/decode_v1.wgsl).
- decode_none rR: decode with one and-or a word and no per-nibble work (wrong sums): what the
  unpack costs.
- decode_loads rR: decode's loads, row sums and stores without unpack or dot products (wrong
  sums): what the memory pattern alone costs.
- decode_prefetch2 rR: decode with the weights loaded two steps ahead of the math (one before).
- decode_batch rR shift|imad: blocks of 2, 4 or 8 rows of x (the reduction skips the levels a
  block of 2 or 4 does not need).
- decode_batch_noreduce rR: decode_batch with each lane storing the sum of its own values
  instead of the transpose-reduction (wrong sums): what the exchange levels cost.
- decode_batch_v1 rR: the kernel before (blocks of 4 or 8, 32-value reduction;
  bench/experiments/decode_batch_v1.wgsl).
Prints µs a pass (GPU timestamps, median, weights rotated past L2; each shape's first variant
is warmed up for a second first) and % of the read ceiling measured in the same process,
counting weights + scales + x + out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

import numpy as np

from q4gsw.bench import Workload, _reference_rel_error, random_weight
from q4gsw.format import PackedWeight
from q4gsw.kernels.registry import KERNELS, Decode, DecodeBatch
from q4gsw.runtime import get_runtime, pipelines
from q4gsw.runtime.bandwidth import measure_read_bandwidth
from q4gsw.runtime.timing import time_chain, time_dispatch

ERROR_ROWS = 8192
EXPERIMENTS = Path(__file__).parent / "experiments"
SHIPPED_DOT8 = "  return fma(hi4(w), hi, fma(lo4(w), lo, acc));\n"
NO_UNPACK_DOT8 = ("  let f = vec4<f32>(bitcast<f32>((w & 0x007FFFFFu) | ONE));\n"
                  "  return fma(f, hi, fma(f, lo, acc));\n")


LOADS_ONLY_DOT32 = """fn dot32(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
         x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
  return bitcast<f32>(((w.x ^ w.y ^ w.z ^ w.w) & 0x007FFFFFu) | ONE) * x0.x;
}
"""
PREFETCH2 = [  # (old, new): loads two steps ahead of the math instead of one
    ("  for (var r = 0u; r < ROWS; r += RB) {\n",
     "  let r1 = min(RB, ROWS - RB);\n"
     "  var u_a = weights[min(n0 + r1, last_row) * words + c];\n"
     "  var u_b = weights[min(n0 + r1 + 1u, last_row) * words + c];\n"
     "  var u_c = weights[min(n0 + r1 + 2u, last_row) * words + c];\n"
     "  var u_d = weights[min(n0 + r1 + 3u, last_row) * words + c];\n"
     "  for (var r = 0u; r < ROWS; r += RB) {\n"),
    ("    let r_next = min(r + RB, ROWS - RB);\n", "    let r_next = min(r + 2u * RB, ROWS - RB);\n"),
    ("    w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;\n",
     "    w_a = u_a; w_b = u_b; w_c = u_c; w_d = u_d;\n"
     "    u_a = next_a; u_b = next_b; u_c = next_c; u_d = next_d;\n"),
]


def patched_load(name: str, original=pipelines.load_wgsl) -> str:
    """The experiments' files: decode_none / decode_loads / decode_prefetch2 derived from
    decode.wgsl, the v1 copies."""
    if name == "decode_none":
        text = original("decode")
        assert SHIPPED_DOT8 in text
        return text.replace(SHIPPED_DOT8, NO_UNPACK_DOT8)
    if name == "decode_loads":  # the loads, sums and stores of decode, no unpack or dot products
        text = original("decode")
        a = text.index("fn dot32(")
        b = text.index("}\n", a) + 2
        return text[:a] + LOADS_ONLY_DOT32 + text[b:]
    if name == "decode_prefetch2":
        text = original("decode")
        for old, new in PREFETCH2:
            assert old in text, old
            text = text.replace(old, new)
        return text
    if name == "decode_batch_noreduce":  # each lane stores the sum of its own values: no exchange
        text = original("decode_batch")
        a = text.index("    if (transposed) {\n")
        b = text.index("\n    } else {\n", a) + 1
        return (text[:a] + "    if (transposed) {\n      if (stores) { partial[slot(r, q, groups, sg)] = "
                "dot(p0 + p1 + p2 + p3 + p4 + p5 + p6 + p7, vec4<f32>(1.0)); }\n" + text[b:])
    if name in ("decode_v1", "decode_batch_v1"):
        return (EXPERIMENTS / f"{name}.wgsl").read_text()
    return original(name)


class DecodeFile(Decode):
    """decode_subgroup compiled from another file (decode_v1: no unpack.wgsl)."""

    def __init__(self, file: str, rows: int):
        self.file = file
        super().__init__("subgroup", 32768, rows, "shift")

    def key(self, p):
        key = super().key(p)
        files = tuple(f for f in key.files if f != "unpack" or self.file != "decode_v1")
        constants = tuple(c for c in key.constants if c[0] != "UNPACK_IMAD" or self.file != "decode_v1")
        return type(key)(key.name, constants, key.family, files)


class DecodeBatchV1(DecodeBatch):
    """decode_batch as before this session: blocks of 4 or 8 rows of x, its own unpack."""

    name = "decode_batch_v1"

    def block(self, p):
        return 4 if p.m <= 4 else 8

    def key(self, p):
        key = super().key(p)
        return type(key)(key.name, tuple(c for c in key.constants if c[0] != "UNPACK_IMAD"), key.family, ())


class DecodeBatchNoReduce(DecodeBatch):
    """decode_batch whose lanes store their own sums without the exchange levels (wrong sums)."""

    name = "decode_batch_noreduce"

    def bind(self, caps):
        bound = super().bind(caps)
        return DecodeBatchNoReduce(bound.rows_per_workgroup, bound.min_lanes, bound.storage_limit, bound.unpack)

    def key(self, p):
        key = super().key(p)
        return type(key)(key.name, key.constants, key.family, (self.name, "unpack"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="4096x14336,14336x4096,4096x4096")
    ap.add_argument("--ms", default="1,2,3,4,8")
    ap.add_argument("--lm-head", default="", help="Ms for 4096x128256 too, e.g. 1,2,4")
    ap.add_argument("--workgroup", action="store_true", help="also decode_workgroup rR shift|imad")
    ap.add_argument("--out", help="FILE.json (and FILE.md beside it)")
    ap.add_argument("--to-md", help="only write the Markdown of an earlier run's JSON (beside it)")
    args = ap.parse_args()
    if args.to_md:
        Path(args.to_md).with_suffix(".md").write_text(markdown(json.loads(Path(args.to_md).read_text())))
        return
    pipelines.load_wgsl = patched_load
    rt = get_runtime()
    ceiling = measure_read_bandwidth(rt).bytes_per_second
    print(f"ceiling {ceiling / 1e9:.0f} GB/s ({rt.caps.adapter_name}, {rt.caps.driver})")
    shapes = [(m, *map(int, s.split("x"))) for s in args.shapes.split(",") if s for m in map(int, args.ms.split(","))]
    shapes += [(int(m), 4096, 128256) for m in args.lm_head.split(",") if m]
    sub = KERNELS["decode_subgroup"].bind(rt.caps)
    wgr = KERNELS["decode_workgroup"].bind(rt.caps)
    rng = np.random.default_rng(5)
    rows = []
    for m, k, n in shapes:
        weight = random_weight(rng, n, k, 128)
        x = rng.standard_normal((m, k)).astype(np.float32)
        work = Workload.rotating(rt, weight, x)
        p = work.problem()
        variants = {}
        for r in (16, 32):
            variants.update({f"decode_subgroup r{r} {u}": sub.with_settings({"rows_per_workgroup": r, "unpack": u})
                             for u in ("shift", "imad")})
            variants[f"decode_v1 r{r}"] = DecodeFile("decode_v1", r)
            variants.update({f"decode_workgroup r{r} {u}": wgr.with_settings({"rows_per_workgroup": r, "unpack": u})
                             for u in ("shift", "imad") if args.workgroup})
            if m == 1:
                variants[f"decode_none r{r}"] = DecodeFile("decode_none", r)
                variants[f"decode_loads r{r}"] = DecodeFile("decode_loads", r)
                variants[f"decode_prefetch2 r{r}"] = DecodeFile("decode_prefetch2", r)
            else:
                variants.update({f"decode_batch r{r} {u}": DecodeBatch(r, unpack=u).bind(rt.caps)
                                 for u in ("shift", "imad")})
                variants[f"decode_batch_v1 r{r}"] = DecodeBatchV1(r).bind(rt.caps)
                variants[f"decode_batch_noreduce r{r}"] = DecodeBatchNoReduce(r).bind(rt.caps)
        first = True
        for name, spec in variants.items():
            reason = spec.supports(p, rt.caps)
            if reason:
                print(f"M={m} K={k} N={n} {name}: skipped ({reason})")
                continue
            dispatches = work.dispatches(spec)
            if first:  # the host just generated and uploaded weights: let the clocks settle
                time_dispatch(rt, dispatches, repeats=10, warmup_s=1.0)
                first = False
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            time_dispatch(rt, dispatches[0], repeats=1, warmup=0)
            y = work.read_out()
            if np.isnan(y).any():
                err = float("nan")  # an element left unwritten (poisoned)
            else:  # against the reference on the first ERROR_ROWS rows (all rows run the same code)
                part = PackedWeight(weight.weights[:ERROR_ROWS], weight.scales[:, :ERROR_ROWS],
                                    weight.group_size, in_features=k)
                err = _reference_rel_error(y[:, :ERROR_ROWS], x, part)
            t = statistics.median(time_dispatch(rt, dispatches, repeats=60, warmup_s=0.3)) / 1e3
            tc = statistics.median(time_chain(rt, dispatches)) / 1e3
            nbytes = dispatches[0].nbytes
            pct = 100 * nbytes / (t * 1e-6) / ceiling
            print(f"M={m} K={k} N={n} {name:>24}: {t:7.1f} µs {pct:5.1f}%  chained {tc:7.1f} µs  err {err:.1e}")
            rows.append({"m": m, "k": k, "n": n, "variant": name, "us": t, "chained_us": tc,
                         "pct_ceiling": pct, "rel_error": err})
        work.release()
    if args.out:
        result = {"date": datetime.date.today().isoformat(), "adapter": rt.caps.adapter_name,
                  "driver": rt.caps.driver, "ceiling_bytes_per_second": ceiling, "rows": rows}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        Path(args.out).with_suffix(".md").write_text(markdown(result))


def markdown(result: dict) -> str:
    """The run as Markdown: one table per shape, variants fastest first."""
    lines = [f"# bench/explore_small_m.py, {result['date']}", "",
             f"- card: {result['adapter']}; driver: {result['driver']}",
             f"- read ceiling measured in the same process: {result['ceiling_bytes_per_second'] / 1e9:.1f} GB/s",
             "- µs: GPU timestamps, one pass per dispatch, median of 60 after warm-up, weights rotated past L2; "
             "chained: 32 dispatches in one pass, per dispatch; % counts weights + scales + x + out",
             "- rel. error: max |y - ref| / max |ref| against float64 on the first 8192 rows "
             "(decode_none / decode_loads are wrong on purpose)", ""]
    shapes = {}
    for r in result["rows"]:
        shapes.setdefault((r["m"], r["k"], r["n"]), []).append(r)
    for (m, k, n), rows in shapes.items():
        lines += [f"## M={m} K={k} N={n}", "", "| variant | µs | % of ceiling | chained µs | rel. error |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {r['us']:.1f} | {r['pct_ceiling']:.1f}% | {r['chained_us']:.1f} | {r['rel_error']:.1e} |"
                  for r in sorted(rows, key=lambda r: r["us"])]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
