"""`q4gsw demo --decode`: greedy decoding through a Llama-shaped stack of random 4-bit weights, as one chain per token."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..chain import Chain
from ..format import PackedWeight, linear_reference
from ..runtime import get_runtime
from ..tools.workload import random_weight
from .layers import BlockShape

EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class DecodeShape(BlockShape):
    """A Llama-style decoder (grouped-query attention, SwiGLU MLP, RMSNorm): the block shape of
    q4gsw demo plus a vocabulary; default: a ~1B-class width."""

    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def random_packed(rng, n: int, k: int, group_size: int) -> PackedWeight:
    """Random int4 bytes with scales ~ 1/(4.6 sqrt(K)), so each layer keeps activations O(1)."""
    return random_weight(rng, n, k, group_size, scale=1 / (4.6 * np.sqrt(k)))


def embedding(token: int, hidden: int) -> np.ndarray:
    """Row `token` of a random embedding table, generated on demand (no vocab x hidden table in memory)."""
    return np.random.default_rng(token).standard_normal((1, hidden)).astype(np.float32)


def random_model(shape: DecodeShape, layers: int, group_size: int, seed: int = 0) -> dict:
    """Random packed weights and norm weights of `layers` blocks plus the final norm and lm_head."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(layers):
        block = {name: random_packed(rng, n, k, group_size) for name, (n, k) in shape.linears.items()}
        block["attn_norm"] = rng.uniform(0.8, 1.2, shape.hidden).astype(np.float32)
        block["mlp_norm"] = rng.uniform(0.8, 1.2, shape.hidden).astype(np.float32)
        blocks.append(block)
    return {"blocks": blocks, "final_norm": rng.uniform(0.8, 1.2, shape.hidden).astype(np.float32),
            "lm_head": random_packed(rng, shape.vocab, shape.hidden, group_size)}


def record_decode_step(chain: Chain, model: dict, shape: DecodeShape):
    """Record one decode step into `chain`; returns (x input (1, hidden), logits (1, vocab)).

    Attention is over a context of one position (each token attends only to itself): the
    softmax of a single score is 1, so attention's output is v, expanded to the query heads.
    q and k are still projected, so every linear of a real decode step runs; attention over
    a KV cache is not modelled.
    """
    x_in = chain.input((1, shape.hidden))
    x = x_in
    for b in model["blocks"]:
        h = chain.rms_norm(x, b["attn_norm"], eps=EPS)
        chain.linear(h, b["q_proj"])
        chain.linear(h, b["k_proj"])
        v = chain.linear(h, b["v_proj"])
        attn = chain.repeat_heads(v, head_dim=shape.head_dim, repeats=shape.heads // shape.kv_heads)
        x = chain.add(x, chain.linear(attn, b["o_proj"]))
        h = chain.rms_norm(x, b["mlp_norm"], eps=EPS)
        m = chain.silu_mul(chain.linear(h, b["gate_proj"]), chain.linear(h, b["up_proj"]))
        x = chain.add(x, chain.linear(m, b["down_proj"]))
    logits = chain.linear(chain.rms_norm(x, model["final_norm"], eps=EPS), model["lm_head"])
    return x_in, logits


def reference_logits(x: np.ndarray, model: dict, shape: DecodeShape) -> np.ndarray:
    """The same step in float64 (numpy, dequantized weights)."""

    def norm(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + EPS) * w

    x = x.astype(np.float64)
    for b in model["blocks"]:
        h = norm(x, b["attn_norm"])
        v = linear_reference(h, b["v_proj"])
        attn = np.repeat(v.reshape(1, shape.kv_heads, 1, shape.head_dim), shape.heads // shape.kv_heads, axis=2)
        x = x + linear_reference(attn.reshape(1, shape.hidden), b["o_proj"])
        h = norm(x, b["mlp_norm"])
        g, u = linear_reference(h, b["gate_proj"]), linear_reference(h, b["up_proj"])
        x = x + linear_reference(g / (1 + np.exp(-g)) * u, b["down_proj"])
    return linear_reference(norm(x, model["final_norm"]), model["lm_head"])


def run_decode_demo(layers: int = 2, tokens: int = 32, group_size: int = 128, shape: DecodeShape = DecodeShape(),
                    seed: int = 0, check: bool = True, out=print) -> dict:
    """Greedy-decode `tokens` tokens through random weights, one chain replay (one submit) per token.

    Each step writes the token's embedding, replays the recorded chain, reads the logits back
    and takes the argmax on the host. Two warm-up tokens are not timed. With `check`, the
    first step's logits are compared with the float64 reference.
    Returns: tokens_per_s, ms_per_token, dispatches_per_token, weight_bytes_per_token,
    gb_per_s (weight bytes x tokens/s), rel_error (or None), tokens (the generated ids).
    """
    rt = get_runtime()
    out(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    model = random_model(shape, layers, group_size, seed)
    packed = [w for b in model["blocks"] for w in b.values() if isinstance(w, PackedWeight)] + [model["lm_head"]]
    weight_bytes = sum(w.nbytes for w in packed)
    with Chain(label="q4gsw/decode") as chain:
        x_in, logits = record_decode_step(chain, model, shape)
        out(f"{layers} blocks (hidden {shape.hidden}, intermediate {shape.intermediate}, {shape.heads} heads / "
            f"{shape.kv_heads} kv heads), vocab {shape.vocab}, group size {group_size}: {len(chain)} dispatches "
            f"per token in one submit, {weight_bytes / 2**20:.1f} MiB of int4 weights + scales")
        rel_error = None
        token = 1
        if check:
            x0 = embedding(token, shape.hidden)
            chain.run({x_in: x0})
            ref = reference_logits(x0, model, shape)
            rel_error = float(np.abs(logits.numpy() - ref).max() / np.abs(ref).max())
            out(f"first step vs float64 reference: max |error| / max |logit| = {rel_error:.2e}")
        generated = []
        times = []
        for step in range(tokens + 2):
            t0 = time.perf_counter()
            chain.run({x_in: embedding(token, shape.hidden)})
            token = int(np.argmax(logits.numpy()))
            if step >= 2:
                times.append(time.perf_counter() - t0)
                generated.append(token)
        dispatches = len(chain)
    seconds = sum(times)
    tps = len(times) / seconds
    result = {"tokens_per_s": tps, "ms_per_token": 1e3 * seconds / len(times), "dispatches_per_token": dispatches,
              "weight_bytes_per_token": weight_bytes, "gb_per_s": weight_bytes * tps / 1e9,
              "rel_error": rel_error, "tokens": generated}
    out(f"decode: {tps:.1f} tokens/s ({result['ms_per_token']:.2f} ms/token, {tokens} tokens after 2 warm-up; "
        f"embedding write + replay + logits readback + host argmax), weights read at {result['gb_per_s']:.2f} GB/s")
    return result
