"""The float64 numpy forward of a decoder: the oracle the GPU runtime is tested against.

It computes what transformers' LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM
compute (eager attention), with the weights q4gsw holds: token embedding row gather,
then per layer RMSNorm -> fused q/k/v (+ bias) -> RoPE (rotate_half) -> causal grouped-query
attention (sliding window where the config sets one) -> o (+ bias) -> residual, RMSNorm ->
SwiGLU MLP -> residual; then the final RMSNorm and the LM head. Only the RoPE angles are
float32 (DecoderConfig.rope_cos_sin), as transformers computes them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..checks import describe
from ..errors import ArgumentError, ShapeError, ValueRangeError
from ..format import PackedWeight
from .weights import DecoderWeights, Linear

#: Rows of a PackedWeight dequantized at a time (bounds memory for a large LM head).
CHUNK_ROWS = 8192
#: The largest finite float16: a half-precision KV cache clamps to it (kv_f16.wgsl).
F16_MAX = 65504.0


def reference_logits(weights: DecoderWeights, ids, *, kv_cache: str = "f32", kv_override=None) -> np.ndarray:
    """Logits of every position of one sequence.

    Args:
        weights: the DecoderWeights.
        ids: (T,) token ids in [0, vocab_size), T >= 1, at positions 0..T-1.
        kv_cache: "f32" (K and V exact), or "f16": K (after RoPE) and V rounded to float16
            (clamped to +-65504) before attention, as CausalLM(kv_cache="f16") stores them.
        kv_override: None, or {layer: (k, v)} each (kv_heads, T, head_dim): the K (after RoPE)
            and V that layer's attention reads instead of its own (a test feeds it the values a
            GPU cache holds).
    Returns:
        (T, vocab_size) float64.
    """
    c = weights.config
    ids = _check_ids("reference_logits", ids, c.vocab_size)
    if kv_cache not in ("f32", "f16"):
        raise ArgumentError("reference_logits", "kv_cache", "'f32' or 'f16'", describe(kv_cache))
    t = len(ids)
    cos, sin = (a.astype(np.float64) for a in c.rope_cos_sin(np.arange(t)))
    x = rows(weights.embed, ids)
    for i, layer in enumerate(weights.layers):
        h = rms_norm(x, layer.attn_norm, c.rms_norm_eps)
        qkv = linear(h, layer.qkv, layer.qkv_bias)
        q, k, v = np.split(qkv, [c.q_size, c.q_size + c.kv_size], axis=1)
        q = rope(q.reshape(t, c.num_heads, c.head_dim), cos, sin)
        k = rope(k.reshape(t, c.num_kv_heads, c.head_dim), cos, sin)
        v = v.reshape(t, c.num_kv_heads, c.head_dim)
        if kv_cache == "f16":
            k, v = (np.clip(a, -F16_MAX, F16_MAX).astype(np.float16).astype(np.float64) for a in (k, v))
        if kv_override is not None and i in kv_override:
            k, v = (np.asarray(a, np.float64).transpose(1, 0, 2) for a in kv_override[i])
        x = x + linear(attention(q, k, v, window=c.window(i)), layer.o, layer.o_bias)
        h = rms_norm(x, layer.mlp_norm, c.rms_norm_eps)
        gate, up = np.split(linear(h, layer.gate_up), 2, axis=1)
        x = x + linear(gate / (1.0 + np.exp(-gate)) * up, layer.down)
    return linear(rms_norm(x, weights.final_norm, c.rms_norm_eps), weights.lm_head)


def reference_generate(weights: DecoderWeights, ids, max_new_tokens: int, *,
                       eos_token_ids: Iterable[int] = ()) -> np.ndarray:
    """Greedy decoding (argmax, first index on ties), recomputing the whole sequence each step.

    Args:
        weights: the DecoderWeights.
        ids: (T,) prompt token ids.
        max_new_tokens: tokens to generate.
        eos_token_ids: stop after generating one of these (none by default).
    Returns:
        (T + generated,) int64: the prompt followed by the generated tokens, as transformers'
        generate(do_sample=False) returns them.
    """
    seq = list(_check_ids("reference_generate", ids, weights.config.vocab_size))
    stop = set(eos_token_ids)
    for _ in range(max_new_tokens):
        token = int(np.argmax(reference_logits(weights, seq)[-1]))
        seq.append(token)
        if token in stop:
            break
    return np.asarray(seq, np.int64)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """(T, H) float64: weight * x / sqrt(mean(x^2) + eps) per row (transformers' RMSNorm)."""
    return weight.astype(np.float64) * (x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps))


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate (T, heads, head_dim) by (T, head_dim/2) angles: x * cos + rotate_half(x) * sin,
    rotate_half(x) = concat(-x2, x1) for the halves x1, x2 of each head."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, window: int | None = None) -> np.ndarray:
    """Causal grouped-query attention.

    Args:
        q: (T, heads, head_dim); k, v: (T, kv_heads, head_dim); query head h reads kv head
            h // (heads / kv_heads) (transformers' repeat_kv).
        window: None, or W: position i attends to j with i - W < j <= i.
    Returns:
        (T, heads * head_dim) float64.
    """
    t, heads, dim = q.shape
    group = heads // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(dim)
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = (j <= i) if window is None else (j <= i) & (j > i - window)
    scores = np.where(allowed, scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hij,jhd->ihd", p, v).reshape(t, heads * dim)


def linear(x: np.ndarray, w: Linear, bias: np.ndarray | None = None) -> np.ndarray:
    """(T, N) float64: x @ W.T (+ bias) for (T, K) x and an (N, K) PackedWeight or dense weight."""
    if isinstance(w, PackedWeight):
        n = w.out_features
        out = np.concatenate([x @ rows(w, np.arange(r, min(r + CHUNK_ROWS, n))).T for r in range(0, n, CHUNK_ROWS)],
                             axis=1)
    else:
        out = x @ np.asarray(w, np.float64).T
    return out if bias is None else out + bias.astype(np.float64)


def rows(w: Linear, index: np.ndarray) -> np.ndarray:
    """(len(index), K) float64: rows `index` of a linear, dequantized (an embedding lookup)."""
    if isinstance(w, PackedWeight):
        part = PackedWeight(w.weights[index], w.scales[:, index], w.group_size, in_features=w.in_features)
        return part.dequantize()
    return np.asarray(w, np.float64)[index]


def _check_ids(fn: str, ids, vocab: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ShapeError(fn, "ids", "(T,) integer token ids with T >= 1", describe(ids))
    if arr.min() < 0 or arr.max() >= vocab:
        raise ValueRangeError(fn, "ids", f"ids in [0, {vocab})", f"range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)
