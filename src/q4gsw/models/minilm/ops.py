"""The BERT encoder's ops besides the linears, recorded into a Chain: the embedding sum,
LayerNorm with the residual add fused in, exact-erf GELU, bidirectional attention with a
padding mask, and mean pooling with L2 normalization. Each op checks its tensors and records
one dispatch of its .wgsl kernel (labels "encoder/<kernel>"; the embedding sum one per chunk
of the word table)."""

from __future__ import annotations

import math

import numpy as np

from ...arith import ceil_div
from ...chain import Chain, GpuTensor
from ...errors import ShapeError

FAMILY = "encoder"
NORM_WG = 32
GELU_WG = 256
#: The most invocations an encoder_attention workgroup has (attention_wg picks fewer for short sequences).
ATTENTION_WG = 64
#: Keys a row of encoder_attention.wgsl can attend to (its scores sit in workgroup memory):
#: BERT's max_position_embeddings.
MAX_KEYS = 512
POOL_WG = 128
EMBED_WG = 128


def _record(chain: Chain, name: str, constants: tuple, buffers, workgroups: int, nbytes: int) -> None:
    chain.record(name, constants, buffers, workgroups, nbytes, family=FAMILY)


def _f32_words(*values) -> list[int]:
    return [int(np.float32(v).view(np.uint32)) for v in values]


