// ops.js: the decoder's ops besides the int4 linear, recorded into a Chain (q4gsw/llm/ops.py,
// mirrored: the same kernels, bindings, params words and override constants): embedding rows,
// residual add + RMSNorm, RoPE with the KV-cache write, attention over the cache, SwiGLU, and
// the choice of the next token (greedy, or sampled with temperature / top-k / top-p). The KV
// cache is float32, or float16 where the device has `shader-f16`: rope_kv and attention join
// kv_f32.wgsl or kv_f16.wgsl before their own file.

import { DTypeError, FeatureError, ShapeError } from "./errors.js";
import { ceilDiv } from "./kernels.js";

export const FAMILY = "llm";
export const NORM_WG = 256;
export const ROPE_WG = 64;
export const ATTENTION_WG = 64;  // keys per tile
export const COMBINE_WG = 128;
export const ELEMENTWISE_WG = 256;
export const ARGMAX_WG = 256;
export const ARGMAX_CHUNK = 4096;  // logits per argmax_partial workgroup

/** The bits of x rounded to float32, as a u32 (np.float32(x).view(np.uint32)). */
export function f32bits(x) {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

/** The cache's GpuTensor dtype -> the file joined before rope_kv.wgsl and attention.wgsl. */
export const KV_FILES = Object.freeze({ float32: "kv_f32", float16: "kv_f16" });

const record = (chain, name, constants, buffers, workgroups, files = null) =>
  chain.record(name, constants, buffers, workgroups, { family: FAMILY, files });

/** kv_f32 or kv_f16 for caches of one dtype on the chain's device (DTypeError, or FeatureError without shader-f16). */
function kvFile(chain, fn, kCache, vCache) {
  for (const [name, t] of [["kCache", kCache], ["vCache", vCache]]) chain.tensor(fn, name, t, t && t.dtype in KV_FILES ? t.dtype : "float32");
  if (vCache.dtype !== kCache.dtype) throw new DTypeError(fn, "vCache", `a ${kCache.dtype} GpuTensor (as kCache)`, `a ${vCache.dtype} one`);
  if (kCache.dtype === "float16" && !chain.runtime.caps.features.has("shader-f16")) {
    throw new FeatureError(fn, "kCache", "a float32 cache on this device (float16 needs the WebGPU feature shader-f16)", "a float16 one", "shader-f16");
  }
  return KV_FILES[kCache.dtype];
}
const last = (t) => t.shape[t.shape.length - 1];

/** (tokens, K) float32: row ids[idsOffset + t] of the int4 table (vocab, K) (a GpuWeight), dequantized. */
export async function embedRows(chain, ids, table, tokens, { idsOffset = 0 } = {}) {
  const fn = "embed_rows";
  ids = chain.tensor(fn, "ids", ids, "uint32");
  if (idsOffset + tokens > ids.size) throw new ShapeError(fn, "ids", `at least ${idsOffset + tokens} ids`, `${ids.size}`);
  const k = table.inFeatures;
  const out = chain.output([tokens, k]);
  for (const chunk of table.chunks) {
    const params = chain.params([tokens, k, Math.floor((k + 1) / 2), Math.min(table.groupSize, k), chunk.scaleStride,
      chunk.n0, chunk.n, idsOffset]);
    await record(chain, "embed_rows", [["WG", 256]], [out.buffer, ids.buffer, chunk.weights, chunk.scales, params], tokens);
  }
  return out;
}

/**
 * x += delta (in place, when delta is given), then RMSNorm of x's rows [firstRow, rows): a
 * new (rows - firstRow, D) tensor x / sqrt(mean(x^2) + eps) * weight.
 */
export async function addRmsNorm(chain, x, delta, weight, { eps, firstRow = 0 }) {
  const fn = "add_rms_norm";
  x = chain.tensor(fn, "x", x);
  weight = chain.tensor(fn, "weight", weight);
  const d = last(x);
  const rows = x.size / d;
  if (d % 4 || weight.size !== d) throw new ShapeError(fn, "weight", `shape (${d},) with ${d} % 4 == 0`, `[${weight.shape}]`);
  if (delta !== null && chain.tensor(fn, "delta", delta).size !== x.size) throw new ShapeError(fn, "delta", `shape [${x.shape}]`, `[${delta.shape}]`);
  if (!(firstRow >= 0 && firstRow < rows)) throw new ShapeError(fn, "first_row", `a row of x in [0, ${rows})`, String(firstRow));
  const out = chain.output([rows - firstRow, d]);
  const params = chain.params([rows, d, f32bits(eps), firstRow]);
  await record(chain, "add_rms_norm", [["WG", NORM_WG], ["ADD", delta !== null]],
    [out.buffer, x.buffer, delta !== null ? delta.buffer : weight.buffer, weight.buffer, params], rows - firstRow);
  return out;
}

/**
 * RoPE on the q and k heads of qkv (rows, (qHeads + 2 kvHeads) * headDim) at positions
 * state.pos + t; k and v go into the caches (kvHeads, maxPositions, headDim; float32, or
 * float16: rounded as written). Returns q (rows, qHeads * headDim), rotated.
 */
export async function ropeKv(chain, qkv, cosSin, state, kCache, vCache, { qHeads, kvHeads, headDim }) {
  const fn = "rope_kv";
  qkv = chain.tensor(fn, "qkv", qkv);
  const width = (qHeads + 2 * kvHeads) * headDim;
  if (last(qkv) !== width) throw new ShapeError(fn, "qkv", `(..., ${width})`, `[${qkv.shape}]`);
  const rows = qkv.size / width;
  const kv = kvFile(chain, fn, kCache, vCache);
  const maxPositions = kCache.shape[1];
  const q = chain.output([rows, qHeads * headDim]);
  const params = chain.params([rows, maxPositions, 0, 0]);
  await record(chain, "rope_kv", [["WG", ROPE_WG], ["Q_HEADS", qHeads], ["KV_HEADS", kvHeads], ["D", headDim]],
    [q.buffer, kCache.buffer, vCache.buffer, qkv.buffer, cosSin.buffer, state, params], rows * (qHeads + 2 * kvHeads),
    [kv, "rope_kv"]);
  return q;
}

/**
 * Causal grouped-query attention of q (rows, qHeads * headDim) at positions state.pos + t over
 * the caches, scale 1/sqrt(headDim), keys within `window` when > 0. splits > 1 (decode): keys
 * split over workgroups of splitKeys each, merged by attention_combine.
 */
export async function attention(chain, q, kCache, vCache, state, { kvHeads, headDim, splits = 1, splitKeys = ATTENTION_WG, window = 0 }) {
  const fn = "attention";
  q = chain.tensor(fn, "q", q);
  const width = last(q);
  const rows = q.size / width;
  const qHeads = width / headDim;
  const group = qHeads / kvHeads;
  if (headDim % 4 || headDim > 4 * ATTENTION_WG || !Number.isInteger(group) || group > 8) {
    throw new ShapeError(fn, "head_dim", `a multiple of 4 up to ${4 * ATTENTION_WG}, with at most 8 query heads per kv head`,
      `${headDim} (${qHeads} q heads, ${kvHeads} kv heads)`);
  }
  const kv = kvFile(chain, fn, kCache, vCache);
  const maxPositions = kCache.shape[1];
  const params = chain.params([rows, maxPositions, f32bits(1 / Math.sqrt(headDim)), 0]);
  const constants = [["WG", ATTENTION_WG], ["G", group], ["D", headDim], ["KV_HEADS", kvHeads]];
  const out = chain.output([rows, width]);
  const tail = [["SPLITS", splits], ["SPLIT_KEYS", splitKeys], ["WINDOW", window]];
  if (splits === 1) {
    const stats = chain.output([1, 2]);  // bound, never written
    await record(chain, "attention", [...constants, ...tail],
      [out.buffer, stats.buffer, q.buffer, kCache.buffer, vCache.buffer, state, params], rows * kvHeads, [kv, "attention"]);
    return out;
  }
  const partial = chain.output([rows * kvHeads * splits * group, headDim]);
  const stats = chain.output([rows * kvHeads * splits * group, 2]);
  await record(chain, "attention", [...constants, ...tail],
    [partial.buffer, stats.buffer, q.buffer, kCache.buffer, vCache.buffer, state, params], rows * kvHeads * splits,
    [kv, "attention"]);
  await record(chain, "attention_combine", [["WG", COMBINE_WG], ["G", group], ["D", headDim], ["KV_HEADS", kvHeads],
    ["SPLITS", splits], ["SPLIT_KEYS", splitKeys]], [out.buffer, partial.buffer, stats.buffer, state, params], rows * qHeads);
  return out;
}

/** silu(gate) * up for gateUp (rows, 2F) = [gate | up] per row: (rows, F). */
export async function swiglu(chain, gateUp) {
  const fn = "swiglu";
  gateUp = chain.tensor(fn, "gate_up", gateUp);
  if (last(gateUp) % 2) throw new ShapeError(fn, "gate_up", "an even last dimension (gate then up)", `[${gateUp.shape}]`);
  const f = last(gateUp) / 2;
  const out = chain.output([...gateUp.shape.slice(0, -1), f]);
  const params = chain.params([out.size, f, 0, 0]);
  await record(chain, "swiglu", [["WG", ELEMENTWISE_WG]], [out.buffer, gateUp.buffer, params], ceilDiv(out.size, ELEMENTWISE_WG));
  return out;
}

/** The greedy next token: argmax of logits[row] (ties: the smallest index), to ids[0] and generated[state.step]. */
export async function argmax(chain, logits, ids, generated, state, { row = -1 } = {}) {
  const fn = "argmax";
  logits = chain.tensor(fn, "logits", logits);
  const vocab = last(logits);
  const rows = logits.size / vocab;
  row = ((row % rows) + rows) % rows;
  const parts = ceilDiv(vocab, ARGMAX_CHUNK);
  const best = chain.output([parts, 2], "uint32");
  const params = chain.params([vocab, ARGMAX_CHUNK, row * vocab, 0]);
  await record(chain, "argmax_partial", [["WG", ARGMAX_WG]], [best.buffer, logits.buffer, params], parts);
  const final = chain.params([parts, generated.size, 0, 0]);
  await record(chain, "argmax_final", [["WG", ARGMAX_WG]], [chain.tensor(fn, "ids", ids, "uint32").buffer,
    chain.tensor(fn, "generated", generated, "uint32").buffer, best.buffer, state, final], 1);
}

/** The next token drawn from logits[row] as sample.wgsl describes (the uniform `samplingParams`), to ids[0] and generated[state.step]. */
export async function sample(chain, logits, ids, generated, state, samplingParams, { row = -1 } = {}) {
  const fn = "sample";
  logits = chain.tensor(fn, "logits", logits);
  const vocab = last(logits);
  const rows = logits.size / vocab;
  row = ((row % rows) + rows) % rows;
  const params = chain.params([vocab, row * vocab, generated.size, 0]);
  await record(chain, "sample", [["WG", 256]], [chain.tensor(fn, "ids", ids, "uint32").buffer,
    chain.tensor(fn, "generated", generated, "uint32").buffer, logits.buffer, state, samplingParams, params], 1);
}
