// minilm.js: SentenceEncoder, all-MiniLM-L6-v2 (a BERT encoder with mean pooling and L2
// normalization) held on the GPU (q4gsw/models/minilm/gpu.py GpuEncoder, mirrored): its
// forward recorded once per batch shape as a Chain and replayed in one submit per batch; a
// batch reads back its embeddings alone. loadSentenceEncoder() builds one from an "encoder"
// bundle (`q4gsw export-web OUT --model minilm`).

import { openBundle } from "./bundle.js";
import { Chain } from "./chain.js";
import { GpuDenseWeight, denseLinear } from "./dense.js";
import * as ops from "./encoder_ops.js";
import { ArgumentError, BundleError, ShapeError, describe } from "./errors.js";
import { createRuntime } from "./runtime.js";
import { WordPieceTokenizer } from "./wordpiece.js";

/** Chains kept, by batch shape (B, T). */
export const CHAINS = 2;
/** The linears of one encoder layer, as model.safetensors names them (without "encoder.layer.i."). */
export const LAYER_LINEARS = Object.freeze(["attention.self.query", "attention.self.key", "attention.self.value",
  "attention.output.dense", "intermediate.dense", "output.dense"]);

/** What the last encode() took (wall clock). */
export class EncodeStats {
  constructor(sentences = 0, tokens = 0) {
    this.sentences = sentences;
    this.tokens = tokens;  // B x T, padding included
    this.seconds = 0;  // tokenize, submit and read back (recording excluded)
    this.recordSeconds = 0;  // recording the chain and compiling its kernels (0 when replayed)
    this.recorded = false;  // whether this call recorded a chain (a batch shape not seen before)
  }
  get sentencesPerSecond() { return this.seconds ? this.sentences / this.seconds : 0; }
}

/** all-MiniLM-L6-v2 on the GPU. Made by loadSentenceEncoder(). */
export class SentenceEncoder {
  constructor(runtime, bundle, { weights, tensors }, { linearKernel = null } = {}) {
    const c = bundle.manifest.model;
    this.runtime = runtime;
    /** The int4 linears' kernel by name (e.g. "tiled"), or null: chosen by the bundle's cost model. */
    this.linearKernel = linearKernel;
    this.bundle = bundle;
    this.config = c;
    this.lastStats = new EncodeStats();
    const tensor = (name) => {
      if (!tensors.has(name)) throw new BundleError(`manifest: tensor ${name} is missing`);
      return tensors.get(name);
    };
    this.word = c.word_embeddings.map(({ tensor: name, n0 }) => ({ n0, table: tensor(name) }));
    this.position = tensor("embeddings.position_embeddings.weight");
    this.tokenType = tensor("embeddings.token_type_embeddings.weight");
    this.norms = new Map();
    const norms = ["embeddings.LayerNorm"];
    for (let i = 0; i < c.num_layers; i++) norms.push(`encoder.layer.${i}.attention.output.LayerNorm`, `encoder.layer.${i}.output.LayerNorm`);
    for (const n of norms) this.norms.set(n, [tensor(`${n}.weight`), tensor(`${n}.bias`)]);
    this.linears = new Map();
    for (const name of this.linearNames) {
      const dense = c.dense[name];
      const weight = dense ? new GpuDenseWeight({ outFeatures: dense.N, inFeatures: dense.K, dtype: dense.dtype,
        chunks: dense.chunks.map((ch) => ({ n0: ch.n0, n: ch.n, weights: tensor(ch.tensor) })) }) : weights.get(name);
      if (!weight) throw new BundleError(`manifest: weight ${name} is missing`);
      this.linears.set(name, { weight, dense: Boolean(dense), bias: tensor(`${name}.bias`) });
    }
    this._chains = new Map();  // `${batch},${seq}` -> Promise<{chain, ids, typeIds, mask, embeddings}>
    this._tokenizer = null;
  }

  /** Every linear's name, in the order the forward runs them. */
  get linearNames() {
    const names = [];
    for (let i = 0; i < this.config.num_layers; i++) for (const l of LAYER_LINEARS) names.push(`encoder.layer.${i}.${l}`);
    return names;
  }

  /** The longest sequence (in tokens, [CLS] and [SEP] included) a batch may have. */
  get maxTokens() { return Math.min(this.config.max_seq_length, this.config.max_position_embeddings, ops.MAX_KEYS); }

