"""The decoder's ops besides the int4 linear, recorded into a Chain: embedding rows, residual
add + RMSNorm, RoPE with the KV-cache write, attention over the cache, SwiGLU, and the choice
of the next token (greedy, or sampled with temperature / top-k / top-p). Each op checks its
tensors and records one or two dispatches of its .wgsl kernel (labels "llm/<kernel>").
The KV cache is float32, or float16 where the device has `shader-f16` (kv_cache_dtype):
rope_kv and attention join kv_f32.wgsl or kv_f16.wgsl before their own file."""

from __future__ import annotations

import math

import numpy as np

from ..arith import ceil_div
from ..chain import Chain, GpuTensor
from ..checks import describe
from ..errors import ArgumentError, DTypeError, FeatureError, ShapeError
from ..format import PackedWeight

FAMILY = "llm"
NORM_WG = 256
ROPE_WG = 64
ATTENTION_WG = 64  # keys per tile
COMBINE_WG = 128
ELEMENTWISE_WG = 256
ARGMAX_WG = 256
ARGMAX_CHUNK = 4096  # logits per argmax_partial workgroup


#: KV-cache options: kv_cache value -> (GpuTensor dtype, the file joined before rope_kv / attention).
KV_CACHES = {"f32": ("float32", "kv_f32"), "f16": ("float16", "kv_f16")}


def _record(chain: Chain, name: str, constants: tuple, buffers, workgroups: int, nbytes: int,
            files: tuple = ()) -> None:
    chain.record(name, constants, buffers, workgroups, nbytes, family=FAMILY, files=files)


def kv_cache_dtype(fn: str, kv_cache, caps) -> str:
    """The cache's GpuTensor dtype for the option kv_cache ("f32" or "f16"), checked against the
    device: "f16" needs `shader-f16` (FeatureError otherwise; call before any GPU buffer exists)."""
    if not isinstance(kv_cache, str) or kv_cache not in KV_CACHES:
        raise ArgumentError(fn, "kv_cache", "'f32' or 'f16'", describe(kv_cache))
    if kv_cache == "f16" and not caps.has_f16:
        raise FeatureError(fn, "kv_cache", f"'f32' on this device ('f16' stores the cache as WGSL f16, which needs "
                           f"the WebGPU feature shader-f16: {caps.adapter_name} does not offer it, or "
                           f"Q4GSW_DISABLE_FEATURES turned it off)", "'f16'", "shader-f16")
    return KV_CACHES[kv_cache][0]


def _kv_file(chain: Chain, fn: str, k_cache: GpuTensor, v_cache: GpuTensor) -> str:
    """kv_f32 or kv_f16 for caches of one dtype on this chain's device (else DTypeError / FeatureError)."""
    files = {dtype: file for dtype, file in KV_CACHES.values()}
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        dtype = t.dtype if isinstance(t, GpuTensor) and t.dtype in files else "float32"
        chain.tensor(fn, name, t, dtype=dtype)  # a GpuTensor of this device, float32 or float16
    if v_cache.dtype != k_cache.dtype:
        raise DTypeError(fn, "v_cache", f"a {k_cache.dtype} GpuTensor (as k_cache)", repr(v_cache))
    if k_cache.dtype == "float16" and not chain.runtime.caps.has_f16:
        raise FeatureError(fn, "k_cache", "a float32 cache on this device (float16 needs the WebGPU feature "
                           "shader-f16)", "a float16 one", "shader-f16")
    return files[k_cache.dtype]


