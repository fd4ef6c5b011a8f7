// encoder_ops.js: the BERT encoder's ops besides the linears, recorded into a Chain
// (q4gsw/models/minilm/ops.py, mirrored: the same kernels, bindings, params words and override
// constants): the embedding sum, LayerNorm with the residual add fused in, exact-erf GELU,
// bidirectional attention with a padding mask, mean pooling with L2 normalization.

import { ShapeError } from "./errors.js";
import { ceilDiv } from "./kernels.js";
import { f32bits } from "./ops.js";

export const FAMILY = "encoder";
export const NORM_WG = 32;
export const GELU_WG = 256;
/** The most invocations an encoder_attention workgroup has (attentionWg picks fewer for short sequences). */
export const ATTENTION_WG = 64;
/** Keys a row of encoder_attention.wgsl can attend to (BERT's max_position_embeddings). */
export const MAX_KEYS = 512;
export const POOL_WG = 128;
export const EMBED_WG = 128;

/** Invocations of an encoder_attention workgroup (ops.py attention_wg): a power of two covering the keys, in [headDim / 4, ATTENTION_WG]. */
export function attentionWg(seq, headDim) {
  const pow2 = (v) => 2 ** Math.ceil(Math.log2(Math.max(1, v)));
  return Math.max(pow2(headDim / 4), Math.min(ATTENTION_WG, pow2(seq)));
}

const record = (chain, name, constants, buffers, workgroups) => chain.record(name, constants, buffers, workgroups, { family: FAMILY });
const last = (t) => t.shape[t.shape.length - 1];

/**
 * (B * T, dim): word[ids[r]] + tokenType[typeIds[r]] + position[r % seq], rows r = b * seq + t.
 * @param {Array<{n0: number, table: GpuTensor}>} wordChunks the word table's rows [n0, n0 + n), in order.
 */
export async function tokenEmbeddings(chain, ids, typeIds, wordChunks, position, tokenType, { seq }) {
  const fn = "token_embeddings";
  ids = chain.tensor(fn, "ids", ids, "uint32");
  typeIds = chain.tensor(fn, "type_ids", typeIds, "uint32");
  position = chain.tensor(fn, "position", position);
  tokenType = chain.tensor(fn, "token_type", tokenType);
  const dim = last(position);
  const rows = ids.size;
  if (dim % 4 || last(tokenType) !== dim) throw new ShapeError(fn, "token_type", `(types, ${dim}) with ${dim} % 4 == 0`, `[${tokenType.shape}]`);
  if (typeIds.size !== rows || rows % seq || position.shape[0] < seq) {
    throw new ShapeError(fn, "type_ids", `${rows} ids (B * ${seq}), positions >= ${seq}`, `[${typeIds.shape}], [${position.shape}]`);
  }
  const out = chain.output([rows, dim]);
  for (const { n0, table } of wordChunks) {
    if (last(chain.tensor(fn, "word_chunks", table)) !== dim) throw new ShapeError(fn, "word_chunks", `(n, ${dim}) tables`, `[${table.shape}]`);
    const params = chain.params([rows, dim, seq, n0, table.shape[0], 0, 0, 0]);
    await record(chain, "token_embeddings", [["WG", EMBED_WG]],
      [out.buffer, ids.buffer, typeIds.buffer, table.buffer, position.buffer, tokenType.buffer, params], rows);
  }
  return out;
}

/** LayerNorm(x + delta) (or of x when delta is null) per row: a new (rows, D) tensor. */
export async function layerNorm(chain, x, delta, weight, bias, { eps }) {
  const fn = "layer_norm";
  x = chain.tensor(fn, "x", x);
  const d = last(x);
  for (const [name, t] of [["weight", weight], ["bias", bias]]) {
    if (d % 4 || chain.tensor(fn, name, t).size !== d) throw new ShapeError(fn, name, `shape (${d},) with ${d} % 4 == 0`, `[${t.shape}]`);
  }
  if (delta !== null && chain.tensor(fn, "delta", delta).size !== x.size) throw new ShapeError(fn, "delta", `shape [${x.shape}]`, `[${delta.shape}]`);
  const rows = x.size / d;
  const out = chain.output([rows, d]);
  const params = chain.params([rows, d, f32bits(eps), 0]);
  await record(chain, "layer_norm", [["WG", NORM_WG], ["ADD", delta !== null]],
    [out.buffer, x.buffer, (delta ?? x).buffer, weight.buffer, bias.buffer, params], rows);
  return out;
}

/** 0.5 x (1 + erf(x / sqrt 2)) elementwise (gelu.wgsl: erf to ~1e-7). */
export async function gelu(chain, x) {
  x = chain.tensor("gelu", "x", x);
  const out = chain.output(x.shape);
  const params = chain.params([x.size, 0, 0, 0]);
  await record(chain, "gelu", [["WG", GELU_WG]], [out.buffer, x.buffer, params], ceilDiv(x.size, GELU_WG));
  return out;
}

/**
 * Bidirectional attention of q, k, v (B * T, heads * D) within each sequence of T = seq rows,
 * keys with mask (B, T) == 0 left out, scale 1/sqrt(D): (B * T, heads * D).
 */
export async function encoderAttention(chain, q, k, v, mask, { heads, seq }) {
  const fn = "encoder_attention";
  q = chain.tensor(fn, "q", q);
  const width = last(q);
  const rows = q.size / width;
  for (const [name, t] of [["k", k], ["v", v]]) {
    if (chain.tensor(fn, name, t).size !== q.size) throw new ShapeError(fn, name, `shape [${q.shape}] (q's)`, `[${t.shape}]`);
  }
  const d = width / heads;
  if (!Number.isInteger(d) || d % 4 || d > 4 * ATTENTION_WG) {
    throw new ShapeError(fn, "heads", `a divisor of q's width ${width} giving a head dim that is a multiple of 4 up to ${4 * ATTENTION_WG}`, String(heads));
  }
  if (!(seq >= 1 && seq <= MAX_KEYS) || rows % seq) throw new ShapeError(fn, "seq", `a divisor of the ${rows} rows, at most ${MAX_KEYS}`, String(seq));
  if (chain.tensor(fn, "mask", mask).size !== rows) throw new ShapeError(fn, "mask", `${rows} values (B x T)`, `[${mask.shape}]`);
  const out = chain.output(q.shape);
  const params = chain.params([rows, seq, f32bits(1 / Math.sqrt(d)), 0]);
  await record(chain, "encoder_attention", [["WG", attentionWg(seq, d)], ["HEADS", heads], ["D", d], ["MAX_KEYS", MAX_KEYS]],
    [out.buffer, q.buffer, k.buffer, v.buffer, mask.buffer, params], rows * heads);
  return out;
}

/** (B, dim): the mean of hidden (B * T, dim)'s rows over mask (B, T), L2-normalized. */
export async function meanPoolNormalize(chain, hidden, mask, { seq }) {
  const fn = "mean_pool_normalize";
  hidden = chain.tensor(fn, "hidden", hidden);
  const dim = last(hidden);
  const rows = hidden.size / dim;
  if (rows % seq) throw new ShapeError(fn, "seq", `a divisor of the ${rows} rows`, String(seq));
  if (chain.tensor(fn, "mask", mask).size !== rows) throw new ShapeError(fn, "mask", `${rows} values (B x T)`, `[${mask.shape}]`);
  const batch = rows / seq;
  const out = chain.output([batch, dim]);
  const params = chain.params([batch, seq, dim, 0]);
  await record(chain, "mean_pool_normalize", [["WG", POOL_WG]], [out.buffer, hidden.buffer, mask.buffer, params], batch);
  return out;
}