def rows_per_chunk(rows: int, dim: int, max_binding: int) -> int:
    """Rows of a float32 (rows, dim) table per chunk that fits a binding of max_binding bytes."""
    return max(1, min(rows, max_binding // (4 * dim)))


def attention_wg(seq: int, head_dim: int) -> int:
    """Invocations of an encoder_attention workgroup: the power of two that covers the keys (a
    sentence of 11 tokens: 16), at least the power of two covering head_dim / 4 (a vec4 column
    each) and at most ATTENTION_WG: fewer idle invocations at every barrier."""
    pow2 = lambda v: 1 << max(0, (v - 1).bit_length())  # noqa: E731
    return max(pow2(head_dim // 4), min(ATTENTION_WG, pow2(seq)))


def token_embeddings(chain: Chain, ids: GpuTensor, type_ids: GpuTensor, word_chunks, position: GpuTensor,
                     token_type: GpuTensor, *, seq: int) -> GpuTensor:
    """(B * T, dim): word[ids[r]] + token_type[type_ids[r]] + position[r % seq], rows r = b * seq + t.

    Args:
        ids, type_ids: (B * T,) uint32 GpuTensors.
        word_chunks: [(n0, (n, dim) GpuTensor)]: the word table's rows [n0, n0 + n), in order.
        position: (>= seq, dim) and token_type: (types, dim) float32 GpuTensors.
        seq: T, the padded sequence length.
    """
    fn = "token_embeddings"
    ids = chain.tensor(fn, "ids", ids, dtype="uint32")
    type_ids = chain.tensor(fn, "type_ids", type_ids, dtype="uint32")
    position = chain.tensor(fn, "position", position)
    token_type = chain.tensor(fn, "token_type", token_type)
    dim = position.shape[-1]
    rows = ids.size
    if dim % 4 or token_type.shape[-1] != dim:
        raise ShapeError(fn, "token_type", f"(types, {dim}) with {dim} % 4 == 0", repr(token_type))
    if type_ids.size != rows or rows % seq or position.shape[0] < seq:
        raise ShapeError(fn, "type_ids", f"{rows} ids (B * {seq}), positions >= {seq}",
                         f"{type_ids!r}, {position!r}")
    out = chain.output((rows, dim))
    for n0, table in word_chunks:
        table = chain.tensor(fn, "word_chunks", table)
        if table.shape[-1] != dim:
            raise ShapeError(fn, "word_chunks", f"(n, {dim}) tables", repr(table))
        params = chain.params([rows, dim, seq, n0, table.shape[0], 0, 0, 0])
        _record(chain, "token_embeddings", (("WG", EMBED_WG),),
                (out.buffer, ids.buffer, type_ids.buffer, table.buffer, position.buffer, token_type.buffer, params),
                rows, 16 * rows * dim // len(word_chunks))
    return out


def layer_norm(chain: Chain, x: GpuTensor, delta: GpuTensor | None, weight: GpuTensor, bias: GpuTensor, *,
               eps: float) -> GpuTensor:
    """LayerNorm(x + delta) (or of x when delta is None) per row: a new (rows, D) tensor
    (v - mean) / sqrt(var + eps) * weight + bias."""
    fn = "layer_norm"
    x = chain.tensor(fn, "x", x)
    d = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if d % 4 or chain.tensor(fn, name, t).shape != (d,):
            raise ShapeError(fn, name, f"shape ({d},) with {d} % 4 == 0", repr(t))
    if delta is not None and chain.tensor(fn, "delta", delta).shape != x.shape:
        raise ShapeError(fn, "delta", f"shape {x.shape}", repr(delta))
    rows = x.size // d
    out = chain.output((rows, d))
    params = chain.params([rows, d, *_f32_words(eps), 0])
    _record(chain, "layer_norm", (("WG", NORM_WG), ("ADD", delta is not None)),
            (out.buffer, x.buffer, (delta if delta is not None else x).buffer, weight.buffer, bias.buffer, params),
            rows, 4 * x.size * (3 if delta is not None else 2) + 8 * d)
    return out


def gelu(chain: Chain, x: GpuTensor) -> GpuTensor:
    """0.5 * x * (1 + erf(x / sqrt(2))) elementwise (gelu.wgsl: erf to ~1e-7)."""
    x = chain.tensor("gelu", "x", x)
    out = chain.output(x.shape)
    params = chain.params([x.size, 0, 0, 0])
    _record(chain, "gelu", (("WG", GELU_WG),), (out.buffer, x.buffer, params), ceil_div(x.size, GELU_WG), 8 * x.size)
    return out


def encoder_attention(chain: Chain, q: GpuTensor, k: GpuTensor, v: GpuTensor, mask: GpuTensor, *, heads: int,
                      seq: int) -> GpuTensor:
    """Bidirectional attention of q, k, v (B * T, heads * D) within each sequence of T = seq
    rows, keys with mask (B, T) == 0 left out, scale 1/sqrt(D): (B * T, heads * D)."""
    fn = "encoder_attention"
    q = chain.tensor(fn, "q", q)
    width = q.shape[-1]
    rows = q.size // width
    for name, t in (("k", k), ("v", v)):
        if chain.tensor(fn, name, t).shape != q.shape:
            raise ShapeError(fn, name, f"shape {q.shape} (q's)", repr(t))
    if width % heads:
        raise ShapeError(fn, "heads", f"a divisor of q's width {width}", repr(heads))
    d = width // heads
    if d % 4 or d > 4 * ATTENTION_WG:
        raise ShapeError(fn, "heads", f"a head dim that is a multiple of 4 up to {4 * ATTENTION_WG}",
                         f"{heads} heads of {width / heads:g}")
    if not 1 <= seq <= MAX_KEYS or rows % seq:
        raise ShapeError(fn, "seq", f"a divisor of the {rows} rows, at most {MAX_KEYS}", repr(seq))
    if chain.tensor(fn, "mask", mask).size != rows:
        raise ShapeError(fn, "mask", f"{rows} values (B x T)", repr(mask))
    out = chain.output(q.shape)
    params = chain.params([rows, seq, *_f32_words(1.0 / math.sqrt(d)), 0])
    _record(chain, "encoder_attention", (("WG", attention_wg(seq, d)), ("HEADS", heads), ("D", d), ("MAX_KEYS", MAX_KEYS)),
            (out.buffer, q.buffer, k.buffer, v.buffer, mask.buffer, params), rows * heads,
            4 * q.size + 8 * q.size * seq + 4 * out.size)
    return out


def mean_pool_normalize(chain: Chain, hidden: GpuTensor, mask: GpuTensor, *, seq: int) -> GpuTensor:
    """(B, dim): the mean of hidden (B * T, dim)'s rows over mask (B, T), L2-normalized."""
    fn = "mean_pool_normalize"
    hidden = chain.tensor(fn, "hidden", hidden)
    dim = hidden.shape[-1]
    rows = hidden.size // dim
    if rows % seq:
        raise ShapeError(fn, "seq", f"a divisor of the {rows} rows", repr(seq))
    if chain.tensor(fn, "mask", mask).size != rows:
        raise ShapeError(fn, "mask", f"{rows} values (B x T)", repr(mask))
    batch = rows // seq
    out = chain.output((batch, dim))
    params = chain.params([batch, seq, dim, 0])
    _record(chain, "mean_pool_normalize", (("WG", POOL_WG),), (out.buffer, hidden.buffer, mask.buffer, params),
            batch, 4 * hidden.size + 8 * out.size)
    return out
