"""Prefill kernel variants (issue #15, session 5) in one process on the H200: the routed f32
kernel, the tiled_int8 default and every variant, timed round-robin, beside ORT WebGPU's DP4A path.

Session 5b copy (/work/notes/prefill_probe_s5b.py): adds the bcast_int8 variants (ONNX Runtime's
DP4A shape, branch h/int8b); run it with --only f32_route,tiled_int8,tiled_int8_wg512,bcast_int8_ort,...

Usage (GPU machine, repo root of branch h/prefill, staged wgpu on PYTHONPATH; a copy of this file
sits in the worktree's ignored .probe/, next to .gpu/ and .ort/):
    source .gpu/activate.sh; export PYTHONPATH=$PWD/src:$PYTHONPATH; source .ort/ort-activate.sh
    python .probe/prefill_probe.py --out DIR [--budget-s 240] [--cycles 6] [--passes 20] [--batch-ms 15]
    python .probe/prefill_probe.py --out DIR --quick   (small shapes: a smoke test on lavapipe;
        PROBE_ORT_PROVIDER=CPUExecutionProvider exercises the ORT path without WebGPU)

Per shape (M = 512 first, then M = 128; K x N = 4096 x 4096, 4096 x 14336, 14336 x 4096; group 128):
one Workload whose weight copies total >= 256 MiB (tools/workload.py: L2 rotation); every variant
(docs/kernels-prefill.md, session 5) is built, run once on a NaN-poisoned output and checked on
256 random output features (+ the last) against float64: f32 variants vs the exact linear
(rel. error < 1e-4), int8 variants vs the float64 product of the quantized x (< 1e-4; the error
against the exact linear is reported); diagnostics (DIAG > 0: results wrong by design) are only
run. A variant that fails to build, compile or check is reported and skipped. Then >= 1.5 s of
sustained warm-up, and `--cycles` rounds over all variants, each round a batch of `--passes`
passes per variant in one command buffer (GPU timestamps per pass, weight copies rotated);
median per variant over all rounds. nvidia-smi samples the SM clock every 100 ms (when present)
and each variant's rounds get their median clock. ORT WebGPU (accuracy_level 4, fp32 and fp16
I/O) runs right after a shape's rounds when onnxruntime has the WebGPU EP (profiler timestamps).
Writes DIR/prefill_probe.{json,md} after every shape (partial results survive) and prints a table.
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
from q4gsw.ops.plan import choose_kernel  # noqa: E402
from q4gsw.runtime import get_runtime  # noqa: E402
from q4gsw.runtime.submit import timed_batches, timed_passes  # noqa: E402
from q4gsw.runtime.timing import warm_up  # noqa: E402
from q4gsw.tools.plain_read import FILLER_PASSES, PlainRead, filler_read  # noqa: E402
from q4gsw.tools.workload import Workload, random_weight  # noqa: E402

GROUP_SIZE = 128
SHAPES = [(512, 4096, 4096), (512, 4096, 14336), (512, 14336, 4096),
          (128, 4096, 4096), (128, 4096, 14336), (128, 14336, 4096)]  # (M, K, N)
QUICK_SHAPES = [(130, 256, 272), (64, 512, 136)]


def with_diag(spec, value: int):
    """spec with the DIAG override (timing diagnostics of tiled.wgsl / tiled_int8.wgsl) added."""
    base = type(spec)

    class Diag(base):
        def constants(self, p):
            return (*super().constants(p), ("DIAG", value))

    diag = Diag.__new__(Diag)
    diag.__dict__.update(spec.__dict__)
    return diag


def f32(name):
    return lambda rt, p: KERNELS[name].bind(rt.caps)


def int8(name, **settings):
    return lambda rt, p: INT8_KERNELS[name].bind(rt.caps).with_settings(settings)


def f32_with(name, **changes):
    """A tiled preset with other constructor settings (prefetch, ...), not registered."""
    def make(rt, p):
        spec = KERNELS[name]
        args = dict(name=spec.name, prefetch=spec.prefetch, resident=spec.resident,
                    invocations_per_workgroup=spec.invocations_per_workgroup, baseline=True)
        args.update(changes)
        return type(spec)(spec.x_rows_per_tile, spec.fixed_split, **args)
    return make


def routed(diag=0):
    """The routed f32 kernel; with diag, that kernel's DIAG variant when it is tiled.wgsl (else tiled_split's)."""
    def make(rt, p):
        spec = choose_kernel(rt, "probe", p)
        if not diag:
            return spec
        if spec.name not in ("tiled", "tiled_split"):
            spec = KERNELS["tiled_split"].bind(rt.caps)
        return with_diag(spec, diag)
    return make


def int8_diag(diag):
    return lambda rt, p: with_diag(INT8_KERNELS["tiled_int8"].bind(rt.caps), diag)


#: (name, what, factory(rt, problem) -> KernelSpec, diagnostic). Predictions: docs/kernels-prefill.md, session 5.
VARIANTS = [
    ("f32_route", "f32: what q4gsw.linear runs (tiled at M=512, tiled_split at M=128)", routed(), False),
    ("tiled_split_2wg", "f32: split K to fill 2 workgroups per SM (control for lowreg_2wg)", f32("tiled_split_2wg"), False),
    ("tiled_lowreg_2wg", "f32: no register prefetch (-24 regs) + split for 2 workgroups per SM",
     f32("tiled_lowreg_2wg"), False),
    ("tiled_lowreg", "f32: no register prefetch, no split (tiled_v1's loads)", f32("tiled_lowreg"), False),
    ("tiled_m64", "f32: 64-row tiles (4 x 8 a thread, 32 accumulator registers), no split", f32("tiled_m64"), False),
    ("tiled_wg512", "f32: the 128 x 128 tile with 512 invocations of 4 x 8 (twice the warps, half the "
                    "registers each), no split", f32("tiled_wg512"), False),
    ("tiled_wide", "f32: tiled_wide.wgsl, 128 x 256 tiles of 8 x 16 an invocation, 16 k a step, split to fill the wave",
     f32("tiled_wide"), False),
    ("tiled_wg512_lowreg", "f32: tiled_wg512 without the register prefetch (settings, not registered)",
     f32_with("tiled_wg512", prefetch=False), False),
    ("f32_diag1", "f32 DIAG 1: routed kernel without staging after step 1 (wrong results)", routed(1), True),
    ("f32_diag2", "f32 DIAG 2: routed kernel with the FMA loop cut to 1 k of 32 (wrong results)", routed(2), True),
    ("tiled_int8", "int8 default (128 x 128, 8 x 8 a thread, 64-k steps, double buffer)", int8("tiled_int8"), False),
    ("tiled_int8_1buf", "int8, one buffer (fastest in the last H200 run)", int8("tiled_int8_1buf"), False),
    ("tiled_int8_m64", "int8, 64 x 128 tiles (4 x 8 a thread)", int8("tiled_int8_m64"), False),
    ("tiled_int8_n64", "int8, 128 x 64 tiles (8 x 4 a thread: 64 accumulator registers)", int8("tiled_int8_n64"), False),
    ("tiled_int8_64x64", "int8, 64 x 64 tiles (4 x 4 a thread: 32 accumulator registers, 3+ workgroups/SM)",
     int8("tiled_int8_64x64"), False),
    ("tiled_int8_wg512", "int8, the default's 128 x 128 tile with 512 invocations (4 x 8 a thread: 16 warps a "
                         "workgroup, half the registers each)", int8("tiled_int8_wg512"), False),
    ("int8_wg512_1buf", "int8: tiled_int8_wg512 with one buffer (settings)", int8("tiled_int8_wg512", double_buffer=False),
     False),
    ("int8_wg512_n64", "int8: 128 x 64 tiles of 512 invocations (4 x 4 a thread, 16 warps; settings)",
     int8("tiled_int8_wg512", features_per_tile=64), False),
    ("int8_64x64_1buf", "int8: tiled_int8_64x64 with one buffer (settings)", int8("tiled_int8_64x64", double_buffer=False),
     False),
    ("bcast_int8_ort", "int8, ONNX Runtime's DP4A shape (bcast_int8.wgsl: 64 x 64, 1 x 16 a thread, broadcast "
                       "weight reads, scales every 32 k, 32-k steps) in its order: one buffer, load/barrier/products/barrier",
     int8("bcast_int8_ort"), False),
    ("bcast_int8", "int8, bcast_int8 with the next step's loads issued before the products, two buffers",
     int8("bcast_int8"), False),
    ("bcast_int8_k64", "int8, bcast_int8 with 64-k steps (half the barriers; scales once a step at group 128)", int8("bcast_int8_k64"), False),
    ("bcast_int8_n128", "int8, bcast_int8 with 64 x 128 tiles (1 x 32 a thread)", int8("bcast_int8_n128"), False),
    # (session 5's run 7 also timed bcast_int8_k128 and bcast_ort_k64: one buffer with steps past 32 k,
    # refused since: tests/test_bcast_int8.py gave wrong outputs for that family on the H200)
    ("bcast_k128_2buf", "int8: bcast_int8 with 128-k steps, two buffers and the loads one step ahead (36 KiB; settings)",
     int8("bcast_int8", k_step=128), False),
    ("bcast_n128_ort", "int8: bcast_int8_n128 in ONNX Runtime's order (one buffer; settings)",
     int8("bcast_int8_n128", double_buffer=False), False),
    ("int8_diag1", "int8 DIAG 1: default without staging after step 1 (wrong results)", int8_diag(1), True),
    ("int8_diag2", "int8 DIAG 2: default with the products cut to 1 k-quad of 8 (wrong results)", int8_diag(2), True),
    ("int8_diag3", "int8 DIAG 3: default with the scales applied once at the end (f32 accumulators dead "
                   "in the loop; wrong results)", int8_diag(3), True),
]


#: Predictions written before the run (docs/kernels-prefill.md, session 5), at M = 512: speed-up
#: (baseline's time / variant's time) against the baseline named, (low, high).
PREDICTED_SPEEDUP = {
    "tiled_split_2wg": ("f32_route", 0.97, 1.03), "tiled_lowreg_2wg": ("f32_route", 1.2, 1.45),
    "tiled_lowreg": ("f32_route", 0.8, 0.9), "tiled_m64": ("f32_route", 0.85, 1.1),
    "tiled_wg512": ("f32_route", 1.15, 1.4), "tiled_wide": ("f32_route", 1.1, 1.3), "f32_diag1": ("f32_route", 1.1, 1.25), "f32_diag2": ("f32_route", 2.5, 3.5),
    "tiled_int8_1buf": ("tiled_int8", 0.97, 1.07), "tiled_int8_m64": ("tiled_int8", 0.75, 0.85),
    "tiled_int8_n64": ("tiled_int8", 1.0, 1.3), "tiled_int8_64x64": ("tiled_int8", 1.2, 1.5),
    "tiled_int8_wg512": ("tiled_int8", 1.15, 1.4), "int8_wg512_1buf": ("tiled_int8", 1.1, 1.45),
    "int8_wg512_n64": ("tiled_int8", 1.1, 1.45), "int8_64x64_1buf": ("tiled_int8", 1.15, 1.55),
    "bcast_int8_ort": ("tiled_int8", 1.1, 1.35), "bcast_int8": ("tiled_int8", 1.15, 1.4),
    "bcast_int8_k64": ("tiled_int8", 1.2, 1.45), "bcast_int8_n128": ("tiled_int8", 1.05, 1.4),
    "bcast_ort_k64": ("tiled_int8", 1.15, 1.4), "bcast_int8_k128": ("tiled_int8", 1.25, 1.5),
    "bcast_k128_2buf": ("tiled_int8", 1.2, 1.5), "bcast_n128_ort": ("tiled_int8", 1.0, 1.35),
    "int8_diag1": ("tiled_int8", 0.95, 1.05), "int8_diag2": ("tiled_int8", 3.0, 5.0), "int8_diag3": ("tiled_int8", 1.2, 1.6),
}


def batch_passes(check_us, args) -> int:
    """Passes a batch: --passes, or more where they take less than --batch-ms of GPU time together
    (the host's gap between batches must stay small, or the clocks drop), at most 200."""
    if not check_us:
        return args.passes
    return max(args.passes, min(200, int(args.batch_ms * 1e3 / check_us) + 1))


def rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    if not np.isfinite(y).all():
        return float("inf")
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(y.astype(np.float64) - ref).max()) / scale