  async _linear(chain, name, x) {
    const { weight, dense, bias } = this.linears.get(name);
    return dense ? denseLinear(chain, x, weight, { bias }) : chain.linear(x, weight, { bias, kernel: this.linearKernel });
  }

  /**
   * The forward over `batch` sequences of `seq` tokens as one Chain (gpu.py GpuEncoder.record).
   * @returns {Promise<{chain: Chain, ids: GpuTensor, typeIds: GpuTensor, mask: GpuTensor, embeddings: GpuTensor}>}
   *     inputs ids / typeIds ((B * T) uint32) and mask ((B, T) float32) to write; embeddings (B, hidden).
   */
  async record(batch, seq) {
    const c = this.config;
    if (!Number.isInteger(seq) || seq < 1 || seq > this.maxTokens) throw new ShapeError("SentenceEncoder.record", "seq", `1 .. ${this.maxTokens} tokens`, describe(seq));
    const chain = new Chain(this.runtime, { source: this.bundle, label: "minilm/encode" });
    const ids = chain.output([batch * seq], "uint32");
    const typeIds = chain.output([batch * seq], "uint32");
    const mask = chain.output([batch, seq]);
    const eps = c.layer_norm_eps;
    const x = await ops.tokenEmbeddings(chain, ids, typeIds, this.word, this.position, this.tokenType, { seq });
    let h = await ops.layerNorm(chain, x, null, ...this.norms.get("embeddings.LayerNorm"), { eps });
    for (let i = 0; i < c.num_layers; i++) {
      const p = `encoder.layer.${i}.`;
      const q = await this._linear(chain, `${p}attention.self.query`, h);
      const k = await this._linear(chain, `${p}attention.self.key`, h);
      const v = await this._linear(chain, `${p}attention.self.value`, h);
      const a = await ops.encoderAttention(chain, q, k, v, mask, { heads: c.num_heads, seq });
      h = await ops.layerNorm(chain, await this._linear(chain, `${p}attention.output.dense`, a), h,
        ...this.norms.get(`${p}attention.output.LayerNorm`), { eps });
      const inner = await ops.gelu(chain, await this._linear(chain, `${p}intermediate.dense`, h));
      h = await ops.layerNorm(chain, await this._linear(chain, `${p}output.dense`, inner), h, ...this.norms.get(`${p}output.LayerNorm`), { eps });
    }
    const embeddings = await ops.meanPoolNormalize(chain, h, mask, { seq });
    return { chain, ids, typeIds, mask, embeddings };
  }

  /** The chain for a batch shape (recorded on first use; the last CHAINS kept). */
  chainFor(batch, seq) {
    const key = `${batch},${seq}`;
    if (!this._chains.has(key)) {
      while (this._chains.size >= CHAINS) {
        const [oldest] = this._chains.keys();
        const entry = this._chains.get(oldest);
        this._chains.delete(oldest);
        entry.then((e) => e.chain.release(), () => {});
      }
      const recording = this.record(batch, seq);
      recording.catch(() => { if (this._chains.get(key) === recording) this._chains.delete(key); });
      this._chains.set(key, recording);
    }
    return this._chains.get(key);
  }

  /** The bundle's WordPiece tokenizer (tokenizer.json, truncating at max_seq_length); loaded on first use. */
  async tokenizer() {
    if (this._tokenizer === null) {
      const meta = this.bundle.manifest.tokenizer;
      if (!meta) throw new BundleError("manifest: the encoder bundle has no tokenizer");
      const bytes = await this.bundle.fetchFile(meta.file, meta);
      this._tokenizer = WordPieceTokenizer.fromJSON(JSON.parse(new TextDecoder().decode(bytes)), { maxLength: this.config.max_seq_length });
    }
    return this._tokenizer;
  }

