"""The CUDA yardstick for decode tokens/s: a torch Llama/Qwen2 decoder in gpt-fast's recipe from q4gsw's weights.

The recipe (gpt-fast's model.py and generate.py, written here for q4gsw's weights): bf16
activations; every linear int4 weight-only through torch's tinygemm
(`torch.ops.aten._weight_int4pack_mm`, inner k-tiles 8); a static bf16 KV cache per layer,
(1, kv_heads, max_positions, head_dim), written at input_pos with index_copy_; RoPE from the
DecoderConfig's float32 tables (rotate_half); RMSNorm in float32 as transformers does;
SwiGLU; q/k/v and gate/up fused as in LayerWeights. Prefill runs eagerly in chunks; the
decode step is compiled with torch.compile(mode="reduce-overhead", fullgraph=True) (CUDA
graphs), picks the next token by argmax on the GPU and feeds it back without a host sync.
Attention reads kv_len cache positions (a little over the context, not the whole cache):
kv_len is the one dynamic size of the compiled step, so every context shares one compile,
and CUDA graphs record one graph per kv_len.

It is one thing (the yardstick: weight conversion, model, generation and its timing), kept in
one file as gpt-fast keeps it, so a reader follows a token from ids to tokens/s top to bottom.

Weights are the same numbers as q4gsw's: tinygemm dequantizes (u - 8) * scale + zero, with u
the unsigned nibble and scales_and_zeros (K/group_size, N, 2) bf16, which is q4gsw's (u - 8) *
scale with zero = 0; only the nibble order differs (tinygemm's uint8 input holds even k in
the high nibble, q4gsw's in the low one) and the scales are rounded to bf16, as tinygemm
requires. The plain dequantized-linear path (`int4=False`) holds (N, K) weights in the
activation dtype and is what the CPU tests compare with q4gsw.llm.reference.

Run on an H200:  python -m q4gsw.tools.torch_llm --preset llama-3-8b --contexts 128,1024,4096 --out FILE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
import warnings

import numpy as np

from ..errors import DTypeError, UnsupportedShapeError
from ..format import PackedWeight
from ..io._deps import require
from ..llm.config import PRESETS, DecoderConfig
from ..llm.synthetic import random_weights
from ..llm.weights import DecoderWeights

torch = require("torch", "q4gsw.tools.torch_llm")
nn, F = torch.nn, torch.nn.functional

log = logging.getLogger("q4gsw")

#: tinygemm's k-tiles per int32 word group (the widest, 16-byte loads, as gpt-fast uses).
INNER_K_TILES = 8
#: The group sizes _weight_int4pack_mm is built for (int4mm.cu's qGroupSize switch).
TINYGEMM_GROUP_SIZES = (32, 64, 128, 256)
#: Rows of a weight dequantized at a time on the device (bounds float32 temporaries).
DEQUANT_ROWS = 8192
#: Positions of a prompt per eager prefill step (bounds attention scores and activations).
PREFILL_CHUNK = 1024
#: Decode steps before timing: the compile, CUDA graph warm-up and recording runs.
WARMUP_STEPS = 8
#: Attended positions (kv_len) are rounded up to this; the cache holds one such block more than
#: the largest kv_len, so that kv_len never spans the whole cache (a whole-cache slice is
#: contiguous, a shorter one is not, and Dynamo would compile the two cases apart).
KV_ALIGN = 64

# --- int4 weights: q4gsw PackedWeight -> tinygemm ------------------------------------------


def tinygemm_unsupported(n: int, k: int, group_size: int, *, cuda: bool = True) -> str | None:
    """Why tinygemm cannot hold an (N, K) weight of this group size, or None if it can.

    int4mm.cu: the packed layout is [N/8][K/(inner_k_tiles*16)][32][inner_k_tiles/2] int32,
    so K must be a multiple of inner_k_tiles * 16 = 128 and N of 8 (else the output and the
    scales would be padded to a multiple of 8); group sizes 32/64/128/256 dividing K. The
    CPU variant (cuda=False) needs N to be a multiple of 16.
    """
    if group_size not in TINYGEMM_GROUP_SIZES:
        return f"group size {group_size} is not one of tinygemm's {TINYGEMM_GROUP_SIZES}"
    if k % (INNER_K_TILES * 16) or k % group_size:
        return (f"K = {k} is not a multiple of {INNER_K_TILES * 16} (inner k-tiles x 16) and of the group size "
                f"{group_size}")
    n_tile = 8 if cuda else 16
    if n % n_tile:
        return f"N = {n} is not a multiple of {n_tile} (tinygemm's n-tile{'' if cuda else ' on a CPU'})"
    return None


def to_device(a: np.ndarray, device, dtype=None):
    """A copy of the array on `device` (cast to dtype if given), copied into an empty tensor
    there (which also works for a fake CUDA device under FakeTensorMode, in the tests)."""
    with warnings.catch_warnings():  # PackedWeight's arrays are read-only; the copy is not
        warnings.simplefilter("ignore", UserWarning)
        host = torch.from_numpy(np.ascontiguousarray(a))
    return torch.empty(host.shape, dtype=dtype or host.dtype, device=device).copy_(host)


def upload(w: PackedWeight, device) -> tuple:
    """q4gsw's arrays of w, copied to `device` unchanged.

    Returns:
        (packed, scales): packed (N, ceil(K/2)) uint8, even k in the low nibble, stored
        q + 8; scales (ceil(K/group_size), N) float32 (the used groups and columns).
    """
    return to_device(w.weights, device), to_device(w.scales[:w.num_groups, :w.out_features], device)


def tinygemm_bytes(packed):
    """(N, K/2) uint8 in q4gsw's nibble order -> the same values in tinygemm's: byte k//2
    holds element k, even k in the high nibble (torch's `q[:, ::2] << 4 | q[:, 1::2]`,
    int4mm.cu's matrix_to_m16n8k16_Bint4_layout), unsigned u = q + 8 in both."""
    return ((packed & 0x0F) << 4) | (packed >> 4)


def tinygemm_values(tg_bytes):
    """(N, K/2) uint8 in tinygemm's nibble order -> (N, K) int32 unsigned values u (the
    input of the CPU variant, _convert_weight_to_int4pack_for_cpu)."""
    n = tg_bytes.shape[0]
    return torch.stack([tg_bytes >> 4, tg_bytes & 0x0F], dim=-1).reshape(n, -1).to(torch.int32)


def scales_and_zeros(scales, dtype):
    """(G, N) float32 scales -> tinygemm's (G, N, 2) [scale, zero] in `dtype`, zero = 0:
    tinygemm computes (u - 8) * scale + zero, q4gsw (u - 8) * scale."""
    return torch.stack([scales, torch.zeros_like(scales)], dim=-1).to(dtype).contiguous()


def dequantize(packed, scales, *, in_features: int, group_size: int, dtype):
    """(N, K) `dtype` weight: (u - 8) * scale in float32 (exactly q4gsw's dense()), then cast."""
    n = packed.shape[0]
    out = torch.empty(n, in_features, dtype=dtype, device=packed.device)
    for r in range(0, n, DEQUANT_ROWS):
        p = packed[r:r + DEQUANT_ROWS]
        u = torch.stack([p & 0x0F, p >> 4], dim=-1).reshape(p.shape[0], -1)[:, :in_features]
        s = scales[:, r:r + DEQUANT_ROWS].T.repeat_interleave(group_size, dim=1)[:, :in_features]
        out[r:r + DEQUANT_ROWS] = ((u.to(torch.float32) - 8) * s).to(dtype)
    return out

# --- the model -----------------------------------------------------------------------------


class Int4Linear(nn.Module):
    """y = x @ W.T (+ bias) with W int4 in tinygemm's layout: _weight_int4pack_mm on CUDA
    (bf16 only), its CPU variant _weight_int4pack_mm_for_cpu elsewhere."""

    def __init__(self, packed, scales, *, in_features: int, group_size: int, bias, dtype):
        super().__init__()
        n = packed.shape[0]
        self.on_cuda = packed.device.type == "cuda"
        reason = tinygemm_unsupported(n, in_features, group_size, cuda=self.on_cuda)
        if reason:
            raise UnsupportedShapeError(f"Int4Linear: ({n}, {in_features}) weight: {reason}")
        if self.on_cuda and dtype != torch.bfloat16:
            raise DTypeError("Int4Linear", "dtype", "torch.bfloat16 (tinygemm on CUDA)", str(dtype))
        self.group_size, self.in_features, self.out_features = group_size, in_features, n
        tg = tinygemm_bytes(packed)
        if self.on_cuda:
            weight = torch.ops.aten._convert_weight_to_int4pack(tg.contiguous(), INNER_K_TILES)
        else:
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(tinygemm_values(tg), INNER_K_TILES)
        self.register_buffer("weight", weight)
        self.register_buffer("scales_and_zeros", scales_and_zeros(scales, dtype))
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x):
        """x: (M, K) -> (M, N)."""
        mm = torch.ops.aten._weight_int4pack_mm if self.on_cuda else torch.ops.aten._weight_int4pack_mm_for_cpu
        out = mm(x.contiguous(), self.weight, self.group_size, self.scales_and_zeros)
        return out if self.bias is None else out + self.bias