def ort_timed(x, weight, provider, fp16, warmup_s, iterations) -> dict:
    """One ORT session of matmul_nbits_model (accuracy_level 4), run for >= warmup_s of wall time
    (clocks up: a fixed few runs after building the session measure the ramp), then `iterations`
    profiled runs: {"y", "median_us" (sum of the per-program medians), "programs", "provider", "timing"}."""
    import tempfile

    import onnxruntime as ort

    from q4gsw.tools.yardsticks import matmul_nbits_model

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="q4gsw-ort-"), "profile")
    model = matmul_nbits_model(weight, accuracy_level=4, fp16=fp16).SerializeToString()
    sess = ort.InferenceSession(model, so, providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
    feed = {"A": np.ascontiguousarray(x, np.float16 if fp16 else np.float32)}
    y = sess.run(None, feed)[0]
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        sess.run(None, feed)
    wall0 = time.time()
    for _ in range(iterations):
        sess.run(None, feed)
    wall1 = time.time()
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "MatMulNBits"]
    gpu = [e for e in events if e.get("cat") == "Api" and str(e.get("name", "")).startswith("&MatMulNBits&")]
    result = {"y": y.astype(np.float32), "provider": nodes[-1]["args"].get("provider") if nodes else None,
              "span": (wall0, wall1)}
    if gpu:
        programs: dict[str, list[float]] = {}
        for e in gpu:
            programs.setdefault(e["name"].rsplit("&", 1)[1], []).append(float(e["dur"]))
        result["programs"] = {p: statistics.median(d[-iterations:]) for p, d in programs.items()}
        result["median_us"] = sum(result["programs"].values())
        result["timing"] = (f"ORT profiler, Dawn GPU timestamps per dispatch (whole µs), median of {iterations} runs "
                            f"after {warmup_s} s of runs")
    else:
        result["median_us"] = statistics.median(float(e["dur"]) for e in nodes[-iterations:])
        result["timing"] = f"ORT profiler, node kernel time (host), median of {iterations} runs"
    return result


