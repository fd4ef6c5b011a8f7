// model.js: CausalLM, a Llama-family decoder held on the GPU (q4gsw/llm/model.py, mirrored):
// its forward recorded once as Chains and replayed one submit a token, the next token chosen
// on the GPU, one 4-byte read back per token. loadModel() builds one from a model bundle.

import { openBundle } from "./bundle.js";
import { Chain } from "./chain.js";
import { ArgumentError, BundleError, FeatureError, ShapeError, UnsupportedShapeError, describe } from "./errors.js";
import { checkActivations } from "./kernels.js";
import * as ops from "./ops.js";
import { createRuntime } from "./runtime.js";
import { Tokenizer } from "./tokenizer.js";

/** Keys per attention split in the decode step (one tile of attention.wgsl). */
export const DECODE_SPLIT_KEYS = ops.ATTENTION_WG;
/** KV-cache options (loadModel's kvCache) -> the caches' GpuTensor dtype (model.py kv_cache). */
export const KV_CACHES = Object.freeze({ f32: "float32", f16: "float16" });
/** Prompts of up to this many tokens (and the decode step) run decodeActivations: decode_int8's max M. */
export const DECODE_INT8_ROWS = 8;
/** Prefill chains kept, by prompt length. */
export const PREFILL_CHAINS = 2;
/** Mappable 4-byte buffers that tokens are read back through (steps in flight at most). */
const RING = 8;

/** What the last generate() took (wall clock), as q4gsw.llm.GenerateStats. */
export class GenerateStats {
  constructor(promptTokens = 0) {
    this.promptTokens = promptTokens;
    this.newTokens = 0;
    this.prefillSeconds = 0;  // prefill submit until the first new token is read back
    this.decodeSeconds = 0;  // from then until the last new token is read back
  }
  get prefillTokensPerSecond() { return this.prefillSeconds ? this.promptTokens / this.prefillSeconds : 0; }
  get decodeTokensPerSecond() {
    return this.decodeSeconds && this.newTokens > 1 ? (this.newTokens - 1) / this.decodeSeconds : 0;
  }
}

/** The sample.wgsl uniform {temperature, top_k, top_p, seed} of checked settings (llm/sampling.py). */
export function samplingWords(fn, { temperature = 0, topK = null, topP = null, seed = null } = {}, vocab) {
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  if (!isNum(temperature) || temperature < 0) throw new ArgumentError(fn, "temperature", "a finite number >= 0 (0: greedy)", describe(temperature));
  if (topK !== null && (!Number.isInteger(topK) || topK < 1)) throw new ArgumentError(fn, "topK", "null or an int >= 1", describe(topK));
  if (topP !== null && (!isNum(topP) || !(topP > 0 && topP <= 1))) throw new ArgumentError(fn, "topP", "null or a number in (0, 1]", describe(topP));
  if (seed !== null && (!Number.isInteger(seed) || seed < 0)) throw new ArgumentError(fn, "seed", "null or an int >= 0", describe(seed));
  if (temperature === 0 && (topK !== null || topP !== null || seed !== null)) {
    throw new ArgumentError(fn, "temperature", "> 0 when topK, topP or seed is given (0 is greedy)", String(temperature));
  }
  if (temperature === 0) return null;
  if (seed === null) seed = crypto.getRandomValues(new Uint32Array(1))[0];
  return Uint32Array.of(ops.f32bits(temperature), topK === null || topK >= vocab ? 0xFFFFFFFF : topK,
    ops.f32bits(topP === null ? 1 : topP), seed % 2 ** 32);
}

/** Each step's token copied to a mappable buffer in its own submit and mapped at once (llm/stream.py). */
class TokenStream {
  constructor(runtime, generated) {
    this.runtime = runtime;
    this.generated = generated;
    const usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    this.staging = Array.from({ length: RING }, () => runtime.device.createBuffer({ label: "llm/token", size: 4, usage }));
    this.pending = new Map();  // step -> map promise
  }
  async submit(chain, step) {
    const buf = this.staging[step % RING];
    await chain.submit(chain.commandBuffer({ copies: [[this.generated.buffer, 4 * step, buf, 0, 4]] }));
    const mapped = buf.mapAsync(GPUMapMode.READ);
    mapped.catch(() => {});  // awaited (and reported) by read()
    this.pending.set(step, mapped);
  }
  async read(step) {
    const mapped = this.pending.get(step);
    this.pending.delete(step);
    await this.runtime.guard(mapped);
    const buf = this.staging[step % RING];
    const token = new Uint32Array(buf.getMappedRange())[0];
    buf.unmap();
    return token;
  }
  async drain() {
    for (const step of [...this.pending.keys()]) await this.read(step).catch(() => {});
    for (const b of this.staging) b.destroy();
  }
}