class DenseLinear(nn.Module):
    """y = x @ W.T (+ bias) with W dequantized to the activation dtype."""

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """transformers' RMSNorm: normalized in float32, cast back, then times the weight.

    eps is a 0-d float32 buffer on the device, not a Python float: compiled with dynamic
    sizes, Dynamo would make a float attribute a CPU tensor input, which CUDA graphs refuse."""

    def __init__(self, weight, eps: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("eps", torch.tensor(eps, dtype=torch.float32, device=weight.device), persistent=False)

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope(x, cos, sin):
    """x (T, heads, D) rotated in float32 by (T, D/2) angles: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def attend(q, k, v, mask):
    """Grouped-query attention without copying k/v: the `group` query heads that share a kv
    head are stacked along the query axis (query head h reads kv head h // group).

    Args:
        q: (1, heads, T, D); k, v: (1, kv_heads, S, D); mask: (group * T, S) bool, True = attend.
    Returns:
        (1, heads, T, D). One position (decode) is written out as matmul + softmax (gpt-fast
        decodes with SDPA's math backend, which Inductor fuses); prefill uses SDPA.
    """
    _, heads, t, d = q.shape
    kv_heads = k.shape[1]
    q = q.reshape(1, kv_heads, (heads // kv_heads) * t, d)
    if t == 1:  # bmm, not matmul: matmul's decomposition branches (guards) on the slice being the whole cache
        scores = torch.bmm(q[0], k[0].transpose(1, 2)).float() * (1.0 / math.sqrt(d))
        p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).to(v.dtype)
        out = torch.bmm(p, v[0])
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.reshape(1, heads, t, d)


class Block(nn.Module):
    """One decoder layer and its static KV cache."""

    def __init__(self, config: DecoderConfig, *, qkv, o, gate_up, down, attn_norm, mlp_norm, window,
                 max_positions: int):
        super().__init__()
        c = config
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.attn_norm, self.mlp_norm = attn_norm, mlp_norm
        self.window = window
        self.heads, self.kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.sizes = [c.q_size, c.kv_size, c.kv_size]
        shape = (1, c.num_kv_heads, max_positions, c.head_dim)
        dtype, device = attn_norm.weight.dtype, attn_norm.weight.device
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def forward(self, x, input_pos, cos, sin, mask, kv_len: int):
        t = x.shape[0]
        q, k, v = self.qkv(self.attn_norm(x)).split(self.sizes, dim=-1)
        q = rope(q.view(t, self.heads, self.head_dim), cos, sin)
        k = rope(k.view(t, self.kv_heads, self.head_dim), cos, sin)
        v = v.view(t, self.kv_heads, self.head_dim)
        self.k_cache.index_copy_(2, input_pos, k.transpose(0, 1).unsqueeze(0))
        self.v_cache.index_copy_(2, input_pos, v.transpose(0, 1).unsqueeze(0))
        out = attend(q.transpose(0, 1).unsqueeze(0), self.k_cache[:, :, :kv_len], self.v_cache[:, :, :kv_len], mask)
        x = x + self.o(out[0].transpose(0, 1).reshape(t, self.heads * self.head_dim))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class Decoder(nn.Module):
    """A Llama/Qwen2/Mistral decoder for one sequence (batch 1) with static KV caches.

    forward(ids, input_pos, kv_len=None, every_position=False):
        ids: (T,) int64 tokens at positions input_pos: (T,) int64 (increasing, < kv_len);
        kv_len: the cache positions attended (a Python int; default max_positions).
        Returns (T, vocab) logits with every_position, else (1, vocab) of the last position,
        in the activation dtype.
    """

    def __init__(self, config: DecoderConfig, *, embed, blocks, final_norm, lm_head, max_positions: int):
        super().__init__()
        self.config, self.max_positions = config, max_positions
        self.register_buffer("embed", embed)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm, self.lm_head = final_norm, lm_head
        cos, sin = config.rope_cos_sin(np.arange(max_positions))
        self.register_buffer("rope_cos", to_device(cos, embed.device), persistent=False)
        self.register_buffer("rope_sin", to_device(sin, embed.device), persistent=False)

    def forward(self, ids, input_pos, *, kv_len: int | None = None, every_position: bool = False):
        kv_len = self.max_positions if kv_len is None else kv_len
        c = self.config
        x = F.embedding(ids, self.embed)
        cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
        keys = torch.arange(kv_len, device=ids.device)
        group, t = c.num_heads // c.num_kv_heads, ids.shape[0]
        allowed = keys[None, :] <= input_pos[:, None]
        masks = {None: allowed}
        if c.sliding_window is not None:
            masks[c.sliding_window] = allowed & (keys[None, :] > input_pos[:, None] - c.sliding_window)
        masks = {w: m.expand(group, t, kv_len).reshape(group * t, kv_len) for w, m in masks.items()}
        for block in self.blocks:
            x = block(x, input_pos, cos, sin, masks[block.window], kv_len)
        return self.lm_head(self.final_norm(x if every_position else x[-1:]))


def from_decoder_weights(weights: DecoderWeights, device, dtype=None, *, int4: bool | None = None,
                         max_positions: int | None = None) -> Decoder:
    """Build the torch Decoder from q4gsw DecoderWeights (the same numbers; see the module doc).

    Packed bytes and scales are uploaded as they are and converted on the device with torch
    ops (a Llama-3-8B in seconds). The embedding is dequantized to a dense table (a decode
    step gathers one row), as gpt-fast keeps it unquantized.

    Args:
        weights: the DecoderWeights (e.g. q4gsw.llm.random_weights(PRESETS["llama-3-8b"])).
        device: a torch device or its name.
        dtype: the activation dtype; default bfloat16 (tinygemm's only one on CUDA).
        int4: int4 tinygemm linears (True; on a CPU through _weight_int4pack_mm_for_cpu) or
            dense ones dequantized to dtype (False); default True on CUDA, False elsewhere.
            Linears that are dense in `weights` stay dense.
        max_positions: KV cache length; default min(config.max_position_embeddings, 4096).
    Raises:
        UnsupportedShapeError: int4 with a shape or group size tinygemm does not take.
    """
    device = torch.device(device)
    dtype = torch.bfloat16 if dtype is None else dtype
    int4 = device.type == "cuda" if int4 is None else int4
    c = weights.config
    max_positions = max_positions or min(c.max_position_embeddings, 4096)

    def vector(a):
        return None if a is None else to_device(np.asarray(a, np.float32), device, dtype)

    def dense_of(w):
        if isinstance(w, PackedWeight):
            packed, scales = upload(w, device)
            return dequantize(packed, scales, in_features=w.in_features, group_size=w.group_size, dtype=dtype)
        return vector(w)

    def linear(w, bias=None):
        if int4 and isinstance(w, PackedWeight):
            packed, scales = upload(w, device)
            return Int4Linear(packed, scales, in_features=w.in_features, group_size=w.group_size,
                              bias=vector(bias), dtype=dtype)
        return DenseLinear(dense_of(w), vector(bias))

    blocks = []
    for i, lw in enumerate(weights.layers):
        blocks.append(Block(
            c, qkv=linear(lw.qkv, lw.qkv_bias), o=linear(lw.o, lw.o_bias), gate_up=linear(lw.gate_up),
            down=linear(lw.down), attn_norm=RMSNorm(vector(lw.attn_norm), c.rms_norm_eps),
            mlp_norm=RMSNorm(vector(lw.mlp_norm), c.rms_norm_eps), window=c.window(i), max_positions=max_positions))
        if (i + 1) % 8 == 0:
            log.debug("torch_llm: built layer %d of %d", i + 1, c.num_layers)
    return Decoder(c, embed=dense_of(weights.embed), blocks=blocks,
                   final_norm=RMSNorm(vector(weights.final_norm), c.rms_norm_eps), lm_head=linear(weights.lm_head),
                   max_positions=max_positions)

# --- generation ----------------------------------------------------------------------------


def prefill(model: Decoder, ids, *, start: int = 0, chunk: int = PREFILL_CHUNK):
    """Run a prompt through the model (eager, `chunk` positions at a time), filling the cache.

    Args:
        ids: (T,) int64 on the model's device, at positions start .. start + T - 1.
    Returns:
        (1,) int64: the greedy next token.
    """
    end = start + ids.shape[0]
    for s in range(start, end, chunk):
        e = min(s + chunk, end)
        pos = torch.arange(s, e, device=ids.device)
        logits = model(ids[s - start:e - start], pos, kv_len=e)
    return torch.argmax(logits, dim=-1)


def decode_one_token(model: Decoder, token, input_pos, kv_len: int):
    """One greedy step: token (1,) int64 at input_pos (1,) int64 -> the next token (1,) int64."""
    return torch.argmax(model(token, input_pos, kv_len=kv_len), dim=-1)


def compile_decode(*, mode: str | None = "reduce-overhead", backend: str = "inductor"):
    """decode_one_token compiled whole (fullgraph). dynamic=True makes kv_len (the only size
    not fixed by the model: tokens and positions are 1 long) symbolic, so one compile serves
    every kv_len below the cache length; reduce-overhead records a CUDA graph per kv_len.
    mode=None and another backend (e.g. "aot_eager") serve the CPU tests."""
    options = {} if mode is None else {"mode": mode}
    return torch.compile(decode_one_token, fullgraph=True, dynamic=True, backend=backend, **options)


def generate(model: Decoder, step, token, start: int, steps: int, *, kv_len: int):
    """Greedy tokens after `token` (at position start), each fed back on the device.

    As gpt-fast: the step's output is cloned (a CUDA graph overwrites it on its next replay),
    input_pos is advanced in place on the device, nothing is read back until the end.
    Returns:
        (steps,) int64 on the device.
    """
    input_pos = torch.tensor([start], dtype=torch.int64, device=token.device)
    out = []
    for _ in range(steps):
        token = step(model, token, input_pos, kv_len).clone()
        input_pos += 1
        out.append(token)
    return torch.cat(out)

# --- the benchmark -------------------------------------------------------------------------


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def decode_bytes(model: Decoder, kv_len: int) -> int:
    """Bytes a decode step reads: every linear and norm, one embedding row, kv_len cache positions."""
    c = model.config
    weights = sum(b.nbytes for name, b in model.named_buffers()
                  if name not in ("embed", "rope_cos", "rope_sin") and not name.endswith("_cache"))
    cache = 2 * c.num_layers * c.num_kv_heads * kv_len * c.head_dim * model.embed.element_size()
    return weights + model.embed[0].nbytes + cache


def benchmark(config_or_weights, contexts=(128, 1024, 4096), new_tokens: int = 64, group_size: int = 128,
              compile: bool = True, seed: int = 0, *, eager: bool = True, shared_cache: bool = False,
              tune: bool = True, prefill_tokens: int = 512, device=None) -> dict:
    """Decode tokens/s of the torch yardstick at each context, and prefill tokens/s.

    For each context: prefill a random prompt of that length (eager, chunks of PREFILL_CHUNK),
    then from the same cache: WARMUP_STEPS compiled steps (the compile, CUDA graph recording),
    new_tokens timed compiled steps, and (eager=True) new_tokens timed eager steps, each timed
    between torch.cuda.synchronize() calls. Attention reads kv_len = context + new_tokens
    rounded up to KV_ALIGN positions (shared_cache: the largest context's kv_len at every
    context, as one static cache of the largest context would); one compile serves all.

    Args:
        config_or_weights: a DecoderConfig (random int4 weights of group_size and seed are made)
            or DecoderWeights.
        tune: Inductor's coordinate-descent tuning of its kernels (gpt-fast turns it on).
        device: default CUDA; without CUDA the result is {"skipped": reason}. A CPU runs the
            same steps (tests), with the CPU int4 kernel where torch has it.
    Returns:
        JSON-ready dict: torch version, device name, shapes, weight bytes, prefill tokens/s and
        per context: tokens/s compiled and eager, ms/token, GB/s read, compile seconds. If the
        compiled step raises, its error is kept under "compile_error" and the run goes on eager.
    """
    import torch._inductor.config  # patched below; `import torch` does not import it

    if device is None:
        if not torch.cuda.is_available():
            return {"skipped": f"CUDA is not available to torch {torch.__version__}: the yardstick is torch's "
                               "CUDA int4 tinygemm"}
        device = "cuda"
    device = torch.device(device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    began = time.perf_counter()
    if isinstance(config_or_weights, DecoderWeights):
        weights = config_or_weights
    else:
        log.info("torch_llm: random int4 weights (group size %d, seed %d)", group_size, seed)
        weights = random_weights(config_or_weights, group_size=group_size, seed=seed)
    c = weights.config
    contexts = sorted(int(n) for n in contexts)
    steps = max(new_tokens, WARMUP_STEPS)
    max_kv = _round_up(max(contexts[-1] + steps, prefill_tokens), KV_ALIGN)
    max_positions = max_kv + KV_ALIGN
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    int4 = cuda or hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    model = from_decoder_weights(weights, device, torch.bfloat16, int4=int4, max_positions=max_positions)
    sync()
    result = {
        "torch": torch.__version__, "device": torch.cuda.get_device_name(device) if cuda else str(device),
        "config": {k: v for k, v in dataclasses.asdict(c).items() if isinstance(v, (int, float, str))},
        "group_size": weights.layers[0].qkv.group_size if isinstance(weights.layers[0].qkv, PackedWeight) else None,
        "int4": int4, "new_tokens": new_tokens, "max_positions": max_positions, "shared_cache": shared_cache,
        "build_s": time.perf_counter() - t0, "weight_bytes_per_token": decode_bytes(model, 0),
        "model_memory_bytes": torch.cuda.memory_allocated(device) if cuda else None,
    }
    log.info("torch_llm: %s model on %s in %.1f s", "int4" if int4 else "dense", result["device"], result["build_s"])
    rng = np.random.default_rng(seed)

    def prompt(n):
        return to_device(rng.integers(0, c.vocab_size, n), device)

    def timed(step, first, start, steps, kv_len):
        sync()
        t = time.perf_counter()
        tokens = generate(model, step, first, start, steps, kv_len=kv_len)
        sync()
        return tokens.cpu().numpy(), time.perf_counter() - t

    step = compile_decode() if compile else None
    with torch.no_grad(), torch._inductor.config.patch(coordinate_descent_tuning=tune):
        ids = prompt(prefill_tokens)
        prefill(model, ids)  # warm-up: cuBLAS/SDPA/tinygemm initialization
        sync()
        t = time.perf_counter()
        prefill(model, ids)
        sync()
        result["prefill_tokens"] = prefill_tokens
        result["prefill_tokens_per_s"] = prefill_tokens / (time.perf_counter() - t)
        log.info("torch_llm: prefill %d tokens: %.0f tokens/s (eager)", prefill_tokens, result["prefill_tokens_per_s"])
        rows = []
        for n in contexts:
            kv_len = max_kv if shared_cache else _round_up(n + steps, KV_ALIGN)
            row = {"context": n, "kv_len": kv_len}
            t = time.perf_counter()
            first = prefill(model, prompt(n))
            sync()
            row["prefill_s"] = time.perf_counter() - t
            traffic = decode_bytes(model, kv_len)
            if step is not None:
                try:
                    _, row["compile_s"] = timed(step, first, n, WARMUP_STEPS, kv_len)
                except Exception as exc:  # torch.compile's failures are many and version-bound: report, go on eager
                    result["compile_error"] = f"{type(exc).__name__}: {exc}"[:2000]
                    log.error("torch_llm: compiled decode failed, continuing eager: %s", result["compile_error"])
                    step = None
            if step is not None:
                tokens, secs = timed(step, first, n, new_tokens, kv_len)
                row.update(tokens_per_s=new_tokens / secs, ms_per_token=1e3 * secs / new_tokens,
                           gb_per_s=traffic * new_tokens / secs / 1e9)
            if eager:
                timed(decode_one_token, first, n, 2, kv_len)
                eager_tokens, secs = timed(decode_one_token, first, n, new_tokens, kv_len)
                row.update(eager_tokens_per_s=new_tokens / secs, eager_ms_per_token=1e3 * secs / new_tokens)
                if "tokens_per_s" in row:  # bf16 kernels differ, so random-weight greedy paths may part
                    row["same_tokens_as_eager"] = int(np.argmin(np.append(tokens == eager_tokens, False)))
            row["decode_bytes_per_token"] = traffic
            log.info("torch_llm: context %d (kv_len %d): %s", n, kv_len,
                     ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)))
            rows.append(row)
    result["contexts"] = rows
    if cuda:
        result["max_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    result["total_s"] = time.perf_counter() - began
    return result


def main(argv=None) -> int:
    """python -m q4gsw.tools.torch_llm: run benchmark() on a preset's shapes, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m q4gsw.tools.torch_llm",
                                     description=benchmark.__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama-3-8b")
    parser.add_argument("--contexts", default="128,1024,4096", help="comma-separated prompt lengths")
    parser.add_argument("--new-tokens", type=int, default=64, help="timed decode steps per context")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="eager decode only")
    parser.add_argument("--no-eager", action="store_true", help="skip the eager decode runs")
    parser.add_argument("--no-tune", action="store_true", help="no coordinate-descent tuning (faster compile)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="attend over the largest context's positions at every context")
    parser.add_argument("--device", default=None, help="torch device (default cuda)")
    parser.add_argument("--out", default=None, help="JSON file (default: stdout)")
    args = parser.parse_args(argv)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    result = benchmark(PRESETS[args.preset], [int(n) for n in args.contexts.split(",")], args.new_tokens,
                       args.group_size, not args.no_compile, args.seed, eager=not args.no_eager,
                       shared_cache=args.shared_cache, tune=not args.no_tune, device=args.device)
    result = {"preset": args.preset, **result}
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        log.info("torch_llm: wrote %s", args.out)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
