"""`q4gsw bench-llm`: whole-model decode and prefill speed of random-weight decoders of real
models' shapes, against the weight-bytes floor and (where torch has CUDA) a torch int4
yardstick on the same card, in one process."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import statistics
import time

import numpy as np

from ..llm import PRESETS, CausalLM, random_weights
from ..llm.ops import kv_cache_dtype
from ..llm.sampling import Sampling
from ..profile import profile
from ..runtime import get_runtime
from ..runtime.bandwidth import measure_read_bandwidth
from ..runtime.submit import record_pass, timed_passes
from . import bench

#: Seconds of decoding before a model's measurements: clocks ramp up over about that long.
WARM_UP_S = 3.0


def bench_llm(presets=("llama-3-8b",), *, contexts=(128, 1024, 4096), new_tokens: int = 64,
              prefill_tokens: int = 512, group_size: int = 128, seed: int = 0, yardstick: bool = True,
              kv_cache: str = "f32", log=print) -> dict:
    """Per preset (random weights of that model's shape): decode tokens/s after a prompt of each
    context length, prefill tokens/s of a prefill_tokens prompt, GPU time per decode token (one
    pass, and split by dispatch label under q4gsw.profile), host time per token, GPU memory,
    and the weight-bytes floor (weight + scale bytes a token reads / the read ceiling measured
    here). With yardstick, q4gsw.tools.torch_llm's benchmark of the same weights. kv_cache:
    "f32" or "f16" (CausalLM's option; checked against the device before any model is made)."""
    rt = get_runtime()
    kv_cache_dtype("bench_llm", kv_cache, rt.caps)
    ceiling = measure_read_bandwidth(rt)
    log(f"read ceiling: {ceiling.bytes_per_second / 1e9:.1f} GB/s ({rt.caps.adapter_name})")
    models = []
    for name in presets:
        config = PRESETS[name]
        t0 = time.perf_counter()
        weights = random_weights(config, group_size=group_size, seed=seed)
        max_positions = min(config.max_position_embeddings, max(max(contexts), prefill_tokens) + new_tokens)
        lm = CausalLM(weights, max_positions=max_positions, kv_cache=kv_cache)
        rng = np.random.default_rng(seed)
        lm.generate(rng.integers(0, config.vocab_size, 8), 3, eos_token_ids=())  # uploads, compiles
        t_warm = time.perf_counter()  # sustained work first: an idle H200 runs its SMs at 345 MHz
        while time.perf_counter() - t_warm < WARM_UP_S:
            lm.generate(rng.integers(0, config.vocab_size, 8), 64, eos_token_ids=())
        entry = {"preset": name, "config": dataclasses.asdict(config), "group_size": group_size, "kv_cache": kv_cache,
                 "kv_cache_bytes_per_token": lm.kv_cache_bytes_per_token,
                 "weight_bytes_per_token": lm.weight_bytes_per_token, "setup_s": time.perf_counter() - t0}
        floor_s = lm.weight_bytes_per_token / ceiling.bytes_per_second
        entry["floor_tokens_per_s"] = 1 / floor_s
        log(f"{name}: {lm.weight_bytes_per_token / 2**30:.2f} GiB of weights a token; floor "
            f"{entry['floor_tokens_per_s']:.0f} tokens/s; setup {entry['setup_s']:.1f} s")
        entry["decode"] = [_decode(lm, rng, c, new_tokens, floor_s, log) for c in contexts
                           if c + new_tokens <= max_positions]
        lm.decode_activations = "int8"  # the opt-in int8 decode (decode_int8), same contexts
        log("  decode with int8 activations:")
        entry["decode_int8"] = [_decode(lm, rng, c, new_tokens, floor_s, log) for c in contexts
                                if c + new_tokens <= max_positions]
        lm.decode_activations = "f32"
        prompt = rng.integers(0, config.vocab_size, prefill_tokens)
        lm.generate(prompt, 1, eos_token_ids=())  # records this length's chain
        rates = []
        for _ in range(3):
            lm.generate(prompt, 1, eos_token_ids=())
            rates.append(lm.last_stats.prefill_tokens_per_s)
        entry["prefill"] = {"tokens": prefill_tokens, "tokens_per_s": statistics.median(rates)}
        lm.prefill_activations = "int8"
        lm.generate(prompt, 1, eos_token_ids=())
        rates = []
        for _ in range(3):
            lm.generate(prompt, 1, eos_token_ids=())
            rates.append(lm.last_stats.prefill_tokens_per_s)
        lm.prefill_activations = "f32"
        entry["prefill"]["int8_tokens_per_s"] = statistics.median(rates)
        log(f"  prefill {prefill_tokens}: {entry['prefill']['tokens_per_s']:.0f} tokens/s "
            f"(int8 activations: {entry['prefill']['int8_tokens_per_s']:.0f})")
        entry["gpu_memory_bytes"] = rt.buffers.live_bytes
        if yardstick:
            entry["torch"] = _torch_yardstick(weights, contexts, new_tokens, prefill_tokens, group_size, log)
        lm.release()
        del lm, weights
        models.append(entry)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "adapter": dataclasses.asdict(rt.caps) | {"features": sorted(rt.caps.features)},
        "host": platform.node(),
        "ceiling_gb_per_s": ceiling.bytes_per_second / 1e9,
        "timing": ("decode: wall clock of generate() from the first new token to the last (greedy, chosen on "
                   "the GPU; steps queued ahead of the read-back), after a warm-up; gpu_ms: the decode step's "
                   "dispatches in one timed pass (GPU timestamps, median of 5); by_label: q4gsw.profile over 3 "
                   "steps (one timed pass per dispatch, so it adds per-pass overhead); host_ms: the host's time in "
                   "a step's submit calls (blocks while the queue is full); encode_ms: encoding and finishing a "
                   "step's command buffer without submitting it (the host's own cost)"),
        "models": models,
    }


def _decode(lm: CausalLM, rng, context: int, new_tokens: int, floor_s: float, log) -> dict:
    prompt = rng.integers(0, lm.config.vocab_size, context)
    lm.generate(prompt, 8, eos_token_ids=())  # warm-up: clocks up, this length's prefill recorded
    lm.generate(prompt, new_tokens, eos_token_ids=())
    s = lm.last_stats
    wall = s.decode_s / (s.new_tokens - 1)
    chain, _ = lm._decode_chain(Sampling())  # the greedy step generate() just ran
    lm._set_state(context, 1)
    gpu = statistics.median(timed_passes(lm.runtime, [chain.dispatches] * 5, label="llm/decode")) / 1e9
    with profile(lm.runtime) as prof:
        for step in range(3):
            lm._set_state(context + step, 1)
            chain.run()
    by_label = {r["label"]: r["total_us"] / 3 for r in prof.rows()}
    encode = []
    for _ in range(5):  # the host's part alone: encoding the step's pass and finishing it, no submit
        t0 = time.perf_counter()
        encoder = lm.runtime.device.create_command_encoder()
        cpass = encoder.begin_compute_pass()
        record_pass(cpass, chain.dispatches)
        cpass.end()
        encoder.finish()
        encode.append(time.perf_counter() - t0)
    row = {"context": context, "tokens_per_s": 1 / wall, "wall_ms": 1e3 * wall, "gpu_ms": 1e3 * gpu,
           "host_ms": 1e3 * s.host_s / (s.new_tokens - 1), "encode_ms": 1e3 * statistics.median(encode),
           "gpu_busy": gpu / wall, "dispatches": len(chain),
           "of_floor": floor_s / wall, "by_label_us": by_label}
    log(f"  context {context}: {row['tokens_per_s']:.1f} tokens/s ({row['wall_ms']:.2f} ms: GPU {row['gpu_ms']:.2f}, "
        f"host submit {row['host_ms']:.2f}, encode {row['encode_ms']:.2f}; {100 * row['of_floor']:.0f} % of the floor, GPU busy "
        f"{100 * row['gpu_busy']:.0f} %, {row['dispatches']} dispatches)")
    return row


def _torch_yardstick(weights, contexts, new_tokens, prefill_tokens, group_size, log) -> dict:
    try:
        from .torch_llm import benchmark
    except ImportError as exc:
        return {"skipped": f"q4gsw.tools.torch_llm: {exc}"}
    try:
        result = benchmark(weights, contexts=contexts, new_tokens=new_tokens, prefill_tokens=prefill_tokens,
                           group_size=group_size)
    except Exception as exc:  # a yardstick failing must not lose the run's own figures
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    log(f"  torch yardstick: {json.dumps(result)[:400]}")
    return result


def markdown(result: dict) -> str:
    """Tables of a bench_llm() result: per model and context, q4gsw vs the floor and torch."""
    a = result["adapter"]
    lines = [f"# Whole-model decode and prefill, {result['date']}", "",
             f"- card: {a['adapter_name']} ({a['adapter_type']}, {a['backend']}); driver: {a['driver']}",
             f"- read ceiling measured in this run: **{result['ceiling_gb_per_s']:.1f} GB/s**",
             f"- timing: {result['timing']}", "- random weights of each model's shape (group size "
             f"{result['models'][0]['group_size'] if result['models'] else '-'}), greedy decoding", ""]
    for m in result["models"]:
        t = m.get("torch", {})
        lines += [f"## {m['preset']}: {m['weight_bytes_per_token'] / 2**30:.2f} GiB of int4 weights + scales a token, "
                  f"floor {m['floor_tokens_per_s']:.0f} tokens/s; KV cache {m.get('kv_cache', 'f32')} "
                  f"({_fmt(m['kv_cache_bytes_per_token'] / 1024 if 'kv_cache_bytes_per_token' in m else None)} KiB "
                  f"a position)", "",
                  "| context | q4gsw tokens/s | ms/token (wall) | GPU ms | host encode ms | GPU busy | % of floor | "
                  "q4gsw int8-activation decode tokens/s (GPU ms) | torch int4 compiled tokens/s | "
                  "torch eager tokens/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        torch_rates = {r["context"]: r for r in t.get("contexts", [])}
        int8_rates = {r["context"]: r for r in m.get("decode_int8", [])}
        for r in m["decode"]:
            tr = torch_rates.get(r["context"], {})
            ir = int8_rates.get(r["context"])
            int8 = f"{ir['tokens_per_s']:.1f} ({ir['gpu_ms']:.2f})" if ir else "–"
            lines.append(f"| {r['context']} | {r['tokens_per_s']:.1f} | {r['wall_ms']:.2f} | {r['gpu_ms']:.2f} | "
                         f"{r['encode_ms']:.2f} | {100 * r['gpu_busy']:.0f} % | {100 * r['of_floor']:.0f} % | "
                         f"{int8} | {_fmt(tr.get('tokens_per_s'))} | {_fmt(tr.get('eager_tokens_per_s'))} |")
        p = m["prefill"]
        lines += ["", f"Prefill of {p['tokens']} tokens: **{p['tokens_per_s']:.0f} tokens/s** (q4gsw, f32 activations; "
                  f"{_fmt(p.get('int8_tokens_per_s'))} with int8 activations); torch: "
                  f"{_fmt(t.get('prefill_tokens_per_s'))} tokens/s (eager, bf16). GPU memory held: "
                  f"{m['gpu_memory_bytes'] / 2**30:.2f} GiB (torch: "
                  f"{_fmt(t['max_memory_bytes'] / 2**30 if 'max_memory_bytes' in t else None)} GiB).", ""]
        if m["decode"]:
            first = m["decode"][0]
            lines += [f"GPU time a decode token by label (context {first['context']}, one timed pass per dispatch):",
                      "", "| label | µs a token |", "|---|---:|"]
            for label, us in sorted(first["by_label_us"].items(), key=lambda kv: -kv[1]):
                lines.append(f"| {label} | {us:.1f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "–"


def write_results(result: dict, stem: str) -> tuple[str, str]:
    """Write stem.json and stem.md of a bench_llm() result; return both paths."""
    return bench.write_results(result, stem, render=markdown)