/** A Llama-family decoder on the GPU: weights uploaded once, a KV cache of maxPositions. Made by loadModel(). */
export class CausalLM {
  constructor(runtime, bundle, { weights, tensors }, { maxPositions, kvCache = "f32", decodeActivations = "f32" }) {
    const c = bundle.manifest.model;
    kvCacheDtype("CausalLM", kvCache, runtime);
    checkActivations("CausalLM", "decodeActivations", decodeActivations);
    this.runtime = runtime;
    this.bundle = bundle;
    this.config = c;
    this.maxPositions = maxPositions;
    /** "f32" or "f16": how the KV cache stores K and V. */
    this.kvCache = kvCache;
    /** "f32" or "int8": how the decode step and prompts of up to DECODE_INT8_ROWS tokens run their linears. */
    this.decodeActivations = decodeActivations;
    this.lastStats = new GenerateStats();
    const tensor = (name) => {
      if (!tensors.has(name)) throw new BundleError(`manifest: tensor ${name} is missing`);
      return tensors.get(name);
    };
    const weight = (name) => {
      if (!weights.has(name)) throw new BundleError(`manifest: weight ${name} is missing`);
      return weights.get(name);
    };
    this.embed = weight("embed");
    this.lmHead = c.tie_word_embeddings ? this.embed : weight("lm_head");
    this.layers = Array.from({ length: c.num_layers }, (_, i) => ({
      qkv: weight(`layers.${i}.qkv`), o: weight(`layers.${i}.o`), gateUp: weight(`layers.${i}.gate_up`),
      down: weight(`layers.${i}.down`), attnNorm: tensor(`layers.${i}.attn_norm`), mlpNorm: tensor(`layers.${i}.mlp_norm`),
      qkvBias: c.qkv_bias ? tensor(`layers.${i}.qkv_bias`) : null, oBias: c.o_bias ? tensor(`layers.${i}.o_bias`) : null,
      window: c.windows[i] || 0,
    }));
    this.finalNorm = tensor("final_norm");
    this.cosSin = tensor("rope.cos_sin");
    const cache = [c.num_kv_heads, maxPositions, c.head_dim];
    this.kCache = this.layers.map(() => runtime.empty(cache, KV_CACHES[kvCache], "llm/k-cache"));
    this.vCache = this.layers.map(() => runtime.empty(cache, KV_CACHES[kvCache], "llm/v-cache"));
    const uniform = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;
    this.state = runtime.createBuffer(16, uniform, "llm/state");
    this.samplingParams = runtime.createBuffer(16, uniform, "llm/sampling");
    this.ids = runtime.empty([maxPositions], "uint32", "llm/ids");
    this.generated = runtime.empty([maxPositions], "uint32", "llm/generated");
    this._decode = new Map();  // greedy? -> {chain, logits}
    this._prefill = new Map();  // `${rows},${allLogits},${greedy}` -> {chain, logits}
    this._tokenizer = null;
  }