def embed_rows(chain: Chain, ids: GpuTensor, table: PackedWeight, tokens: int, *, ids_offset: int = 0) -> GpuTensor:
    """(tokens, K) float32: row ids[ids_offset + t] of the int4 table (vocab, K), dequantized."""
    fn = "embed_rows"
    ids = chain.tensor(fn, "ids", ids, dtype="uint32")
    if ids_offset + tokens > ids.size:
        raise ShapeError(fn, "ids", f"at least {ids_offset + tokens} ids", repr(ids))
    k = table.in_features
    out = chain.output((tokens, k))
    for chunk in chain.runtime.weights.chunks(table):
        params = chain.params([tokens, k, (k + 1) // 2, min(table.group_size, k), chunk.scale_stride, chunk.n0,
                               chunk.n, ids_offset])
        _record(chain, "embed_rows", (("WG", 256),), (out.buffer, ids.buffer, chunk.weights, chunk.scales, params),
                tokens, tokens * (k // 2 + 4 * k + 4 * table.num_groups))
    return out


def add_rms_norm(chain: Chain, x: GpuTensor, delta: GpuTensor | None, weight: GpuTensor, *, eps: float,
                 first_row: int = 0) -> GpuTensor:
    """x += delta (in place, when delta is given), then RMSNorm of x's rows [first_row, rows):
    a new (rows - first_row, D) tensor x / sqrt(mean(x^2) + eps) * weight."""
    fn = "add_rms_norm"
    x = chain.tensor(fn, "x", x)
    weight = chain.tensor(fn, "weight", weight)
    d = x.shape[-1]
    rows = x.size // d
    if d % 4 or weight.shape != (d,):
        raise ShapeError(fn, "weight", f"shape ({d},) with {d} % 4 == 0", repr(weight))
    if delta is not None and chain.tensor(fn, "delta", delta).shape != x.shape:
        raise ShapeError(fn, "delta", f"shape {x.shape}", repr(delta))
    if not 0 <= first_row < rows:
        raise ShapeError(fn, "first_row", f"a row of x in [0, {rows})", repr(first_row))
    out = chain.output((rows - first_row, d))
    words = np.array([rows, d, 0, first_row], np.uint32)
    words[2] = np.float32(eps).view(np.uint32)
    params = chain.params(words)
    delta_buf = delta.buffer if delta is not None else weight.buffer
    _record(chain, "add_rms_norm", (("WG", NORM_WG), ("ADD", delta is not None)),
            (out.buffer, x.buffer, delta_buf, weight.buffer, params), rows - first_row,
            4 * (rows - first_row) * d * (3 if delta is not None else 2) + 4 * d)
    return out


def rope_kv(chain: Chain, qkv: GpuTensor, cos_sin: GpuTensor, state, k_cache: GpuTensor, v_cache: GpuTensor, *,
            q_heads: int, kv_heads: int, head_dim: int) -> GpuTensor:
    """RoPE on the q and k heads of qkv (rows, (q_heads + 2 kv_heads) * head_dim) at positions
    state.pos + t; k and v go into the caches (kv_heads, max_positions, head_dim). Returns q
    (rows, q_heads * head_dim), rotated. The caches are float32, or float16 (values rounded to
    half precision as they are written; needs `shader-f16`)."""
    fn = "rope_kv"
    qkv = chain.tensor(fn, "qkv", qkv)
    width = (q_heads + 2 * kv_heads) * head_dim
    if qkv.shape[-1] != width:
        raise ShapeError(fn, "qkv", f"(..., {width})", repr(qkv))
    rows = qkv.size // width
    kv_file = _kv_file(chain, fn, k_cache, v_cache)
    max_positions = k_cache.shape[1]
    q = chain.output((rows, q_heads * head_dim))
    params = chain.params([rows, max_positions, 0, 0])
    heads = q_heads + 2 * kv_heads
    kv_written = 2 * rows * kv_heads * head_dim * np.dtype(k_cache.dtype).itemsize
    _record(chain, "rope_kv", (("WG", ROPE_WG), ("Q_HEADS", q_heads), ("KV_HEADS", kv_heads), ("D", head_dim)),
            (q.buffer, k_cache.buffer, v_cache.buffer, qkv.buffer, cos_sin.buffer, state, params), rows * heads,
            4 * qkv.size + 4 * rows * q_heads * head_dim + kv_written + 4 * rows * head_dim * heads // 2,
            files=(kv_file, "rope_kv"))
    return q


def attention(chain: Chain, q: GpuTensor, k_cache: GpuTensor, v_cache: GpuTensor, state, *, kv_heads: int,
              head_dim: int, splits: int = 1, split_keys: int = ATTENTION_WG, window: int = 0) -> GpuTensor:
    """Causal attention of q (rows, q_heads * head_dim) at positions state.pos + t over the
    caches, grouped-query (q head h reads kv head h // (q_heads / kv_heads)), scale
    1/sqrt(head_dim), keys within `window` when > 0. splits > 1 (decode): the keys are split
    over workgroups of split_keys each and merged by attention_combine. float16 caches are read
    into float32 arithmetic."""
    fn = "attention"
    q = chain.tensor(fn, "q", q)
    rows, width = q.size // q.shape[-1], q.shape[-1]
    q_heads = width // head_dim
    group = q_heads // kv_heads
    if head_dim % 4 or head_dim > 4 * ATTENTION_WG or q_heads % kv_heads or group > 8:
        raise ShapeError(fn, "head_dim", f"a multiple of 4 up to {4 * ATTENTION_WG}, with at most 8 query heads "
                         "per kv head", f"{head_dim} ({q_heads} q heads, {kv_heads} kv heads)")
    kv_file = _kv_file(chain, fn, k_cache, v_cache)
    max_positions = k_cache.shape[1]
    words = np.array([rows, max_positions, 0, 0], np.uint32)
    words[2] = np.float32(1.0 / math.sqrt(head_dim)).view(np.uint32)
    params = chain.params(words)
    constants = (("WG", ATTENTION_WG), ("G", group), ("D", head_dim), ("KV_HEADS", kv_heads))
    kv_bytes = 2 * k_cache.nbytes  # at most: the caches' filled part
    out = chain.output((rows, width))
    if splits == 1:
        stats = chain.output((1, 2))  # bound, never written
        _record(chain, "attention", (*constants, ("SPLITS", 1), ("SPLIT_KEYS", split_keys), ("WINDOW", window)),
                (out.buffer, stats.buffer, q.buffer, k_cache.buffer, v_cache.buffer, state, params),
                rows * kv_heads, kv_bytes + 8 * q.size, files=(kv_file, "attention"))
        return out
    partial = chain.output((rows * kv_heads * splits * group, head_dim))
    stats = chain.output((rows * kv_heads * splits * group, 2))
    _record(chain, "attention", (*constants, ("SPLITS", splits), ("SPLIT_KEYS", split_keys), ("WINDOW", window)),
            (partial.buffer, stats.buffer, q.buffer, k_cache.buffer, v_cache.buffer, state, params),
            rows * kv_heads * splits, kv_bytes + 4 * q.size, files=(kv_file, "attention"))
    _record(chain, "attention_combine", (("WG", COMBINE_WG), ("G", group), ("D", head_dim), ("KV_HEADS", kv_heads),
                                         ("SPLITS", splits), ("SPLIT_KEYS", split_keys)),
            (out.buffer, partial.buffer, stats.buffer, state, params), rows * q_heads, 4 * partial.size + 4 * out.size)
    return out


def swiglu(chain: Chain, gate_up: GpuTensor) -> GpuTensor:
    """silu(gate) * up for gate_up (rows, 2F) = [gate | up] per row: (rows, F)."""
    fn = "swiglu"
    gate_up = chain.tensor(fn, "gate_up", gate_up)
    if gate_up.shape[-1] % 2:
        raise ShapeError(fn, "gate_up", "an even last dimension (gate then up)", repr(gate_up))
    f = gate_up.shape[-1] // 2
    out = chain.output((*gate_up.shape[:-1], f))
    params = chain.params([out.size, f, 0, 0])
    _record(chain, "swiglu", (("WG", ELEMENTWISE_WG),), (out.buffer, gate_up.buffer, params),
            ceil_div(out.size, ELEMENTWISE_WG), 4 * gate_up.size + 4 * out.size)
    return out


def argmax(chain: Chain, logits: GpuTensor, ids: GpuTensor, generated: GpuTensor, state, *, row: int = -1) -> None:
    """The greedy next token: argmax of logits[row] (ties: the smallest index), written to
    ids[0] (the next step's input) and generated[state.step]."""
    fn = "argmax"
    logits = chain.tensor(fn, "logits", logits)
    vocab = logits.shape[-1]
    rows = logits.size // vocab
    row = row % rows
    parts = ceil_div(vocab, ARGMAX_CHUNK)
    best = chain.output((parts, 2), dtype="uint32")
    params = chain.params([vocab, ARGMAX_CHUNK, row * vocab, 0])
    _record(chain, "argmax_partial", (("WG", ARGMAX_WG),), (best.buffer, logits.buffer, params), parts, 4 * vocab)
    final = chain.params([parts, generated.size, 0, 0])
    _record(chain, "argmax_final", (("WG", ARGMAX_WG),),
            (chain.tensor(fn, "ids", ids, dtype="uint32").buffer,
             chain.tensor(fn, "generated", generated, dtype="uint32").buffer, best.buffer, state, final), 1, 8 * parts)


def sample(chain: Chain, logits: GpuTensor, ids: GpuTensor, generated: GpuTensor, state, sampling_params, *,
           row: int = -1) -> None:
    """The next token drawn from logits[row] as sample.wgsl describes (temperature, top-k,
    top-p, seed from the uniform `sampling_params`; see q4gsw.llm.sampling), written to
    ids[0] and generated[state.step]."""
    fn = "sample"
    logits = chain.tensor(fn, "logits", logits)
    vocab = logits.shape[-1]
    row = row % (logits.size // vocab)
    params = chain.params([vocab, row * vocab, generated.size, 0])
    _record(chain, "sample", (("WG", 256),),
            (chain.tensor(fn, "ids", ids, dtype="uint32").buffer,
             chain.tensor(fn, "generated", generated, dtype="uint32").buffer, logits.buffer, state, sampling_params,
             params), 1, 4 * vocab)
