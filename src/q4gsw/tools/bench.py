"""Benchmarks of linear_q4gsw kernels: GPU-timestamped, against the read ceiling of the same run."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import statistics
import time

import numpy as np

from ..errors import Q4gswError
from ..format import PackedWeight, linear_reference
from ..kernels import INT8_KERNELS, KERNELS, TILED_PRESETS, Problem
from ..ops.plan import check_sizes, choose_kernel
from ..runtime import get_runtime
from ..runtime.bandwidth import measure_read_bandwidth
from ..runtime.timing import time_chain, time_dispatch
from ..runtime.weights import fits_one_binding
from .plain_read import FILLER_BYTES, FILLER_PASSES, PlainRead, filler_read
from .workload import ROTATE_BYTES, Workload, random_weight

def reference_rel_error(y: np.ndarray, x: np.ndarray, weight: PackedWeight) -> float:
    """max |y - ref| / max |ref|, with the float64 reference computed in chunks of N."""
    step = max(1, (64 << 20) // (8 * weight.in_features))
    err = ref_max = 0.0
    for n0 in range(0, weight.out_features, step):
        part = PackedWeight(weight.weights[n0:n0 + step], weight.scales[:, n0:n0 + step],
                            weight.group_size, in_features=weight.in_features)
        ref = linear_reference(x, part)
        err = max(err, float(np.abs(y[:, n0:n0 + step] - ref).max()))
        ref_max = max(ref_max, float(np.abs(ref).max()))
    return err / ref_max if ref_max else err


def _route(rt, p: Problem, weight: PackedWeight):
    """The kernel q4gsw.linear runs p with on this device (the tuning cache included), or why
    the benchmark cannot time it (a str)."""
    if not fits_one_binding(weight, rt.caps.max_binding_size):
        return "weight split into several bindings"
    try:
        return choose_kernel(rt, "bench", p)
    except Q4gswError as exc:
        return str(exc)


def _time_plain_read(rt, weight: PackedWeight, copies: int, repeats: int, filler=None) -> dict:
    """The plain read of weight's bytes through `copies` copies, timed as the kernels are:
    plain_read_us (median), its GB/s, bytes, workgroups and chained µs; or plain_read_skipped."""
    nbytes = weight.weights.nbytes + 4 * weight.num_groups * weight.scales.shape[1]
    if nbytes > rt.caps.max_binding_size:
        return {"plain_read_us": None, "plain_read_skipped": f"{nbytes} bytes exceed one binding"}
    plain = PlainRead.of_weight(rt, weight, copies)
    try:
        times = time_dispatch(rt, plain.dispatches, repeats=repeats, warmup=2, warmup_s=0.3, filler=filler)
        med = statistics.median(times)
        chain = (statistics.median(time_chain(rt, plain.dispatches))
                 if med < 2e6 and rt.caps.has_timestamps else None)
        if plain.sink_value():  # 2^-128 odds per invocation; says the pass wrote memory
            raise RuntimeError("plain read: an invocation met the never-met sentinel")
        return {"plain_read_us": med / 1e3, "plain_read_min_us": min(times) / 1e3,
                "plain_read_gb_per_s": plain.nbytes / med, "plain_read_bytes": plain.nbytes,
                "plain_read_copies": copies, "plain_read_workgroups": plain.workgroups,
                "plain_read_chained_us": chain / 1e3 if chain else None}
    finally:
        plain.release()


def bench(shapes, kernels=None, *, group_size: int = 128, repeats: int = 30, seed: int = 0,
          yardsticks: bool = False, log=print) -> dict:
    """Time every kernel on every shape; return a JSON-ready dict with the run's ceiling.

    Each kernel runs once and is compared with the float64 reference (rel_error), then is
    timed with GPU timestamps, one compute pass per run, median of `repeats` after warm-up.
    On a GPU the passes rotate among copies of the weight totalling >= 256 MiB (L2 is 50 MB
    on an H100), so weights come from device memory. Kernels that take over 20 ms a run get
    fewer repeats. Every shape also times the plain read of the weight's own bytes (weights +
    scales, tools/plain_read.py) through the same number of copies: one entry per shape in
    "yardsticks" holds it (plain_read_us) with the routed kernel (the one q4gsw.linear picks)
    and its time over the plain read's; every row gets over_plain_read. With yardsticks, the
    entry also times a dense fp32 WGSL kernel of ours (a GEMV for M <= 8, a GEMM of tiled's
    design above) and, where torch has CUDA, torch's int4 tinygemm and cuBLAS fp16 / fp32
    (see yardsticks.py).
    With yardsticks, ONNX Runtime's WebGPU MatMulNBits too where onnxruntime has its WebGPU
    execution provider.

    kernels: names from KERNELS and INT8_KERNELS (default: every f32 kernel but the fixed
        TILED_PRESETS); an int8 kernel's
    rel_error is against the same exact float64 reference (float x, dequantized weight), so
    it includes the activation quantization.
    """
    rt = get_runtime()
    kernels = list(kernels or [name for name in KERNELS if name not in TILED_PRESETS])
    specs = {name: (KERNELS.get(name) or INT8_KERNELS[name]).bind(rt.caps) for name in kernels}  # for this device
    rng = np.random.default_rng(seed)
    ceiling = measure_read_bandwidth(rt)
    log(f"read ceiling: {ceiling.bytes_per_second / 1e9:.1f} GB/s over {ceiling.nbytes >> 20} MiB")
    fill = filler_read(rt)  # keeps the GPU busy between timed submits (clocks), None on a CPU
    filler = fill.dispatches * FILLER_PASSES if fill else None
    try:
        return _bench(rt, shapes, kernels, specs, rng, ceiling, filler, group_size=group_size, repeats=repeats,
                      yardsticks=yardsticks, log=log)
    finally:
        if fill:
            fill.release()


def _bench(rt, shapes, kernels, specs, rng, ceiling, filler, *, group_size, repeats, yardsticks, log) -> dict:
    rows, sticks = [], []
    for m, k, n in shapes:
        entry = {"m": m, "k": k, "n": n}
        if yardsticks:
            from .yardsticks import dense_gemm, dense_gemv, ort_webgpu, torch_yardsticks

            dense = dense_gemv if m <= 8 else dense_gemm
            entry["dense_f32_wgsl"] = dense(rt, m, k, n, rng, ROTATE_BYTES)
            entry.update(torch_yardsticks(m, k, n, group_size, ROTATE_BYTES))
            ort = ort_webgpu(m, k, n, group_size, rng)
            if ort:
                entry["ort_webgpu"] = ort
            log(f"  M={m} K={k} N={n} yardsticks: {entry}")
        weight = random_weight(rng, n, k, group_size)
        x = rng.standard_normal((m, k)).astype(np.float32)
        p = Problem(m, n, k, group_size, False)
        reasons = {}
        for name in kernels:
            spec = specs[name]
            reasons[name] = spec.supports(p, rt.caps)
            if reasons[name] is None and not fits_one_binding(weight, rt.caps.max_binding_size):
                reasons[name] = "weight split into several bindings"
            if reasons[name] is None:
                try:
                    check_sizes("bench", p, rt.caps, spec)
                except Q4gswError as exc:  # a size this kernel cannot take: reported, not fatal
                    reasons[name] = str(exc)
        timed = [(name, specs[name]) for name in kernels if not reasons[name]]
        route = _route(rt, p, weight)
        if isinstance(route, str):
            entry["routed_kernel"] = None
            entry["routed_skipped"] = route
        else:
            entry["routed_kernel"] = route.name
            entry["routed_settings"] = route.settings()
            if not any(spec.key(p) == route.key(p) for _, spec in timed):
                timed.append((f"{route.name} (routed)", route))  # tuned settings: not a listed row
        sticks.append(entry)
        if not timed:
            for name in kernels:
                log(f"  M={m} K={k} N={n} {name}: skipped ({reasons[name]})")
            continue
        work = Workload.rotating(rt, weight, x)
        entry.update(_time_plain_read(rt, weight, len(work.copies), repeats, filler))
        if entry.get("plain_read_us"):
            log(f"  M={m} K={k} N={n} {'plain read':>16}: {entry['plain_read_us']:10.1f} µs "
                f"{entry['plain_read_gb_per_s']:8.1f} GB/s ({entry['plain_read_bytes']} bytes, "
                f"{entry['plain_read_workgroups']} workgroups of 256)")
        else:
            log(f"  M={m} K={k} N={n} plain read: skipped ({entry['plain_read_skipped']})")
        for name in kernels:
            if reasons[name]:
                log(f"  M={m} K={k} N={n} {name}: skipped ({reasons[name]})")
        for name, spec in timed:
            dispatches = work.dispatches(spec)
            rt.device.queue.write_buffer(work.out, 0, np.full(m * n, np.nan, np.float32))
            t0 = time.perf_counter()
            one = time_dispatch(rt, dispatches[0], repeats=1, warmup=0)[0]
            rel = reference_rel_error(work.read_out(), x, weight)
            reps = repeats if one < 20e6 else max(3, min(repeats, int(2e9 / max(one, 1))))
            times = time_dispatch(rt, dispatches, repeats=reps, warmup=2, warmup_s=0.3, filler=filler)
            med = statistics.median(times)
            chain = statistics.median(time_chain(rt, dispatches)) if one < 2e6 and rt.caps.has_timestamps else None
            d = dispatches[0]
            row = {
                "m": m, "k": k, "n": n, "group_size": group_size, "kernel": name,
                "activations": spec.activations,
                "label": d.key.label, "median_us": med / 1e3,
                "min_us": min(times) / 1e3, "repeats": reps, "weight_copies": len(dispatches),
                "bytes": d.nbytes, "gb_per_s": d.nbytes / med,
                "pct_of_ceiling": 100.0 * d.nbytes / (med * 1e-9) / ceiling.bytes_per_second,
                "tflop_per_s": d.flops / med / 1e3,
                "rel_error": rel, "wall_s": time.perf_counter() - t0,
                "chained_us": chain / 1e3 if chain else None,
                "chained_pct_of_ceiling": 100.0 * d.nbytes / (chain * 1e-9) / ceiling.bytes_per_second if chain else None,
                "over_plain_read": med / 1e3 / entry["plain_read_us"] if entry.get("plain_read_us") else None,
                "routed": not isinstance(route, str) and spec.key(p) == route.key(p),
            }
            rows.append(row)
            if row["routed"]:
                entry["routed_us"] = row["median_us"]
                entry["routed_over_plain_read"] = row["over_plain_read"]
            log(f"  M={m} K={k} N={n} {name:>16}: {row['median_us']:10.1f} µs {row['gb_per_s']:8.1f} GB/s "
                f"{row['pct_of_ceiling']:6.1f}% {row['tflop_per_s']:7.3f} TFLOP/s  rel.err {rel:.1e}"
                + (f"  {row['over_plain_read']:.2f}x plain read" if row["over_plain_read"] else "")
                + (" (routed)" if row["routed"] else "")
                + (f"  chained {chain / 1e3:.1f} µs ({row['chained_pct_of_ceiling']:.1f}%)" if chain else ""))
        work.release()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "adapter": dataclasses.asdict(rt.caps) | {"features": sorted(rt.caps.features)},
        "host": platform.node(),
        "ceiling_gb_per_s": ceiling.bytes_per_second / 1e9,
        "ceiling_bytes": ceiling.nbytes,
        "l2_eviction": ("none (CPU adapter)" if rt.caps.is_cpu else
                        f"passes rotate among weight copies totalling >= {ROTATE_BYTES >> 20} MiB"),
        "timing": ("GPU timestamp queries, one compute pass per dispatch, median after 0.5 s of warm-up"
                   + ("; every submit of timed passes is followed by a filler (a plain read of "
                      f"{FILLER_BYTES >> 20} MiB x {FILLER_PASSES}) and queued before the previous one is read, "
                      "so the GPU never idles and its clocks stay up" if filler else "")
                   + "; 'chained': 32 dispatches back to back in one timed pass, per dispatch"),
        "group_size": group_size,
        "rows": rows,
        "yardsticks": sticks,
    }


def markdown(result: dict) -> str:
    """A Markdown table of a bench() result, with date, card, driver and ceiling."""
    a = result["adapter"]
    base = {(r["m"], r["k"], r["n"]): r["median_us"] for r in result["rows"] if r["kernel"] == "rowwise"}
    lines = [
        f"# linear_q4gsw benchmark, {result['date']}",
        "",
        f"- card: {a['adapter_name']} ({a['adapter_type']}, {a['backend']}); driver: {a['driver']}",
        f"- read ceiling measured in this run: **{result['ceiling_gb_per_s']:.1f} GB/s** "
        f"({result['ceiling_bytes'] >> 20} MiB read-only kernel)",
        f"- timing: {result['timing']}; L2: {result['l2_eviction']}; group size {result['group_size']}",
        "- GB/s counts weights + scales + x + out bytes; % is of the ceiling above; "
        "'vs rowwise' is the baseline's time over this kernel's time on the same shape; "
        "'× plain read' is this kernel's time over the plain read of the same weight + scale bytes "
        "(one pass, same rotation, same run); **bold**: the kernel q4gsw.linear routes the shape to",
        "",
        "| M | K | N | kernel | µs (median) | GB/s | % of ceiling | TFLOP/s | vs rowwise | × plain read "
        "| chained µs (% of ceiling) | rel. error |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        b = base.get((r["m"], r["k"], r["n"]))
        speedup = f"{b / r['median_us']:.1f}×" if b else "–"
        chained = (f"{r['chained_us']:.1f} ({r['chained_pct_of_ceiling']:.1f}%)"
                   if r.get("chained_us") else "–")
        plain = f"{r['over_plain_read']:.2f}×" if r.get("over_plain_read") else "–"
        kernel = f"**{r['kernel']}**" if r.get("routed") else r["kernel"]
        lines.append(
            f"| {r['m']} | {r['k']} | {r['n']} | {kernel} | {r['median_us']:.1f} | {r['gb_per_s']:.1f} | "
            f"{r['pct_of_ceiling']:.1f}% | {r['tflop_per_s']:.3f} | {speedup} | {plain} | {chained} | "
            f"{r['rel_error']:.1e} |"
        )
    lines += _plain_read_table(result)
    if any("dense_f32_wgsl" in y for y in result.get("yardsticks", [])):
        lines += ["", "## Yardsticks (same run)", "",
                  "Best q4gsw kernel vs dense fp32 WGSL kernels of ours (dense_gemv for M <= 8; "
                  "for M > 8 dense_gemm, tiled.wgsl's tile design with fp32 weights, so the gap is "
                  "the int4 dequantization), torch's int4 tinygemm "
                  "(`_weight_int4pack_mm`, bf16 x) and cuBLAS fp16 (`F.linear`), both via CUDA "
                  "events; every weight rotated past L2 (dense fp32: as many copies as fit 2 GB).", "",
                  "ORT WebGPU: onnxruntime-webgpu's MatMulNBits (bits 4, block = group size, symmetric) with "
                  "accuracy_level 4 (int8 activations, DP4A) and 0 (fp32), GPU µs from its profiler, and its "
                  "error against the same float64 reference as ours.", "",
                  "| M | K | N | best q4gsw (f32 x) | µs | TFLOP/s | q4gsw int8 x µs (rel. error) | dense fp32 WGSL µs | "
                  "dense fp32 WGSL TFLOP/s | tinygemm int4 µs | cuBLAS fp16 µs | cuBLAS fp32 (no TF32) µs | "
                  "ORT WebGPU int8 µs (rel. error) | ORT WebGPU fp32 µs |",
                  "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for y in result["yardsticks"]:
            best = _best(result, y, "f32")
            int8 = _best(result, y, "int8")
            dense = y["dense_f32_wgsl"].get("median_us")
            dense_tflops = 2 * y["m"] * y["k"] * y["n"] / dense / 1e6 if dense else None
            fmt = lambda v: f"{v:.1f}" if isinstance(v, (int, float)) else "–"
            lines.append(f"| {y['m']} | {y['k']} | {y['n']} | {best['kernel'] if best else '–'} | "
                         f"{fmt(best['median_us']) if best else '–'} | {fmt(best['tflop_per_s']) if best else '–'} | "
                         f"{_with_error(int8)} | "
                         f"{fmt(dense)} | {fmt(dense_tflops)} | {fmt(y.get('tinygemm_int4_us'))} | "
                         f"{fmt(y.get('cublas_fp16_us'))} | {fmt(y.get('cublas_fp32_us'))} | "
                         f"{_ort_cell(y, 'acc4_fp32', True)} | {_ort_cell(y, 'acc0_fp32', False)} |")
    return "\n".join(lines) + "\n"


def _best(result: dict, shape: dict, activations: str) -> dict | None:
    """The fastest row of `result` at shape's (M, K, N) among kernels computing with `activations`
    (rows from before the int8 path count as f32), or None."""
    rows = [r for r in result["rows"] if (r["m"], r["k"], r["n"]) == (shape["m"], shape["k"], shape["n"])
            and r.get("activations", "f32") == activations]
    return min(rows, key=lambda r: r["median_us"]) if rows else None


def _with_error(row: dict | None) -> str:
    """'µs (rel. error)' of a result row, '–' for None."""
    return f"{row['median_us']:.1f} ({row['rel_error']:.1e})" if row else "–"


def _ort_cell(yardstick: dict, row: str, with_error: bool) -> str:
    """'µs' (or 'µs (error)') of one ORT WebGPU row of a yardstick entry, '–' where absent."""
    r = yardstick.get("ort_webgpu", {}).get(row, {})
    if "median_us" not in r:
        return "–"
    return f"{r['median_us']:.1f}" + (f" ({r['rel_error']:.1e})" if with_error else "")


def _plain_read_table(result: dict) -> list[str]:
    """The Markdown section of the plain reads (empty for results that have none)."""
    entries = [y for y in result.get("yardsticks", []) if y.get("plain_read_us")]
    if not entries:
        return []
    fmt = lambda v, unit="": f"{v:.1f}{unit}" if isinstance(v, (int, float)) else "–"
    ratio = lambda v: f"{v:.2f}×" if isinstance(v, (int, float)) else "–"
    lines = ["", "## Plain read of the same bytes (same run)", "",
             "One pass of `plain_read.wgsl` over the weight + scale bytes of the shape "
             "(a vec4 grid-stride XOR, 256 invocations a workgroup, min(ceil(words / 256), 4096) "
             "workgroups, a store under a condition on the XOR that never holds), through as many "
             "copies as the kernels rotate; timed as the kernels are. 'routed': the kernel "
             "q4gsw.linear picks for the shape on this device (tuning cache included).", "",
             "| M | K | N | bytes | plain read µs | GB/s | chained µs | routed kernel | routed µs "
             "| routed / plain read | best kernel (f32 x) | best / plain read | best int8-x kernel / plain read |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for y in entries:
        best, int8 = _best(result, y, "f32"), _best(result, y, "int8")
        lines.append(
            f"| {y['m']} | {y['k']} | {y['n']} | {y['plain_read_bytes']} | {fmt(y['plain_read_us'])} | "
            f"{fmt(y['plain_read_gb_per_s'])} | {fmt(y.get('plain_read_chained_us'))} | "
            f"{y.get('routed_kernel') or '–'} | {fmt(y.get('routed_us'))} | {ratio(y.get('routed_over_plain_read'))} | "
            f"{best['kernel'] if best else '–'} | {ratio(best['median_us'] / y['plain_read_us']) if best else '–'} | "
            f"{ratio(int8['median_us'] / y['plain_read_us']) if int8 else '–'} |")
    return lines


def write_results(result: dict, stem: str, render=markdown) -> tuple[str, str]:
    """Write stem.json and stem.md (render(result): markdown() of a bench() result by
    default); return both paths."""
    with open(f"{stem}.json", "w") as f:
        json.dump(result, f, indent=1)
    with open(f"{stem}.md", "w") as f:
        f.write(render(result))
    return f"{stem}.json", f"{stem}.md"