  /**
   * A chain of the whole forward over `rows` tokens at positions state.pos + t (ids[0:rows]);
   * with `choose` ({greedy}), the last row's next token goes to ids[0] and generated[state.step].
   * @returns {Promise<{chain: Chain, logits: GpuTensor}>} logits (rows or 1, vocab).
   */
  async record(rows, { allLogits, choose }) {
    const c = this.config;
    const decode = rows === 1 && !allLogits;
    const splits = decode ? Math.ceil(this.maxPositions / DECODE_SPLIT_KEYS) : 1;
    const chain = new Chain(this.runtime, { source: this.bundle, label: `llm/${decode ? "decode" : "prefill"}` });
    const activations = rows <= DECODE_INT8_ROWS ? this.decodeActivations : "f32";
    const linear = (x, weight, bias = null) => chain.linear(x, weight, { bias, activations });
    const eps = c.rms_norm_eps;
    const x = await ops.embedRows(chain, this.ids, this.embed, rows);
    let h = await ops.addRmsNorm(chain, x, null, this.layers[0].attnNorm, { eps });
    for (let i = 0; i < this.layers.length; i++) {
      const layer = this.layers[i];
      const qkv = await linear(h, layer.qkv, layer.qkvBias);
      const q = await ops.ropeKv(chain, qkv, this.cosSin, this.state, this.kCache[i], this.vCache[i],
        { qHeads: c.num_heads, kvHeads: c.num_kv_heads, headDim: c.head_dim });
      const a = await ops.attention(chain, q, this.kCache[i], this.vCache[i], this.state, { kvHeads: c.num_kv_heads,
        headDim: c.head_dim, splits, splitKeys: DECODE_SPLIT_KEYS, window: layer.window });
      h = await ops.addRmsNorm(chain, x, await linear(a, layer.o, layer.oBias), layer.mlpNorm, { eps });
      const d = await linear(await ops.swiglu(chain, await linear(h, layer.gateUp)), layer.down);
      const lastLayer = i === this.layers.length - 1;
      const norm = lastLayer ? this.finalNorm : this.layers[i + 1].attnNorm;
      h = await ops.addRmsNorm(chain, x, d, norm, { eps, firstRow: lastLayer && !allLogits ? rows - 1 : 0 });
    }
    const logits = await chain.linear(h, this.lmHead);  // f32 activations always, as model.py (exact logits)
    if (choose) {
      if (choose.greedy) await ops.argmax(chain, logits, this.ids, this.generated, this.state);
      else await ops.sample(chain, logits, this.ids, this.generated, this.state, this.samplingParams);
    }
    return { chain, logits };
  }

  /**
   * The prefill chain over `rows` tokens (recorded on first use; the last PREFILL_CHAINS kept).
   * @param {number} rows the prompt's length.
   * @param {{allLogits?: boolean, greedy?: boolean}} options allLogits: every row's logits
   *     and no token chosen (logits()); else the last row's next token, greedy or sampled.
   * @returns {Promise<{chain: Chain, logits: GpuTensor}>}
   */
  async prefillChain(rows, { allLogits = false, greedy = true } = {}) {
    const key = `${rows},${allLogits},${greedy}`;
    if (!this._prefill.has(key)) {
      while (this._prefill.size >= PREFILL_CHAINS) {
        const [oldest] = this._prefill.keys();
        const entry = this._prefill.get(oldest);
        this._prefill.delete(oldest);
        (await entry).chain.release();
      }
      this._prefill.set(key, this._remember(this._prefill, key, this.record(rows, { allLogits, choose: allLogits ? null : { greedy } })));
    }
    return this._prefill.get(key);
  }

  /** The decode step's chain (recorded, and its kernels compiled, on first use). */
  decodeChain(greedy = true) {
    if (!this._decode.has(greedy)) this._decode.set(greedy, this._remember(this._decode, greedy, this.record(1, { allLogits: false, choose: { greedy } })));
    return this._decode.get(greedy);
  }

  /** recording, forgotten from `cache` if it fails (so the next call records again). */
  _remember(cache, key, recording) {
    recording.catch(() => { if (cache.get(key) === recording) cache.delete(key); });
    return recording;
  }

  _setState(pos, step) {
    this.runtime.device.queue.writeBuffer(this.state, 0, Uint32Array.of(pos, step, 0, 0));
  }

  _checkPrompt(fn, inputIds, extra) {
    const ids = Array.from(inputIds ?? []);
    if (!ids.length || !ids.every((i) => Number.isInteger(i))) {
      throw new ShapeError(fn, "inputIds", "a non-empty array of token ids (ints)", describe(inputIds));
    }
    const vocab = this.config.vocab_size;
    if (ids.some((i) => i < 0 || i >= vocab)) {
      throw new ArgumentError(fn, "inputIds", `ids in [0, ${vocab})`, `ids in [${Math.min(...ids)}, ${Math.max(...ids)}]`);
    }
    if (ids.length + extra > this.maxPositions) {
      throw new ShapeError(fn, "inputIds", `prompt + new tokens <= maxPositions = ${this.maxPositions} (the KV cache; see loadModel's maxPositions)`,
        `${ids.length} + ${extra}`);
    }
    const padded = new Uint32Array(this.maxPositions);
    padded.set(ids);
    return { ids, padded };
  }

