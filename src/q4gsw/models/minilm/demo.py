"""`q4gsw demo --model minilm`: embeddings with q4gsw linears (and wholly on the GPU) against the float model, and the profile."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import time

import numpy as np

from ...quantize import quantization_error
from .compare import cosines, kendall_tau, neighbour_orders, pair_order, sentence_transformers_reference, similarity
from .files import MODEL_DISTRIBUTION, model_file
from .model import MiniLM
from .sentences import DEMO_PARAPHRASES, DEMO_SENTENCES

def run_demo(*, group_size: int = 128, sentences=DEMO_SENTENCES, paraphrases=DEMO_PARAPHRASES,
             reference: bool = True, method: str = "rtn", dense_budget: float | None = None, out=print) -> dict:
    """`q4gsw demo --model minilm`: embeddings with q4gsw linears vs the float model, and the profile.

    Args:
        group_size: quantization group size of the 36 linears.
        sentences: the sentences to embed.
        paraphrases: index pairs of paraphrases, for the consistency check.
        reference: also run sentence-transformers (when installed) to check the fp32 forward.
        method: how the linears are quantized, one of QUANTIZATION_METHODS.
        dense_budget: keep the linears the recipe chooses dense (fp16) so that the linear weights
            take at most this many times their all-int4 bytes (None or 1: all int4).
        out: where lines go.
    Returns:
        dict of the figures printed (cosines, mean_cosine, ranking results, ...).
    """
    from ...profile import profile
    from ...runtime import get_runtime

    rt = get_runtime()
    out(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    t0 = time.perf_counter()
    model = MiniLM.load(group_size=group_size, method=method,
                        dense_budget=None if dense_budget in (None, 1, 1.0) else dense_budget)
    c = model.config
    errs = [quantization_error(model.tensors[n + ".weight"], model.packed[n]).relative_frobenius
            for n in model.packed]
    with importlib.resources.as_file(model_file()) as path:
        where = path
    out(f"model: all-MiniLM-L6-v2 from {MODEL_DISTRIBUTION} {importlib.metadata.version(MODEL_DISTRIBUTION)} "
        f"({where}); {c.layers} layers, hidden {c.hidden}, {c.heads} heads, intermediate {c.intermediate}")
    out(f"{len(errs)} linears quantized ({method}) at group size {group_size} "
        f"in {time.perf_counter() - t0:.1f} s; "
        f"relative weight error mean {np.mean(errs):.2%}, max {np.max(errs):.2%}")
    wb = model.weight_bytes()
    if model.dense:
        kept = ", ".join(n.removeprefix("encoder.layer.") for n in model.dense)
        out(f"{len(model.dense)} linears kept dense (fp16, chosen by measured sensitivity under a budget of "
            f"{dense_budget}x): {kept}")
    out(f"linear weights: {wb['total'] / 2**20:.2f} MiB = {wb['total'] / wb['all_int4']:.3f}x the all-int4 "
        f"{wb['all_int4'] / 2**20:.2f} MiB (fp32: {sum(model.tensors[n + '.weight'].nbytes for n in model.linear_names) / 2**20:.2f} MiB)")
    tokens = model.tokenize(sentences)
    b, n = tokens.ids.shape
    out(f"{b} sentences, padded to {n} tokens: every linear runs with M = {b * n} rows")

    t0 = time.perf_counter()
    e_float = model.pool(model.forward(tokens, mode="float"), tokens.mask)
    t_float = time.perf_counter() - t0
    model.encode(sentences[:1], mode="q4gsw")  # warm-up: compiles the pipelines outside the profile
    t0 = time.perf_counter()
    with profile() as prof:
        e_q4 = model.pool(model.forward(tokens, mode="q4gsw"), tokens.mask)
    t_q4 = time.perf_counter() - t0
    e_ref = model.pool(model.forward(tokens, mode="reference"), tokens.mask)
    model.encode(sentences, mode="gpu")  # records the chain and compiles its kernels
    t0 = time.perf_counter()
    e_gpu = model.encode(sentences, mode="gpu")
    t_gpu = time.perf_counter() - t0
    summary: dict = {"adapter": rt.caps.adapter_name, "group_size": group_size, "method": method, "tokens": n,
                     "dense": list(model.dense), "weight_bytes": wb}

    if reference:
        e_st, how = sentence_transformers_reference(sentences)
        if e_st is None:
            out(f"fp32 numpy forward vs sentence-transformers: {how}; checked by consistency only")
        else:
            cs = cosines(e_float, e_st)
            diff = float(np.abs(e_float - e_st).max())
            out(f"fp32 numpy forward vs {how} (same packaged files, CPU, offline): "
                f"min cosine {cs.min():.7f}, max |diff| {diff:.1e}")
            summary["vs_sentence_transformers"] = {"min_cosine": float(cs.min()), "max_abs_diff": diff}
    kernel = float(np.abs(e_q4 - e_ref).max())
    out(f"q4gsw (WebGPU) vs float64-linear reference of the same quantized model: max |diff| {kernel:.1e} "
        f"(min cosine {cosines(e_q4, e_ref).min():.7f})")
    gpu_diff = float(np.abs(e_gpu - e_q4).max())
    out(f"whole forward on the GPU (encode(mode='gpu'): one recorded chain, one submit) vs numpy with q4gsw "
        f"linears: max |diff| {gpu_diff:.1e} (min cosine {cosines(e_gpu, e_q4).min():.7f})")
    out(f"wall time of the forward: q4gsw linears {t_q4:.2f} s (profiled), whole on the GPU {t_gpu:.2f} s, "
        f"numpy fp32 {t_float:.2f} s")

    cos = cosines(e_q4, e_float)
    out("")
    out("cosine(q4gsw embedding, fp32 embedding) per sentence:")
    for i, (s, v) in enumerate(zip(sentences, cos)):
        out(f"  [{i}] {v:.5f}  {s}")
    mean = float(cos.mean())
    out(f"mean cosine {mean:.5f} (goal >= 0.99 at <= 1.5x the all-int4 bytes: "
        f"{'met' if mean >= 0.99 and wb['total'] <= 1.5 * wb['all_int4'] else 'NOT met'}), "
        f"min {cos.min():.5f}")

    s_q4, s_float = similarity(e_q4), similarity(e_float)
    nq, nf = neighbour_orders(s_q4), neighbour_orders(s_float)
    same = sum(a == b for a, b in zip(nq, nf))
    pq, pf = pair_order(s_q4), pair_order(s_float)
    tau = kendall_tau(pq, pf)
    gaps = np.diff([-s_float[p] for p in pf])
    top1 = sum(a[0] == b_[0] for a, b_ in zip(nq, nf))
    out(f"ranking (for each sentence, the other {b - 1} ordered by cosine similarity): "
        f"unchanged for {same}/{b} sentences{'' if same == b else ' (CHANGED)'}; "
        f"nearest neighbour unchanged for {top1}/{b}")
    out(f"ranking of all {len(pf)} pairs by similarity: {'identical' if pq == pf else 'differs'} "
        f"(Kendall tau {tau:.4f}); max |similarity change| {np.abs(s_q4 - s_float).max():.4f}, "
        f"smallest gap between neighbouring fp32 pairs {gaps.min():.4f}")
    ok_pairs = []
    for i, j in paraphrases:
        others = [s_q4[x, y] for x in (i, j) for y in range(b) if y not in (i, j)]
        ok_pairs.append(bool(s_q4[i, j] > max(others)))
        out(f"paraphrase [{i}]-[{j}]: similarity q4gsw {s_q4[i, j]:.4f}, fp32 {s_float[i, j]:.4f}; "
            f"closest non-paraphrase of either {max(others):.4f}")
    out(f"paraphrases closer to each other than to any other sentence: {sum(ok_pairs)}/{len(ok_pairs)} pairs")
    out("")
    out(prof.table())
    summary.update({
        "cosines": [float(v) for v in cos], "mean_cosine": mean, "neighbour_orders_unchanged": same,
        "sentences": b, "pair_order_identical": pq == pf, "kendall_tau": tau,
        "nearest_neighbour_unchanged": top1,
        "kernel_max_abs_diff": kernel, "paraphrase_pairs_ok": sum(ok_pairs), "gpu_max_abs_diff": gpu_diff,
    })
    return summary