def ort_rows(x, weight, log, warmup_s, rows, ref_exact) -> dict:
    """ORT WebGPU MatMulNBits, accuracy_level 4 (DP4A), fp32 and fp16 I/O: median µs and rel. error; {} without it."""
    try:
        import onnxruntime as ort

        from q4gsw.tools.yardsticks import ORT_WEBGPU
    except ImportError:
        return {}
    provider = os.environ.get("PROBE_ORT_PROVIDER", ORT_WEBGPU)  # CPUExecutionProvider: a smoke test of this path
    if provider not in ort.get_available_providers():
        return {}
    out = {"onnxruntime": ort.__version__, "provider": provider}
    for row, fp16 in (("ort_acc4_fp32", False), ("ort_acc4_fp16", True)):
        try:
            r = ort_timed(x, weight, provider, fp16, warmup_s, iterations=60)
        except Exception as exc:  # an ORT build or shape ORT refuses: reported, not fatal
            out[row] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            log(f"    {row}: {out[row]['skipped']}")
            continue
        out[row] = {"median_us": r["median_us"], "programs": r.get("programs"), "provider": r.get("provider"),
                    "timing": r["timing"], "rel_error": rel_error(r["y"][:, rows], ref_exact), "span": r["span"]}
    return out


def probe_shape(rt, m, k, n, args, rng, log, clocks, filler) -> dict:
    t0 = time.perf_counter()
    p = Problem(m, n, k, GROUP_SIZE)
    weight = random_weight(rng, n, k, GROUP_SIZE)
    x = rng.standard_normal((m, k)).astype(np.float32)
    rows = np.unique(np.concatenate([rng.choice(n, size=min(n, 256), replace=False), [n - 1]]))
    part = PackedWeight(weight.weights[rows], weight.scales[:, rows], GROUP_SIZE, in_features=k)
    ref_exact = linear_reference(x, part)
    ref_int8 = linear_int8_reference(x, part)
    work = Workload.rotating(rt, weight, x)
    entries = []
    try:
        for name, what, factory, diagnostic in VARIANTS:
            entry = {"name": name, "what": what, "diagnostic": diagnostic}
            entries.append(entry)
            try:
                spec = factory(rt, p)
                n_tiles, m_tiles = spec.tiles(p)
                entry.update(kernel=spec.name, settings=spec.settings(), label=str(spec.key(p)),
                             activations=spec.activations, workgroups=n_tiles * m_tiles, split=spec.split(p))
                reason = spec.supports(p, rt.caps)
                if reason:
                    entry["skipped"] = reason
                    continue
                ds = work.dispatches(spec)
                rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
                entry["check_us"] = timed_passes(rt, [[ds[0]]], label="probe/check")[0] / 1e3
                y = work.read_out()[:, rows]
                entry["rel_error"] = rel_error(y, ref_exact)
                if spec.activations == "int8":
                    entry["rel_error_vs_quantized_x"] = rel_error(y, ref_int8)
                check = entry.get("rel_error_vs_quantized_x", entry["rel_error"])
                # int8 on a GPU: 127 / amax in the GPU's f32 division can move a rounding in a few
                # elements of the quantized x, against numpy's exact one (lavapipe agrees bit for bit)
                limit = 2e-3 if spec.activations == "int8" else 1e-4
                if not diagnostic and not check < limit:
                    entry["skipped"] = f"wrong result: rel. error {check:.2e} on {len(rows)} features"
                    log(f"    {name}: {entry['skipped']}")
                    continue
                entry["dispatches"] = ds
            except Exception as exc:  # a variant that fails must not end the run
                entry["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log(f"    {name}: {entry['skipped']}")
                if os.environ.get("PROBE_TRACEBACK"):
                    traceback.print_exc()
        runnable = [e for e in entries if "dispatches" in e]
        log(f"  M={m} K={k} N={n}: {len(runnable)} of {len(entries)} variants built and checked, "
            f"{len(work.copies)} weight copies, {time.perf_counter() - t0:.1f} s")
        times = {e["name"]: [] for e in runnable}
        spans = {e["name"]: [] for e in runnable}
        done = {e["name"]: 0 for e in runnable}

        def batch_of(e):
            ds, i = e["dispatches"], done[e["name"]]
            count = batch_passes(e.get("check_us"), args)
            done[e["name"]] += count
            return [[ds[(i + j) % len(ds)]] for j in range(count)]

        # sustained warm-up (the routed f32 kernel if it runs: the longest passes) for >= warmup_s,
        # then the rounds; every submit is followed by the filler and queued before the previous
        # one is read (submit.timed_batches): the GPU never idles, its clocks stay up
        if runnable:
            warm = max(runnable, key=lambda e: e["name"] == "f32_route")
            t_end = time.perf_counter() + args.warmup_s
            if filler:
                timed_batches(rt, (batch_of(warm) for _ in iter(lambda: time.perf_counter() < t_end, False)),
                              filler=filler, label="probe/warm-up")
            else:
                warm_up(rt, warm["dispatches"], args.warmup_s)
        for cycle in range(args.cycles):
            order = runnable if cycle % 2 == 0 else runnable[::-1]  # drift shows as even != odd rounds
            wall0 = time.time()
            if filler:
                results = timed_batches(rt, [batch_of(e) for e in order], filler=filler, label="probe/bench")
            else:
                results = [timed_passes(rt, batch_of(e), label="probe/bench") for e in order]
            span = (wall0, time.time())
            for e, ts in zip(order, results):
                times[e["name"]].append([t / 1e3 for t in ts])
                spans[e["name"]].append(span)
        for e in runnable:
            e.pop("dispatches")
            rounds = times[e["name"]]
            flat = [t for r in rounds for t in r]
            e["median_us"] = statistics.median(flat)
            e["min_us"] = min(flat)
            e["round_medians_us"] = [statistics.median(r) for r in rounds]
            e["tflop_per_s"] = 2 * m * n * k / e["median_us"] / 1e6
            e["sm_mhz"] = clocks.clock(spans[e["name"]])
        ort = ort_rows(x, weight, log, args.warmup_s, rows, ref_exact)
    finally:
        work.release()
    for row, r in ort.items():
        if isinstance(r, dict) and "span" in r:
            r["sm_mhz"] = clocks.clock([r.pop("span")])
            r["tflop_per_s"] = 2 * m * n * k / r["median_us"] / 1e6
    route = next((e for e in entries if e["name"] == "f32_route" and "median_us" in e), None)
    ort_us = (ort.get("ort_acc4_fp32") or {}).get("median_us")
    timed = {e["name"]: e for e in entries if "median_us" in e}
    for e in timed.values():
        e["vs_f32_route"] = route["median_us"] / e["median_us"] if route else None
        e["vs_ort_int8"] = ort_us / e["median_us"] if ort_us else None
        if e["name"] in PREDICTED_SPEEDUP:
            base, low, high = PREDICTED_SPEEDUP[e["name"]]
            e["predicted"] = {"vs": base, "low": low, "high": high, "at": "M = 512"}
            if base in timed:
                e["speedup_vs_" + base] = timed[base]["median_us"] / e["median_us"]
    return {"m": m, "k": k, "n": n, "group_size": GROUP_SIZE, "copies": len(work.copies), "variants": entries,
            "ort": ort, "seconds": time.perf_counter() - t0}


# --- micro-benchmark: the GEMMs' inner loops without memory, at the GEMMs' occupancies ---------

MICRO_ITERS = 32768


def micro_wgsl(kind: str) -> str:
    """The inner loop of tiled_int8 (kind "dp4a": 16 vec4<i32> sums, 64 dot4I8Packed per trip from
    4 vec4<u32> operands) or tiled (kind "ffma": 16 vec4<f32>, 64 FMA), operands in registers
    (stepped each trip so nothing is loop-invariant), WG invocations a workgroup."""
    pairs = [(r, c) for r in range(8) for c in range(2)]
    if kind == "dp4a":
        decl = "\n".join(f"  var i{r}{c} = vec4<i32>(0);" for r, c in pairs)
        body = "\n".join(f"    i{r}{c} += dots(a{r // 4}.{'xyzw'[r % 4]}, b{c});" for r, c in pairs)
        ops = ("  var a0 = inp[gid.x & 63u]; var a1 = inp[(gid.x + 1u) & 63u];\n"
               "  let b0 = inp[(gid.x + 2u) & 63u]; let b1 = inp[(gid.x + 3u) & 63u];")
        step = "    a0 += vec4<u32>(0x01010101u); a1 += vec4<u32>(0x01010101u);"
        fold = " ^ ".join(f"bitcast<vec4<u32>>(i{r}{c})" for r, c in pairs)
        head = ("fn dots(a: u32, b: vec4<u32>) -> vec4<i32> {\n  return vec4<i32>(dot4I8Packed(a, b.x), "
                "dot4I8Packed(a, b.y), dot4I8Packed(a, b.z), dot4I8Packed(a, b.w));\n}\n")
    else:
        decl = "\n".join(f"  var f{r}{c} = vec4<f32>(0.0);" for r, c in pairs)
        body = "\n".join(f"    f{r}{c} = fma(vec4<f32>(a{r // 4}.{'xyzw'[r % 4]}), b{c}, f{r}{c});" for r, c in pairs)
        ops = ("  var a0 = bitcast<vec4<f32>>(inp[gid.x & 63u] & vec4<u32>(0x3F7FFFFFu));\n"
               "  var a1 = bitcast<vec4<f32>>(inp[(gid.x + 1u) & 63u] & vec4<u32>(0x3F7FFFFFu));\n"
               "  let b0 = bitcast<vec4<f32>>(inp[(gid.x + 2u) & 63u] & vec4<u32>(0x3F7FFFFFu));\n"
               "  let b1 = bitcast<vec4<f32>>(inp[(gid.x + 3u) & 63u] & vec4<u32>(0x3F7FFFFFu));")
        step = "    a0 += vec4<f32>(1e-7); a1 += vec4<f32>(1e-7);"
        fold = " + ".join(f"f{r}{c}" for r, c in pairs)
        fold = f"bitcast<vec4<u32>>({fold})"
        head = ""
    return f"""{head}override WG: u32 = 256u;
override ITERS: u32 = 1024u;
@group(0) @binding(0) var<storage, read> inp: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> outp: array<vec4<u32>>;
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
{ops}
{decl}
  for (var t = 0u; t < ITERS; t++) {{
{body}
{step}
  }}
  outp[gid.x] = {fold};
}}
"""


rt_iters: list = []  # the trips the micro-benchmark ran (for the report)


def micro_bench(rt, log, clocks, repeats: int, quick: bool) -> list:
    """Per (kind, invocations a workgroup, workgroups per SM): GPU µs of 132 x workgroups-per-SM
    workgroups (the H200's SMs), ops per clock per SM at the logged SM clock (1980 MHz if none)."""
    import wgpu

    device = rt.device
    sms = 132
    rng = np.random.default_rng(1)
    inp = device.create_buffer_with_data(data=rng.integers(0, 2**32, 256, dtype=np.uint32).tobytes(),
                                         usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    configs = [(kind, wg, per_sm) for kind in ("dp4a", "ffma") for wg, per_sm in ((256, 1), (512, 1), (256, 2), (256, 4))]
    iters = 64 if quick else MICRO_ITERS
    rt_iters.append(iters)
    runs, results = [], []
    for kind, wg, per_sm in configs:
        entry = {"kind": kind, "invocations": wg, "workgroups_per_sm": per_sm, "warps_per_sm": wg // 32 * per_sm}
        results.append(entry)
        try:
            module = device.create_shader_module(code=micro_wgsl(kind))
            n_iters = iters * 256 // (wg * per_sm)  # the same total work in every configuration
            pipeline = device.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main",
                                        "constants": {"WG": float(wg), "ITERS": float(n_iters)}})
            groups = sms * per_sm
            outp = device.create_buffer(size=16 * groups * wg, usage=wgpu.BufferUsage.STORAGE)
            bind = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
                {"binding": 0, "resource": {"buffer": inp}}, {"binding": 1, "resource": {"buffer": outp}}])
            entry["ops"] = groups * wg * n_iters * 64
            runs.append((entry, pipeline, bind, groups))
        except Exception as exc:  # reported, never fatal
            entry["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log(f"    micro {kind} WG={wg} x{per_sm}: {entry['skipped']}")
    if not runs or not rt.caps.has_timestamps:
        return results
    times = {id(e): [] for e, *_ in runs}
    spans = {id(e): [] for e, *_ in runs}
    per_submit = max(1, repeats // 3)
    _, pipeline, bind, groups = runs[0]
    t_end = time.perf_counter() + (0.2 if quick else 1.5)  # clocks up again after ORT's runs and the host's work
    while time.perf_counter() < t_end:
        encoder = device.create_command_encoder()
        for _ in range(4):
            cpass = encoder.begin_compute_pass()
            cpass.set_pipeline(pipeline)
            cpass.set_bind_group(0, bind)
            cpass.dispatch_workgroups(groups)
            cpass.end()
        device.queue.submit([encoder.finish()])
        device.queue.read_buffer(inp, 0, 16)  # wait (on_submitted_work_done_sync is broken in wgpu-py 0.32)
    for _ in range(3):  # three rounds over the configurations, each a submit of per_submit timed passes
        for entry, pipeline, bind, groups in runs:
            queries = device.create_query_set(type="timestamp", count=2 * per_submit)
            resolved = device.create_buffer(size=16 * per_submit,
                                            usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
            encoder = device.create_command_encoder()
            for i in range(per_submit):
                cpass = encoder.begin_compute_pass(timestamp_writes={
                    "query_set": queries, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1})
                cpass.set_pipeline(pipeline)
                cpass.set_bind_group(0, bind)
                cpass.dispatch_workgroups(groups)
                cpass.end()
            encoder.resolve_query_set(queries, 0, 2 * per_submit, resolved, 0)
            wall0 = time.time()
            device.queue.submit([encoder.finish()])
            stamps = np.frombuffer(device.queue.read_buffer(resolved), np.uint64).astype(np.int64)
            spans[id(entry)].append((wall0, time.time()))
            times[id(entry)] += [float(stamps[2 * i + 1] - stamps[2 * i]) / 1e3 for i in range(per_submit)]
    for entry, *_ in runs:
        entry["median_us"] = statistics.median(times[id(entry)])
        mhz = clocks.clock(spans[id(entry)])
        entry["sm_mhz"] = mhz
        entry["ops_per_clock_per_sm"] = entry["ops"] / (entry["median_us"] * 1e-6) / ((mhz or 1980) * 1e6) / sms
        log(f"    micro {entry['kind']} WG={entry['invocations']} x{entry['workgroups_per_sm']} "
            f"({entry['warps_per_sm']} warps/SM): {entry['median_us']:.1f} µs, "
            f"{entry['ops_per_clock_per_sm']:.1f} per clock per SM at {fmt(mhz, '.0f')} MHz")
    return results


def fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def markdown(report) -> str:
    a = report["adapter"]
    lines = [f"# Prefill variants probe (issue #15, session 5), {report['date']}", "",
             f"- card: {a['name']} ({a['backend']}); driver: {a['driver']}; workgroup storage {a['workgroup_storage']} B",
             f"- timing: GPU timestamps, one pass per dispatch, >= {report['passes']} passes a batch in one command buffer "
             f"(>= {report['batch_ms']} ms of GPU work; {'each submit followed by a filler (a plain read of 128 MiB x 96) and queued before the previous is read, so the GPU never idles' if report.get('filler') else 'no filler'}), "
             f"{report['cycles']} round-robin rounds over all variants after {report['warmup_s']} s of sustained "
             "warm-up; median over all passes; weights rotated past L2 (>= 256 MiB of copies); group size 128",
             "- rel. error: max |y - ref| / max |ref| on 257 output features against the exact float64 linear; int8 "
             "rows are also checked against the float64 product of the quantized x (< 2e-3 on a GPU: its f32 division can move a rounding of the quantized x); DIAG rows are "
             "timing diagnostics with wrong results by design",
             "- ×f32: the routed f32 kernel's time over this row's; ×ORT: ORT WebGPU DP4A (accuracy_level 4, fp32 "
             "I/O, its profiler) over this row's (>= 1.2 is the issue's goal for int8 at M = 512)", ""]
    if report.get("not_run"):
        lines += [f"- not run (time budget): {report['not_run']}", ""]
    for s in report["shapes"]:
        lines += [f"## M = {s['m']}, K = {s['k']}, N = {s['n']} ({s['copies']} weight copies, {s['seconds']:.0f} s)", "",
                  "| variant | what | key | WGs | µs (median) | min | TFLOP/s | ×f32 | ×ORT | measured × (predicted, "
                  "M = 512) | rel. error | SM MHz |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for v in s["variants"]:
            if "median_us" not in v:
                lines.append(f"| {v['name']} | {v['what']} | {v.get('label', '–')} | {v.get('workgroups', '–')} | "
                             f"skipped: {v.get('skipped', '?')} | | | | | | | |")
                continue
            err = "(diag)" if v["diagnostic"] else f"{v['rel_error']:.1e}"
            pred = v.get("predicted")
            versus = (f"{fmt(v.get('speedup_vs_' + pred['vs']), '.2f')} vs {pred['vs']} ({pred['low']}–{pred['high']})"
                      if pred else "")
            lines.append(f"| {v['name']} | {v['what']} | {v['label']} | {v['workgroups']} | {fmt(v['median_us'])} | "
                         f"{fmt(v['min_us'])} | {fmt(v['tflop_per_s'])} | {fmt(v['vs_f32_route'], '.2f')} | "
                         f"{fmt(v['vs_ort_int8'], '.2f')} | {versus} | {err} | {fmt(v['sm_mhz'], '.0f')} |")
        for row, r in s["ort"].items():
            if not isinstance(r, dict):
                continue
            if "median_us" not in r:
                lines.append(f"| {row} | ORT WebGPU | – | – | skipped: {r.get('skipped')} | | | | | | | |")
                continue
            lines.append(f"| {row} | ORT {s['ort'].get('onnxruntime')} {s['ort'].get('provider')} acc. level 4 ({', '.join(r.get('programs') or {})}) "
                         f"| – | – | {fmt(r['median_us'])} | – | {fmt(r['tflop_per_s'])} | – | – | | "
                         f"{r['rel_error']:.1e} | {fmt(r.get('sm_mhz'), '.0f')} |")
        lines.append("")
    if report.get("micro"):
        lines += ["## The inner loops alone (micro-benchmark, operands in registers, 132 SMs assumed)", "",
                  "64 dp4a (tiled_int8's loop: 16 vec4<i32> sums; + 8 IADD stepping the operands) or 64 FFMA "
                  "(tiled's: 16 vec4<f32>; + 8 FADD) a trip, "
                  f"{report.get('micro_trips')} trips × 132 × 256 invocations of work per configuration (split over "
                  "its workgroups); 'per clock per SM' at the logged SM clock "
                  "(1980 MHz where none). The dp4a probe reached 56 a clock per SM with 64 warps per SM.", "",
                  "| loop | invocations | workgroups/SM | warps/SM | µs | per clock per SM | SM MHz |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for e in report["micro"]:
            if "median_us" not in e:
                lines.append(f"| {e['kind']} | {e['invocations']} | {e['workgroups_per_sm']} | {e['warps_per_sm']} | "
                             f"{e.get('skipped', 'not timed')} | | |")
                continue
            lines.append(f"| {e['kind']} | {e['invocations']} | {e['workgroups_per_sm']} | {e['warps_per_sm']} | "
                         f"{e['median_us']:.1f} | {e['ops_per_clock_per_sm']:.1f} | {fmt(e['sm_mhz'], '.0f')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for prefill_probe.{json,md} and the clock log")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="start no new shape after this many seconds; default: %(default)s")
    ap.add_argument("--cycles", type=int, default=6, help="round-robin rounds; default: %(default)s")
    ap.add_argument("--passes", type=int, default=20, help="timed passes a batch, at least; default: %(default)s")
    ap.add_argument("--batch-ms", type=float, default=15.0,
                    help="more passes a batch where --passes take less GPU time than this; default: %(default)s")
    ap.add_argument("--warmup-s", type=float, default=1.5, help="sustained warm-up per shape; default: %(default)s")
    ap.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    ap.add_argument("--no-micro", action="store_true", help="skip the inner-loop micro-benchmark")
    ap.add_argument("--quick", action="store_true", help="small shapes, 2 rounds of 3 passes (lavapipe smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.cycles, args.passes, args.warmup_s, args.batch_ms = 2, 3, 0.1, 0.0
    os.makedirs(args.out, exist_ok=True)
    if args.only:
        keep = set(args.only.split(","))
        VARIANTS[:] = [v for v in VARIANTS if v[0] in keep]
    with ClockLog(os.path.join(args.out, "prefill_probe_clocks.csv")) as clocks:
        run(args, clocks)


def run(args, clocks):
    t_start = time.perf_counter()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    rt = get_runtime()
    caps = rt.caps
    log(f"{caps.adapter_name} ({caps.adapter_type}, {caps.backend}); driver {caps.driver}; workgroup storage "
        f"{caps.limits.get('max-compute-workgroup-storage-size')} bytes; timestamps {caps.has_timestamps}")
    rng = np.random.default_rng(0)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "adapter": {"name": caps.adapter_name, "backend": caps.backend, "driver": caps.driver,
                          "workgroup_storage": caps.limits.get("max-compute-workgroup-storage-size")},
              "cycles": args.cycles, "passes": args.passes, "batch_ms": args.batch_ms, "warmup_s": args.warmup_s,
              "shapes": []}
    path = os.path.join(args.out, "prefill_probe")
    fill = filler_read(rt)  # a plain read of 128 MiB x 96 after every timed submit (None on a CPU adapter)
    filler = fill.dispatches * FILLER_PASSES if fill else None
    if fill is None and os.environ.get("PROBE_FORCE_FILLER"):  # exercise the filler path on lavapipe
        fill = PlainRead.of_bytes(rt, np.ones(1 << 20, np.uint8))
        filler = fill.dispatches * 2
    report["filler"] = bool(filler)
    for i, (m, k, n) in enumerate(shapes):
        if time.perf_counter() - t_start > args.budget_s:
            log(f"time budget of {args.budget_s:.0f} s reached: shapes from M={m} K={k} N={n} on not run")
            report["not_run"] = [list(s) for s in shapes[i:]]
            break
        log(f"[{i + 1}/{len(shapes)}] M={m} K={k} N={n} ({time.perf_counter() - t_start:.0f} s)")
        try:
            report["shapes"].append(probe_shape(rt, m, k, n, args, rng, log, clocks, filler))
            s = report["shapes"][-1]
            for v in s["variants"]:
                if "median_us" in v:
                    log(f"    {v['name']:18s} {v['median_us']:9.1f} µs {v['tflop_per_s']:6.1f} TF/s "
                        f"x f32 {fmt(v['vs_f32_route'], '.2f')} x ORT {fmt(v['vs_ort_int8'], '.2f')} "
                        f"MHz {fmt(v['sm_mhz'], '.0f')}")
            for row, r in s["ort"].items():
                if isinstance(r, dict) and "median_us" in r:
                    log(f"    {row:18s} {r['median_us']:9.1f} µs {r['tflop_per_s']:6.1f} TF/s")
        except Exception as exc:  # a shape that fails must not end the run
            log(f"  M={m} K={k} N={n} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        report["wall_s"] = time.perf_counter() - t_start
        with open(path + ".json", "w") as f:  # partial results survive a later failure or a timeout
            json.dump(report, f, indent=1, default=str)
        with open(path + ".md", "w") as f:
            f.write(markdown(report))
    if fill is not None:
        fill.release()
    log(f"micro-benchmark: the inner loops alone ({time.perf_counter() - t_start:.0f} s)")
    try:
        if args.no_micro:
            raise RuntimeError("skipped (--no-micro)")
        report["micro"] = micro_bench(rt, log, clocks, 5 if args.quick else 15, args.quick)
        report["micro_trips"] = rt_iters[-1] if rt_iters else None
    except Exception as exc:  # never fatal
        log(f"  micro-benchmark failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    report["wall_s"] = time.perf_counter() - t_start
    with open(path + ".json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(path + ".md", "w") as f:
        f.write(markdown(report))
    log(markdown(report))
    log(f"wrote {path}.{{json,md}} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