  /** (T, vocab) float32 logits of every position of one sequence (one forward, one submit). */
  async logits(inputIds) {
    const { ids, padded } = this._checkPrompt("CausalLM.logits", inputIds, 0);
    const { chain, logits } = await this.prefillChain(ids.length, { allLogits: true });
    this.ids.write(padded);
    this._setState(0, 0);
    await chain.run();
    return logits.read();
  }

  /**
   * Generate up to maxNewTokens after the prompt; resolves with the new ids (model.py generate).
   *
   * The prompt runs as one prefill submit; then one submit a token, each choosing the next
   * token on the GPU (greedy when temperature is 0, else sampled), each read back as 4 bytes.
   * Step s + 1 is queued before token s is read, so the GPU never waits for the page.
   * @param {number[]|Uint32Array} inputIds the prompt's token ids.
   * @param {number} maxNewTokens >= 1.
   * @param {{temperature?: number, topK?: number|null, topP?: number|null, seed?: number|null,
   *     onToken?: (id: number, index: number) => void, eosTokenIds?: number[]}} options
   *     eosTokenIds: stop after one of these (default: the config's; [] never stops early).
   */
  async generate(inputIds, maxNewTokens, { temperature = 0, topK = null, topP = null, seed = null, onToken = null,
    eosTokenIds = null } = {}) {
    const fn = "CausalLM.generate";
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new ArgumentError(fn, "maxNewTokens", "an int >= 1", describe(maxNewTokens));
    const { ids, padded } = this._checkPrompt(fn, inputIds, maxNewTokens);
    const words = samplingWords(fn, { temperature, topK, topP, seed }, this.config.vocab_size);
    const greedy = words === null;
    const stop = new Set(eosTokenIds ?? this.config.eos_token_ids);
    const rt = this.runtime;
    rt.checkAlive();
    const stats = this.lastStats = new GenerateStats(ids.length);
    const prefill = (await this.prefillChain(ids.length, { greedy })).chain;
    const decode = maxNewTokens > 1 ? (await this.decodeChain(greedy)).chain : null;
    if (!greedy) rt.device.queue.writeBuffer(this.samplingParams, 0, words);
    this.ids.write(padded);
    const stream = new TokenStream(rt, this.generated);
    const out = [];
    try {
      let t0 = performance.now();
      this._setState(0, 0);
      await stream.submit(prefill, 0);
      for (let step = 1; step <= maxNewTokens; step++) {
        if (step < maxNewTokens) {  // queue step `step` before reading token step - 1
          this._setState(ids.length + step - 1, step);
          await stream.submit(decode, step);
        }
        const token = await stream.read(step - 1);
        if (step === 1) {
          stats.prefillSeconds = (performance.now() - t0) / 1000;
          t0 = performance.now();
        }
        out.push(token);
        if (onToken) onToken(token, out.length - 1);
        if (stop.has(token)) break;
      }
      stats.newTokens = out.length;
      stats.decodeSeconds = (performance.now() - t0) / 1000;
    } finally {
      await stream.drain();
    }
    return out;
  }

  /** The bundle's tokenizer (tokenizer.json), or null; loaded on first use. */
  async tokenizer() {
    if (this._tokenizer === null && this.bundle.manifest.tokenizer) {
      const meta = this.bundle.manifest.tokenizer;
      const bytes = await this.bundle.fetchFile(meta.file, meta);
      this._tokenizer = Tokenizer.fromJSON(JSON.parse(new TextDecoder().decode(bytes)));
    }
    return this._tokenizer;
  }

  /** Bytes of KV cache a position takes: K and V of every layer's kv heads (halved by kvCache "f16"). */
  get kvCacheBytesPerToken() {
    const c = this.config;
    return 2 * c.num_layers * c.num_kv_heads * c.head_dim * (this.kvCache === "f16" ? 2 : 4);
  }

  /** Free the chains, caches and weights' GPU buffers now. */
  async release() {
    for (const entry of [...this._decode.values(), ...this._prefill.values()]) (await entry).chain.release();
    this._decode.clear();
    this._prefill.clear();
    for (const t of [...this.kCache, ...this.vCache, this.ids, this.generated]) t.release();
    this.state.destroy();
    this.samplingParams.destroy();
    for (const w of new Set([this.embed, this.lmHead, ...this.layers.flatMap((l) => [l.qkv, l.o, l.gateUp, l.down])])) w.release();
  }
}

