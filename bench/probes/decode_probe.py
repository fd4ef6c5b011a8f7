"""Decode variants against the plain read of the same bytes and the shipped route (issue #13), in
one process on the H200; session 5: timed round-robin with the clocks held up.

Usage (GPU machine, repo root, staged wgpu on PYTHONPATH):
    PYTHONPATH=$PWD/src:$PYTHONPATH python bench/probes/decode_probe.py --out DIR
    [--repeats 8] [--shapes MxKxN,...] [--no-group-sizes] [--quick]   (--quick: a lavapipe smoke test)

For each shape (M=1: 4096^2, 4096x14336, 14336x4096, 2048x8192, 8192x2048, 4096x128256;
M=2/4/8 at 4096x14336): one Workload whose copies total >= 256 MiB (tools/workload.py: L2
rotation), the plain read of the weight + scale bytes through as many copies
(tools/plain_read.py), the route (what q4gsw.linear runs, tuning cache included) and each
variant (decode settings, decode_narrow, decode_batch settings). Every variant's first run is
checked against the float64 reference on 256 random output features (+ the last); then all,
the plain read among them, are timed round-robin (round_robin below: --repeats rounds, each
variant one submit of ~1 ms of passes followed by a filler read, queued ahead through
runtime.submit.timed_batches, so the GPU never idles and its clocks stay up). Then the route
at group sizes 32-256 on four shapes. A variant that fails to build, compile or check is
reported and skipped. Writes DIR/decode_variants_probe.{json,md} (+ the SM clock CSV).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import traceback

import numpy as np

try:
    import q4gsw  # noqa: F401
except ImportError:  # run from the repo root without PYTHONPATH
    sys.path.insert(0, os.path.join(os.getcwd(), "src"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clocks import ClockLog  # noqa: E402
from q4gsw.format import PackedWeight, linear_reference  # noqa: E402
from q4gsw.kernels import INT8_KERNELS, KERNELS, Problem  # noqa: E402
from q4gsw.kernels.int8 import linear_int8_reference  # noqa: E402
from q4gsw.kernels.decode import DecodeNarrow  # noqa: E402
from q4gsw.ops.plan import choose_kernel  # noqa: E402
from q4gsw.runtime import get_runtime  # noqa: E402
from q4gsw.runtime.submit import timed_batches, timed_passes  # noqa: E402
from q4gsw.runtime.timing import time_dispatch  # noqa: E402
from q4gsw.tools.plain_read import PlainRead  # noqa: E402
from q4gsw.tools.workload import Workload, random_weight  # noqa: E402

GROUP_SIZE = 128
SHAPES = [(1, 4096, 4096), (1, 4096, 14336), (1, 14336, 4096), (1, 2048, 8192), (1, 8192, 2048),
          (1, 4096, 128256), (2, 4096, 14336), (4, 4096, 14336), (8, 4096, 14336)]
QUICK_SHAPES = [(1, 1024, 1024), (1, 1024, 2816), (1, 2816, 1024), (2, 1024, 2816), (8, 1024, 2816)]


def decode(reduction="subgroup", **settings):
    return lambda caps: KERNELS[f"decode_{reduction}"].bind(caps).with_settings(settings)


def narrow(**settings):
    return lambda caps: DecodeNarrow("subgroup", 32768).bind(caps).with_settings(settings)


def batch(**settings):
    return lambda caps: KERNELS["decode_batch"].bind(caps).with_settings(settings)


def int8(reduction="subgroup", **settings):
    """decode_int8 (activations="int8": checked against the int8 reference, error to f32 reported)."""
    return lambda caps: INT8_KERNELS[f"decode_int8_{reduction}"].bind(caps).with_settings(settings)


#: The int8-activation decode (session 6), timed beside the f32 variants at every M.
INT8_VARIANTS = [
    ("int8", "decode_int8_subgroup, default rows (x quantized per 32 k in registers, dot4I8Packed)", int8()),
    ("int8-r8", "decode_int8, 8 rows a workgroup", int8(features_per_workgroup=8)),
    ("int8-r32", "decode_int8, 32 rows a workgroup", int8(features_per_workgroup=32)),
    ("int8-r64", "decode_int8, 64 rows a workgroup", int8(features_per_workgroup=64)),
    ("int8-w", "decode_int8_workgroup (workgroup-memory reduction)", int8("workgroup")),
]


#: (name, what it is, factory(caps) -> KernelSpec). "route" is added per shape.
M1_VARIANTS = [
    ("decode_subgroup", "shipped kernel, default settings", decode()),
    ("decode_workgroup", "shipped kernel, workgroup-memory reduction", decode("workgroup")),
    ("r8", "decode, 8 rows a workgroup (2 steps a warp, 2x the warps of r16)", decode(features_per_workgroup=8)),
    ("r24", "decode, 24 rows a workgroup", decode(features_per_workgroup=24)),
    ("r32", "decode, 32 rows a workgroup", decode(features_per_workgroup=32)),
    ("s2k-r16", "split K: 2048 k a workgroup (64 invocations), 16 rows", decode(k_per_workgroup=2048,
                                                                                 features_per_workgroup=16)),
    ("s1k-r32", "split K: 1024 k a workgroup (one warp), 32 rows", decode(k_per_workgroup=1024,
                                                                          features_per_workgroup=32)),
    ("xs", "x staged through workgroup memory (coalesced), default rows", decode(x_staged=True)),
    ("n8", "decode_narrow (8-byte loads, 16 k an invocation, 8 rows a step), 8 rows", narrow(features_per_workgroup=8)),
    ("n16", "decode_narrow, 16 rows", narrow(features_per_workgroup=16)),
    ("n32", "decode_narrow, 32 rows", narrow(features_per_workgroup=32)),
    ("n-s2k-r16", "decode_narrow, split K 2048 (128 invocations), 16 rows", narrow(k_per_workgroup=2048,
                                                                                  features_per_workgroup=16)),
    ("batch-r32", "decode_batch at M = 1 (4-byte loads, 8 k an invocation), 32 rows", batch(features_per_workgroup=32)),
    ("w-r8", "decode_workgroup, 8 rows", decode("workgroup", features_per_workgroup=8)),
    ("w-r32", "decode_workgroup, 32 rows", decode("workgroup", features_per_workgroup=32)),
    ("shift", "decode_subgroup, shift unpack", decode(unpack="shift")),
    ("imad", "decode_subgroup, multiply-add unpack", decode(unpack="imad")),
    ("n8-imad", "decode_narrow, 8 rows, multiply-add unpack", narrow(features_per_workgroup=8, unpack="imad")),
    ("n32-imad", "decode_narrow, 32 rows, multiply-add unpack", narrow(features_per_workgroup=32, unpack="imad")),
]
MB_VARIANTS = [
    ("decode_batch", "shipped decode_batch, default settings", batch()),
    ("batch-r16", "decode_batch, 16 rows", batch(features_per_workgroup=16)),
    ("batch-r32", "decode_batch, 32 rows", batch(features_per_workgroup=32)),
    ("batch-r64", "decode_batch, 64 rows (x traffic halved against 32)", batch(features_per_workgroup=64)),
    ("batch-imad", "decode_batch, multiply-add unpack", batch(unpack="imad")),
    ("batch-shift", "decode_batch, shift unpack", batch(unpack="shift")),
    ("batch-r32-imad", "decode_batch, 32 rows, multiply-add unpack", batch(features_per_workgroup=32, unpack="imad")),
    ("decode_subgroup", "decode, one workgroup per row of x", decode()),
    ("imad", "decode per row of x, multiply-add unpack", decode(unpack="imad")),
    ("r32", "decode, 32 rows", decode(features_per_workgroup=32)),
    ("n32", "decode_narrow, 32 rows, per row of x", narrow(features_per_workgroup=32)),
    ("s1k-r32", "decode split K 1024, 32 rows, per row of x", decode(k_per_workgroup=1024, features_per_workgroup=32)),
    ("x2", "decode with two rows of x a workgroup (each nibble unpacked once for both), default rows",
     decode(x_rows=2)),
    ("x2-r8", "decode, two rows of x, 8 weight rows", decode(x_rows=2, features_per_workgroup=8)),
    ("x2-r32", "decode, two rows of x, 32 weight rows", decode(x_rows=2, features_per_workgroup=32)),
]

#: Predictions written before any H200 run (docs/kernels-decode.md, session 4), µs: (low, high).
#: Keys: (M, K, N) -> {variant: (low, high)}.
PREDICTIONS = {
    (1, 4096, 4096): {"route": (13, 15), "r8": (11, 13), "r32": (16, 20), "s1k-r32": (17, 22), "xs": (13, 15),
                      "n8": (10, 12), "n16": (10, 12), "n32": (13, 15)},
    (1, 4096, 14336): {"route": (24, 27), "r24": (19, 23), "r32": (21, 25), "s2k-r16": (24, 27),
                       "s1k-r32": (22, 26), "xs": (24, 27), "n16": (17, 21), "n32": (16, 20), "n64": (19, 24)},
    (1, 14336, 4096): {"route": (24, 27), "s2k-r16": (20, 23), "s1k-r32": (20, 24), "r32": (20, 23),
                       "n-s2k-r32": (16, 20), "n-s2k-r16": (17, 21), "n-s4k-r32": (19, 25)},
    (1, 2048, 8192): {"route": (13, 15), "r8": (11, 13), "n16": (10, 12), "n8": (10, 12)},
    (1, 8192, 2048): {"route": (13, 15), "r8": (11, 13), "n16": (10, 12), "s2k-r16": (14, 16)},
    (1, 4096, 128256): {"route": (115, 121), "xs": (105, 115), "r64": (110, 118), "s1k-r32": (118, 126),
                        "n32": (100, 112), "n64": (100, 112)},
    (2, 4096, 14336): {"route": (33, 36), "batch-r32": (30, 35), "n32": (32, 40)},
    (4, 4096, 14336): {"route": (50, 54), "batch-r32": (45, 52), "batch-r64": (44, 54)},
    (8, 4096, 14336): {"route": (67, 71), "batch-r64": (60, 70)},
}
#: Session 6, written before the first H200 run of decode with two rows of x a workgroup (x_rows=2).
for _shape, _range in {(2, 4096, 14336): (24, 30), (4, 4096, 14336): (35, 45), (8, 4096, 14336): (60, 75),
                       (2, 14336, 4096): (24, 31), (2, 4096, 128256): (130, 160)}.items():
    PREDICTIONS.setdefault(_shape, {})["x2"] = _range
#: Session 6, written before the first H200 run of decode_int8 (docs/kernels-decode.md): the f32
#: unpack's issue gone, what is left is decode's memory pattern.
INT8_PREDICTIONS = {(1, 4096, 4096): (10, 12), (1, 4096, 14336): (16, 20), (1, 14336, 4096): (17, 21),
                    (1, 2048, 8192): (10, 12), (1, 8192, 2048): (10, 12), (1, 4096, 128256): (80, 95),
                    (2, 4096, 14336): (22, 28), (4, 4096, 14336): (30, 40), (8, 4096, 14336): (50, 65)}
for _shape, _range in INT8_PREDICTIONS.items():
    PREDICTIONS.setdefault(_shape, {})["int8"] = _range


#: Seconds of sustained work (every entry in turn) before a shape's timed rounds, and the GPU
#: time of one submit's timed passes; each submit ends with FILLER (a plain read of 256 MiB,
#: FILLER_DISPATCHES times, ~4 ms on the H200) so the GPU never idles while the host encodes
#: the next submit (clocks fall to 345-1300 MHz when it does: run 1 of session 5).
WARM_S = 1.5
BATCH_US = 1000.0
FILLER_DISPATCHES = 64
FILLER = None


def filler(rt):
    global FILLER
    if FILLER is None:
        FILLER = PlainRead.of_bytes(rt, np.ones((1 << 20) if rt.caps.is_cpu else (256 << 20), np.uint8))
    return FILLER.dispatches * (2 if rt.caps.is_cpu else FILLER_DISPATCHES)


def round_robin(rt, entries: list[dict], rounds: int, clocks) -> tuple[dict, dict]:
    """Time every entry's dispatches (one pass each, cycling through its rotation) in `rounds`
    rounds, each entry one submit of ~BATCH_US of passes (8..100) + the filler per round, the order
    reversed every other round, after WARM_S of the same cycle untimed; submits are queued one
    ahead (runtime.submit.timed_batches). Returns ({name: [[µs per pass] per round]},
    {name: [(wall t0, t1) per round]})."""
    counters = {e["name"]: 0 for e in entries}

    def passes(e, count):
        ds, i = e["dispatches"], counters[e["name"]]
        counters[e["name"]] += count
        return [[ds[(i + j) % len(ds)]] for j in range(count)]

    estimate = {e["name"]: max(1.0, sorted(timed_passes(rt, passes(e, 4), label="q4gsw/warm-up"))[1] / 1e3)
                for e in entries}
    batch = {name: int(min(100, max(8, BATCH_US / us))) for name, us in estimate.items()}
    fill = filler(rt)
    t_end = time.perf_counter() + (0.05 if rt.caps.is_cpu else WARM_S)

    def warm():
        while time.perf_counter() < t_end:
            for e in entries:
                yield passes(e, batch[e["name"]])

    timed_batches(rt, warm(), filler=fill, label="q4gsw/warm-up")
    schedule = [e for r in range(rounds) for e in (entries if r % 2 == 0 else entries[::-1])]
    walls = []

    def timed():
        for e in schedule:
            walls.append(time.time())
            yield passes(e, batch[e["name"]])

    results = timed_batches(rt, timed(), filler=fill, label="q4gsw/bench")
    walls.append(time.time())
    times = {e["name"]: [] for e in entries}
    spans = {e["name"]: [] for e in entries}
    for i, (e, r) in enumerate(zip(schedule, results)):
        times[e["name"]].append([t / 1e3 for t in r])
        spans[e["name"]].append((walls[i], walls[i + 1] + 0.01))
    return times, spans

def check_rows(rng, n: int) -> np.ndarray:
    return np.unique(np.concatenate([rng.choice(n, size=min(n, 256), replace=False), [n - 1]]))


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    if not np.isfinite(y).all():
        return float("inf")
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(y.astype(np.float64) - ref).max()) / scale


def describe(spec, p: Problem, caps) -> dict:
    n_tiles, m_tiles = spec.tiles(p)
    info = {"kernel": spec.name, "settings": spec.settings(), "workgroups": n_tiles * m_tiles,
            "split": spec.split(p), "label": str(spec.key(p))}
    wg = dict(spec.constants(p)).get("WG")
    if wg:
        info["workgroup_size"] = int(wg)
        info["warps"] = n_tiles * m_tiles * -(-int(wg) // 32)
    if hasattr(spec, "features"):
        info["features"] = spec.features(p)
    return info


def probe_shape(rt, m: int, k: int, n: int, repeats: int, rng, log, clocks, only: str | None = None) -> dict:
    caps = rt.caps
    t0 = time.perf_counter()
    weight = random_weight(rng, n, k, GROUP_SIZE)
    x = rng.standard_normal((m, k)).astype(np.float32)
    p = Problem(m, n, k, GROUP_SIZE)
    rows = check_rows(rng, n)
    ref = linear_reference(x, PackedWeight(weight.weights[rows], weight.scales[:, rows], GROUP_SIZE, in_features=k))
    work = Workload.rotating(rt, weight, x)
    plain = PlainRead.of_weight(rt, weight, len(work.copies))
    entries = []
    route = choose_kernel(rt, "probe", p)
    variants = [("route", f"what q4gsw.linear runs ({route.name} {route.settings()})", lambda caps: route)]
    variants += [v for v in (M1_VARIANTS if m == 1 else MB_VARIANTS) + INT8_VARIANTS
                 if only is None or v[0] in only.split(",")]
    checked = PackedWeight(weight.weights[rows], weight.scales[:, rows], GROUP_SIZE, in_features=k)
    try:
        for name, what, factory in variants:
            entry = {"name": name, "what": what}
            entries.append(entry)
            try:
                spec = factory(caps)
                entry.update(describe(spec, p, caps))
                reason = spec.supports(p, caps)
                if reason:
                    entry["skipped"] = reason
                    continue
                ds = work.dispatches(spec)
                rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
                time_dispatch(rt, ds[0], repeats=1, warmup=0)
                y = work.read_out()[:, rows]
                entry["rel_error"] = rel_error(y, ref)
                if spec.activations == "int8":  # against its own reference; the f32 error is reported
                    entry["rel_error_f32"] = entry["rel_error"]
                    # the device's 127 / amax may be 1-3 ulp off numpy's (WGSL allows 2.5; tests/test_int8.py)
                    entry["rel_error"] = min(rel_error(y, linear_int8_reference(x, checked, x_group=spec.x_group_size(p),
                                                                                reciprocal_ulps=u)) for u in range(-3, 4))
                if not entry["rel_error"] < 1e-4:
                    entry["skipped"] = f"wrong result: rel. error {entry['rel_error']:.2e} on {len(rows)} features"
                    continue
                entry["dispatches"] = ds
            except Exception as exc:  # a variant that fails must not end the run
                entry["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log(f"    {name}: {entry['skipped']}")
                if os.environ.get("PROBE_TRACEBACK"):
                    traceback.print_exc()
        log(f"  M={m} K={k} N={n}: {sum('dispatches' in e for e in entries)} of {len(entries)} variants built "
            f"and checked, {len(work.copies)} copies, {time.perf_counter() - t0:.1f} s")
        runnable = [e for e in entries if "dispatches" in e]
        plain_entry = {"name": "plain read", "dispatches": plain.dispatches}
        times, spans = round_robin(rt, [plain_entry] + runnable, repeats, clocks)
        plain_times = [times["plain read"]]
        plain_spans = spans["plain read"]
        if plain.sink_value():
            log("  warning: the plain read met its sentinel (2^-128 odds): its pass wrote memory")
    finally:
        plain.release()
        work.release()
    plain_us = statistics.median(t for r in plain_times[0] for t in r)
    for e in runnable:
        e.pop("dispatches")
        per_round = times[e["name"]]
        e["median_us"] = statistics.median(t for r in per_round for t in r)
        e["min_us"] = min(t for r in per_round for t in r)
        e["round_medians_us"] = [statistics.median(r) for r in per_round]
        e["spread"] = (max(e["round_medians_us"]) - min(e["round_medians_us"])) / e["median_us"]
        e["over_plain_read"] = e["median_us"] / plain_us
        e["sm_mhz"] = [c for c in (clocks.clock([span]) for span in spans[e["name"]]) if c is not None] or None
    for e in entries:
        e["predicted_us"] = PREDICTIONS.get((m, k, n), {}).get(e["name"])
    plain_rounds = [statistics.median(r) for r in plain_times[0]]
    result = {"m": m, "k": k, "n": n, "group_size": GROUP_SIZE, "bytes": plain.nbytes,
              "copies": len(plain.data) or None, "plain_read_us": plain_us,
              "plain_read_first_us": plain_rounds[0] if plain_rounds else plain_us,
              "plain_read_last_us": plain_rounds[-1] if plain_rounds else plain_us, "variants": entries,
              "plain_read_sm_mhz": [c for c in (clocks.clock([span]) for span in plain_spans) if c is not None] or None,
              "wall_s": time.perf_counter() - t0}
    best = min(runnable, key=lambda e: e["median_us"], default=None)
    routed = next((e for e in entries if e["name"] == "route" and "median_us" in e), None)
    log(f"  M={m} K={k} N={n}: plain read {plain_us:.1f} µs (first {result['plain_read_first_us']:.1f}, last "
        f"{result['plain_read_last_us']:.1f}); route {routed['median_us'] if routed else float('nan'):.1f} µs; best "
        f"{best['name'] if best else '-'} {best['median_us'] if best else float('nan'):.1f} µs "
        f"({best['over_plain_read'] if best else float('nan'):.2f}x plain); {result['wall_s']:.1f} s")
    for e in sorted(runnable, key=lambda e: e["median_us"]):
        log(f"      {e['name']:<16} {e['median_us']:9.1f} µs  {e['over_plain_read']:5.2f}x  "
            f"(round spread {100 * e['spread']:.0f} %)  {e.get('warps', '?')} warps  MHz {e.get('sm_mhz')}")
    return result


GS_SHAPES = [(1, 4096, 4096), (1, 4096, 14336), (1, 14336, 4096), (1, 4096, 128256)]
GROUP_SIZES = (32, 64, 128, 256)


def probe_group_sizes(rt, m: int, k: int, n: int, rounds: int, rng, log, clocks, activations: str = "f32") -> dict:
    """The route (for `activations`) at each group size on one shape (own weights each), round-robin;
    errors against the float64 reference (the exact one for int8 too: ~5e-3)."""
    t0 = time.perf_counter()
    x = rng.standard_normal((m, k)).astype(np.float32)
    entries, works = [], []
    try:
        for gs in GROUP_SIZES:
            weight = random_weight(rng, n, k, gs)
            work = Workload.rotating(rt, weight, x)
            works.append(work)
            spec = choose_kernel(rt, "probe", Problem(m, n, k, gs), activations=activations)
            rows = check_rows(rng, n)
            ref = linear_reference(x, PackedWeight(weight.weights[rows], weight.scales[:, rows], gs, in_features=k))
            ds = work.dispatches(spec)
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            time_dispatch(rt, ds[0], repeats=1, warmup=0)
            err = rel_error(work.read_out()[:, rows], ref)
            entries.append({"name": f"gs{gs}", "group_size": gs, "rel_error": err, "dispatches": ds,
                            **describe(spec, Problem(m, n, k, gs), rt.caps)})
        times, spans = round_robin(rt, entries, rounds, clocks)
    finally:
        for work in works:
            work.release()
    for e in entries:
        e.pop("dispatches")
        flat = [t for r in times[e["name"]] for t in r]
        e["median_us"] = statistics.median(flat)
        e["round_medians_us"] = [statistics.median(r) for r in times[e["name"]]]
        e["sm_mhz"] = [c for c in (clocks.clock([span]) for span in spans[e["name"]]) if c is not None] or None
    base = next(e["median_us"] for e in entries if e["group_size"] == 128)
    for e in entries:
        e["over_gs128"] = e["median_us"] / base
    log(f"  group sizes M={m} K={k} N={n}: " + ", ".join(
        f"{e['name']} {e['median_us']:.1f} µs ({e['over_gs128']:.2f}x, {e['kernel']}, err {e['rel_error']:.1e})"
        for e in entries) + f"; {time.perf_counter() - t0:.1f} s")
    return {"m": m, "k": k, "n": n, "activations": activations, "entries": entries}


def to_f32(v: dict) -> str:
    """' (to f32: e)' for an int8 variant, else ''."""
    return f" (to f32: {v['rel_error_f32']:.1e})" if "rel_error_f32" in v else ""


def markdown(report: dict) -> str:
    fmt = lambda v, f=".1f": format(v, f) if isinstance(v, (int, float)) else "–"
    a = report["adapter"]
    lines = [f"# decode_variants_probe, {report['date']}, {a['name']} ({a['backend']}), driver {a['driver']}", "",
             f"GPU timestamps, one pass per dispatch, {report['repeats']} rounds: each variant one submit of "
             "~1 ms of passes (8-100) per round followed by a filler (a plain read of 256 MiB x 64, untimed) and "
             "queued before the previous submit is read (runtime.submit.timed_batches: the GPU never idles), "
             "round-robin (order reversed every other round) after 1.5 s of the same cycle untimed; median over all passes; spread = (max - min) of the round medians / median; "
             "weights rotated among copies >= 256 MiB; plain read = one pass "
             "over the same weight + scale bytes (tools/plain_read.py), timed in the same rounds; group size 128. "
             "Rel. error: max |y - ref| / max |ref| on 257 output features (float64 reference; for int8 variants "
             "the int8 path's reference, with the error to the f32 result in brackets).", "",
             "## Summary", "", "| M × K × N | plain read µs | route µs | route / plain | best variant | best µs "
             "| best / plain |", "|---|---:|---:|---:|---|---:|---:|"]
    for s in report["shapes"]:
        ok = [v for v in s["variants"] if "median_us" in v]
        best = min(ok, key=lambda v: v["median_us"], default=None)
        route = next((v for v in ok if v["name"] == "route"), None)
        lines.append(f"| {s['m']} × {s['k']} × {s['n']} | {fmt(s['plain_read_us'])} | "
                     f"{fmt(route['median_us'] if route else None)} | "
                     f"{fmt(route['over_plain_read'] if route else None, '.2f')} | {best['name'] if best else '–'} | "
                     f"{fmt(best['median_us'] if best else None)} | "
                     f"{fmt(best['over_plain_read'] if best else None, '.2f')} |")
    for s in report["shapes"]:
        lines += ["", f"## M = {s['m']}, K = {s['k']}, N = {s['n']} ({s['bytes']} bytes; plain read "
                      f"{s['plain_read_us']:.1f} µs: first {s['plain_read_first_us']:.1f}, last "
                      f"{s['plain_read_last_us']:.1f})", "",
                  "| variant | what | kernel, settings | WG | workgroups | warps | µs | min µs | spread | × plain | "
                  "predicted µs | rel. error | SM MHz |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for v in s["variants"]:
            pred = v.get("predicted_us")
            settings = {key: val for key, val in (v.get("settings") or {}).items() if val is not None}
            if "median_us" not in v:
                lines.append(f"| {v['name']} | {v['what']} | {v.get('kernel', '–')} {settings} | – | – | – | "
                             f"skipped: {v.get('skipped', '?')} | | | | | | |")
                continue
            lines.append(f"| {v['name']} | {v['what']} | {v['kernel']} {settings} | {v.get('workgroup_size', '–')} | "
                         f"{v['workgroups']} | {v.get('warps', '–')} | {fmt(v['median_us'])} | {fmt(v['min_us'])} | "
                         f"{100 * v['spread']:.0f} % | {fmt(v['over_plain_read'], '.2f')} | "
                         f"{f'{pred[0]}–{pred[1]}' if pred else '–'} | {v['rel_error']:.1e}{to_f32(v)} | "
                         f"{', '.join(f'{c:.0f}' for c in v.get('sm_mhz') or []) or '–'} |")
    if report.get("group_sizes"):
        lines += ["", "## Group sizes (the route at each; own weights each; round-robin)", "",
                  "| M × K × N | " + " | ".join(f"gs {g} µs (× gs 128)" for g in GROUP_SIZES) + " |",
                  "|---|" + "---:|" * len(GROUP_SIZES)]
        for s in report["group_sizes"]:
            cells = [f"{e['median_us']:.1f} ({e['over_gs128']:.2f}×) {e['kernel']}, err {e['rel_error']:.1e}"
                     for e in s["entries"]]
            lines.append(f"| {s['m']} × {s['k']} × {s['n']} ({s.get('activations', 'f32')} x) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for decode_variants_probe.{json,md}")
    ap.add_argument("--repeats", type=int, default=8, help="rounds (each variant one submit of ~4 ms of passes a round); default: %(default)s")
    ap.add_argument("--quick", action="store_true", help="small shapes, 5 repeats (a smoke test on lavapipe)")
    ap.add_argument("--no-group-sizes", action="store_true", help="skip the group-size sweep")
    ap.add_argument("--shapes", default=None, help="MxKxN,... instead of the default list")
    ap.add_argument("--group-size-activations", choices=("f32", "int8"), default="f32",
                    help="the route of which activations the group-size sweep times; default: %(default)s")
    ap.add_argument("--variants", default=None, help="NAME,... of the variants to time (the route always)")
    ap.add_argument("--budget-s", type=float, default=170.0,
                    help="start no new shape after this many seconds; default: %(default)s")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with ClockLog(os.path.join(args.out, "decode_variants_probe_clocks.csv")) as clocks:
        run(args, clocks)


def run(args, clocks):
    t_start = time.perf_counter()
    log = lambda *a: print(*a, flush=True)
    rt = get_runtime()
    caps = rt.caps
    log(f"{caps.adapter_name} ({caps.adapter_type}, {caps.backend}); driver {caps.driver}; "
        f"subgroups of {caps.subgroup_min_size}; workgroup storage "
        f"{caps.limits.get('max-compute-workgroup-storage-size')} bytes")
    rng = np.random.default_rng(0)
    # clocks up before anything is timed
    warm = PlainRead.of_bytes(rt, np.ones(64 << 20 if not caps.is_cpu else 1 << 20, np.uint8))
    time_dispatch(rt, warm.dispatches, repeats=1, warmup=0, warmup_s=0.0 if caps.is_cpu else 1.0)
    warm.release()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in part.split("x")) for part in args.shapes.split(",")]
    repeats = 2 if args.quick else args.repeats
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "adapter": {"name": caps.adapter_name, "backend": caps.backend, "driver": caps.driver,
                          "subgroup_min_size": caps.subgroup_min_size,
                          "workgroup_storage": caps.limits.get("max-compute-workgroup-storage-size")},
              "repeats": repeats, "shapes": []}
    for i, (m, k, n) in enumerate(shapes):
        if time.perf_counter() - t_start > args.budget_s:
            log(f"time budget of {args.budget_s:.0f} s reached: shapes from M={m} K={k} N={n} on not run")
            report.setdefault("not_run", []).extend([list(s) for s in shapes[i:]])
            break
        log(f"[{i + 1}/{len(shapes)}] M={m} K={k} N={n} ({time.perf_counter() - t_start:.0f} s)")
        try:
            report["shapes"].append(probe_shape(rt, m, k, n, repeats, rng, log, clocks, args.variants))
        except Exception as exc:  # a shape that fails must not end the run
            log(f"  M={m} K={k} N={n} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        # partial results survive a later failure or a timeout
        with open(os.path.join(args.out, "decode_variants_probe.json"), "w") as f:
            json.dump(report, f, indent=1)
    if not args.no_group_sizes:
        for (m, k, n) in (QUICK_SHAPES[:2] if args.quick else GS_SHAPES):
            if time.perf_counter() - t_start > args.budget_s + 60:
                log("time budget reached: group sizes not all run")
                break
            try:
                report.setdefault("group_sizes", []).append(
                    probe_group_sizes(rt, m, k, n, repeats, rng, log, clocks, args.group_size_activations))
            except Exception as exc:
                log(f"  group sizes M={m} K={k} N={n} failed: {type(exc).__name__}: {exc}")
                traceback.print_exc()
    report["wall_s"] = time.perf_counter() - t_start
    with open(os.path.join(args.out, "decode_variants_probe.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(args.out, "decode_variants_probe.md"), "w") as f:
        f.write(text)
    log(text)
    log(f"wrote {args.out}/decode_variants_probe.{{json,md}} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