  /**
   * Sentence embeddings of token ids (sentences tokenized already): padded to the longest,
   * one submit, one read back.
   * @param {number[][]} tokenIds each a non-empty array of ids (with [CLS] ... [SEP]).
   * @returns {Promise<Float32Array[]>} one unit-norm (hidden,) embedding per sentence.
   */
  async encodeIds(tokenIds) {
    const fn = "SentenceEncoder.encodeIds";
    const vocab = this.config.vocab_size;
    if (!Array.isArray(tokenIds) || !tokenIds.length || !tokenIds.every((ids) => (Array.isArray(ids) || ids instanceof Uint32Array) && ids.length)) {
      throw new ShapeError(fn, "tokenIds", "a non-empty array of non-empty id arrays", describe(tokenIds));
    }
    for (const ids of tokenIds) {
      for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new ArgumentError(fn, "tokenIds", `ids in [0, ${vocab})`, describe(id));
    }
    const batch = tokenIds.length;
    const seq = Math.max(...tokenIds.map((ids) => ids.length));
    if (seq > this.maxTokens) throw new ShapeError(fn, "tokenIds", `sequences of at most ${this.maxTokens} tokens`, `one of ${seq}`);
    const stats = new EncodeStats(batch, batch * seq);
    stats.recorded = !this._chains.has(`${batch},${seq}`);
    let t0 = performance.now();
    const { chain, ids, typeIds, mask, embeddings } = await this.chainFor(batch, seq);
    stats.recordSeconds = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const idWords = new Uint32Array(batch * seq);  // [PAD] = 0 past each sentence, type 0
    const maskValues = new Float32Array(batch * seq);
    tokenIds.forEach((row, b) => { idWords.set(row, b * seq); maskValues.fill(1, b * seq, b * seq + row.length); });
    ids.write(idWords);
    typeIds.write(new Uint32Array(batch * seq));
    mask.write(maskValues);
    await chain.run();
    const flat = await embeddings.read();
    stats.seconds = (performance.now() - t0) / 1000;
    this.lastStats = stats;
    const dim = this.config.hidden_size;
    return Array.from({ length: batch }, (_, b) => flat.slice(b * dim, (b + 1) * dim));
  }

  /**
   * Sentence embeddings (sentence-transformers' model.encode(sentences, normalize)): the
   * sentences tokenized with the bundle's tokenizer, then encodeIds().
   * @param {string[]} sentences
   * @returns {Promise<{embeddings: Float32Array[], ids: number[][]}>}
   */
  async encode(sentences) {
    if (!Array.isArray(sentences) || !sentences.length || !sentences.every((s) => typeof s === "string")) {
      throw new ArgumentError("SentenceEncoder.encode", "sentences", "a non-empty array of strings", describe(sentences));
    }
    const tokenizer = await this.tokenizer();
    const t0 = performance.now();
    const ids = sentences.map((s) => tokenizer.encode(s));
    const tokenizeSeconds = (performance.now() - t0) / 1000;
    const embeddings = await this.encodeIds(ids);
    this.lastStats.seconds += tokenizeSeconds;
    return { embeddings, ids };
  }

  /** Free the chains and the weights' GPU buffers now. */
  async release() {
    for (const entry of this._chains.values()) (await entry).chain.release();
    this._chains.clear();
    for (const { weight, bias } of this.linears.values()) { weight.release(); bias.release(); }
    for (const [w, b] of this.norms.values()) { w.release(); b.release(); }
    for (const { table } of this.word) table.release();
    this.position.release();
    this.tokenType.release();
  }
}

/** cos(a, b) of two vectors (for unit embeddings: their dot product). */
export function cosineSimilarity(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

/**
 * Load an encoder bundle (`q4gsw export-web OUT --model minilm`) onto the GPU.
 * @param {string|URL} base the bundle folder's URL.
 * @param {{runtime?: Runtime, cache?: boolean|string, linearKernel?: string|null,
 *     onProgress?: (p: {phase: "fetch"|"compile", loaded?: number, total?: number, file?: string}) => void}} options
 *     cache: the Cache API cache files are kept in (see openBundle); linearKernel: run the int4
 *     linears on this kernel (e.g. "tiled": on SwiftShader 4-17x faster than the cost model's
 *     H100-fitted choice at these M) instead of the routed one.
 * @returns {Promise<SentenceEncoder>} ready to encode (a one-sentence chain recorded, its kernels compiled).
 */
export async function loadSentenceEncoder(base, { runtime = null, cache = true, linearKernel = null, onProgress = () => {} } = {}) {
  const bundle = await openBundle(base, { cache });
  if (bundle.kind !== "encoder") throw new BundleError(`loadSentenceEncoder reads an "encoder" bundle; this one holds ${bundle.kind}`);
  runtime = runtime || await createRuntime();
  const data = await bundle.loadData({ runtime, onProgress: (p) => onProgress({ phase: "fetch", ...p }) });
  const encoder = new SentenceEncoder(runtime, bundle, data, { linearKernel });
  onProgress({ phase: "compile" });
  await encoder.chainFor(1, 8);
  return encoder;
}