/**
 * The KV cache's GpuTensor dtype for the option kvCache ("f32" or "f16"), checked against the
 * runtime's device: "f16" needs `shader-f16` (FeatureError otherwise, before any buffer exists).
 */
export function kvCacheDtype(fn, kvCache, runtime = null) {
  if (!Object.hasOwn(KV_CACHES, kvCache)) throw new ArgumentError(fn, "kvCache", "\"f32\" or \"f16\"", describe(kvCache));
  if (kvCache === "f16" && runtime && !runtime.caps.features.has("shader-f16")) {
    const name = [runtime.caps.adapter.vendor, runtime.caps.adapter.architecture].filter(Boolean).join(" ") || "this adapter";
    throw new FeatureError(fn, "kvCache", `"f32" on this device ("f16" stores the cache as WGSL f16, which needs the `
      + `WebGPU feature shader-f16; ${name} does not offer it, or disableFeatures turned it off)`, "\"f16\"", "shader-f16");
  }
  return KV_CACHES[kvCache];
}

/**
 * Load a model bundle (`q4gsw export-web --model`) onto the GPU (ready to generate: the
 * decode step is recorded and its kernels compiled).
 * @param {string|URL} base the bundle folder's URL.
 * @param {{runtime?: Runtime, maxPositions?: number, cache?: boolean|string, kvCache?: "f32"|"f16",
 *     decodeActivations?: "f32"|"int8",
 *     onProgress?: (p: {phase: "fetch"|"compile", loaded?: number, total?: number, file?: string}) => void}} options
 *     maxPositions: the KV cache's positions (prompt + new tokens), at most the bundle's
 *     (its RoPE table); cache: the Cache API cache files are kept in (see openBundle);
 *     kvCache: "f32" (default) or "f16" (K and V stored in half precision, read into f32
 *     arithmetic: half the cache's memory and reads; needs `shader-f16`, else FeatureError
 *     before anything is fetched); decodeActivations: "f32" (default) or "int8" (the decode
 *     step's linears, and those of prompts of up to DECODE_INT8_ROWS tokens, quantize x to
 *     int8 per 32 k inside decode_int8: Python's decode_activations="int8"; Python also runs
 *     prompts of 9-15 tokens with int8 GEMMs, which q4gsw.js does not have: f32 here).
 * @returns {Promise<CausalLM>}
 */
export async function loadModel(base, { runtime = null, maxPositions = null, cache = true, kvCache = "f32",
  decodeActivations = "f32", onProgress = () => {} } = {}) {
  const fn = "loadModel";
  kvCacheDtype(fn, kvCache);
  checkActivations(fn, "decodeActivations", decodeActivations);
  const bundle = await openBundle(base, { cache });
  if (bundle.kind !== "model") throw new BundleError(`loadModel reads a "model" bundle; this one holds ${bundle.kind} (use loadBundle)`);
  const c = bundle.manifest.model;
  const table = c.max_positions;
  maxPositions = maxPositions ?? table;
  if (!Number.isInteger(maxPositions) || maxPositions < 1 || maxPositions > table) {
    throw new ArgumentError(fn, "maxPositions", `an int in [1, ${table}] (the bundle's RoPE table; export with --max-positions for more)`, describe(maxPositions));
  }
  if (c.hidden_size % 4 || c.head_dim % 4 || c.head_dim > 4 * ops.ATTENTION_WG || c.num_heads > 8 * c.num_kv_heads) {
    throw new UnsupportedShapeError(`${c.architecture}: hidden ${c.hidden_size}, head_dim ${c.head_dim}, ${c.num_heads}/${c.num_kv_heads} heads: `
      + `the kernels need hidden and head_dim multiples of 4, head_dim <= ${4 * ops.ATTENTION_WG} and at most 8 query heads per kv head`);
  }
  runtime = runtime || await createRuntime();
  kvCacheDtype(fn, kvCache, runtime);
  const data = await bundle.loadData({ runtime, onProgress: (p) => onProgress({ phase: "fetch", ...p }) });
  const model = new CausalLM(runtime, bundle, data, { maxPositions, kvCache, decodeActivations });
  onProgress({ phase: "compile" });
  await model.decodeChain(true);
  return model;
}
