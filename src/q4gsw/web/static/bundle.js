// bundle.js: reading a bundle written by `q4gsw export-web`: its manifest, its kernels, and
// its data files -- fetched as streams with progress, each checked against the manifest's
// size and sha256, kept in the browser's Cache API -- turned into GPU buffers (or, without a
// runtime, typed arrays) as each file arrives.

import { BundleError, IntegrityError, SizeLimitError } from "./errors.js";
import { GpuTensor, GpuWeight, PackedWeight } from "./tensor.js";

export const FORMAT = "q4gsw-web";
export const VERSION = 2;
/** The Cache API cache that holds bundle files (keyed by URL, checked by sha256 on every read). */
export const CACHE_NAME = "q4gsw-bundles";
/** Data files fetched at once. */
const CONCURRENCY = 2;

/** Lower-case hex sha256 of bytes (crypto.subtle: a secure context, which 127.0.0.1 is). */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A bundle's manifest and files; open one with openBundle() or loadBundle(). */
export class Bundle {
  constructor(manifest, baseUrl, cache) {
    this.manifest = manifest;
    this.baseUrl = baseUrl;
    /** The Cache (Cache API) files are kept in, or null. */
    this.cache = cache;
    /** Layers of a "layers" bundle (loadBundle): name -> {name, weight, bias}. */
    this.layers = new Map();
    this._texts = new Map();
  }

  get kind() { return this.manifest.kind; }

  /** The layer `name` of a "layers" bundle: {name, weight: PackedWeight|GpuWeight, bias}. */
  layer(name) {
    const layer = this.layers.get(name);
    if (!layer) throw new BundleError(`no layer ${JSON.stringify(name)}; the bundle has ${[...this.layers.keys()].join(", ")}`);
    return layer;
  }

  /** The text of q4gsw/kernels/<stem>.wgsl as the bundle holds it (fetched and checked once). */
  kernelText(stem) {
    if (!this._texts.has(stem)) {
      const meta = this.manifest.kernels[stem];
      if (!meta) return Promise.reject(new BundleError(`kernel file ${stem}.wgsl is not in the manifest`));
      this._texts.set(stem, this.fetchFile(meta.file, meta).then((b) => new TextDecoder().decode(b)));
    }
    return this._texts.get(stem);
  }

  /**
   * The bytes of a bundle file, checked against meta {nbytes, sha256}: from the cache when it
   * holds them intact, else fetched as a stream (onBytes(n, fromCache) per piece) and cached.
   * @returns {Promise<Uint8Array>} or throws IntegrityError (size or sha256) / BundleError (HTTP).
   */
  async fetchFile(path, meta, { onBytes = () => {} } = {}) {
    const url = new URL(path, this.baseUrl).href;
    if (this.cache) {
      const hit = await this.cache.match(url);
      if (hit) {
        const bytes = new Uint8Array(await hit.arrayBuffer());
        if (bytes.length === meta.nbytes && await sha256Hex(bytes) === meta.sha256) {
          onBytes(bytes.length, true);
          return bytes;
        }
        await this.cache.delete(url);  // stale (an earlier export) or damaged: fetch it again
      }
    }
    let response;
    try {
      response = await fetch(url, { cache: "no-store" });
    } catch (err) {
      throw new BundleError(`${path}: fetch failed: ${err.message}`, { cause: err });
    }
    if (!response.ok) throw new BundleError(`${path}: HTTP ${response.status} ${response.statusText}`);
    const bytes = new Uint8Array(meta.nbytes);
    let offset = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (offset + value.length > meta.nbytes) {
        await reader.cancel();
        throw new IntegrityError(path, `${meta.nbytes} bytes`, "more bytes");
      }
      bytes.set(value, offset);
      offset += value.length;
      onBytes(value.length, false);
    }
    if (offset !== meta.nbytes) throw new IntegrityError(path, `${meta.nbytes} bytes`, `${offset} bytes (truncated)`);
    const digest = await sha256Hex(bytes);
    if (digest !== meta.sha256) throw new IntegrityError(path, `sha256 ${meta.sha256}`, `sha256 ${digest}`);
    if (this.cache) {
      try {
        await this.cache.put(url, new Response(bytes));
      } catch (err) {  // e.g. over the storage quota: the bundle still loads, uncached
        console.warn(`q4gsw: ${path} not cached: ${err.message}`);
      }
    }
    return bytes;
  }

  /**
   * Fetch every data file and turn the manifest's tensors and weights into GPU buffers (with
   * a runtime; each file's bytes are dropped once uploaded) or typed arrays (without).
   * @param {{runtime?: Runtime, onProgress?: (p: {loaded: number, total: number, file: string,
   *     files: number, filesDone: number, fromCache: boolean}) => void}} options
   * @returns {Promise<{weights: Map<string, GpuWeight|PackedWeight>, tensors: Map<string, GpuTensor|Float32Array>}>}
   */
  async loadData({ runtime = null, onProgress = () => {} } = {}) {
    const m = this.manifest;
    const limit = runtime ? runtime.caps.maxBindingSize : Infinity;
    const uses = new Map(Object.keys(m.files).map((f) => [f, []]));  // file -> [[ref, store(bytes)]]
    const use = (ref, store) => {
      if (!uses.has(ref.file)) throw new BundleError(`manifest: ${ref.file} is not in its files`);
      uses.get(ref.file).push([ref, store]);
    };
    const weights = new Map();
    const tensors = new Map();
    for (const [name, w] of Object.entries(m.weights)) {
      const chunks = w.chunks.map((c) => ({ n0: c.n0, n: c.n, scaleStride: c.scale_stride, weights: null, scales: null }));
      w.chunks.forEach((c, i) => {
        for (const part of ["weights", "scales"]) {
          if (c[part].nbytes > limit) {
            throw new SizeLimitError("loadBundle", "bundle", `weight chunks of at most ${limit} bytes (this device's maxStorageBufferBindingSize)`,
              `${name}: a chunk of ${c[part].nbytes} bytes (export the bundle with a smaller --chunk-mib)`);
          }
          use(c[part], (bytes) => {
            chunks[i][part] = runtime ? runtime.upload(bytes, GPUBufferUsage.STORAGE, `${name}/${part}[${c.n0}:${c.n0 + c.n}]`) : bytes.slice();
          });
        }
      });
      weights.set(name, { meta: w, chunks });
    }
    for (const [name, t] of Object.entries(m.tensors)) {
      use(t, (bytes) => {
        const data = t.dtype === "uint32" ? new Uint32Array(bytes.slice().buffer) : new Float32Array(bytes.slice().buffer);
        tensors.set(name, runtime ? runtime.tensor(data, t.shape) : data);
      });
    }
    const files = Object.entries(m.files).filter(([f]) => uses.get(f).length);
    const total = files.reduce((s, [, meta]) => s + meta.nbytes, 0);
    const progress = { loaded: 0, total, file: "", files: files.length, filesDone: 0, fromCache: false };
    const queue = [...files];
    const worker = async () => {
      while (queue.length) {
        const [file, meta] = queue.shift();
        const bytes = await this.fetchFile(file, meta, { onBytes: (n, fromCache) => {
          Object.assign(progress, { loaded: progress.loaded + n, file, fromCache });
          onProgress({ ...progress });
        } });
        if (runtime) runtime.checkAlive();
        for (const [ref, store] of uses.get(file)) store(bytes.subarray(ref.offset, ref.offset + ref.nbytes));
        progress.filesDone += 1;
        onProgress({ ...progress, file });
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, files.length) }, worker));
    const built = new Map();
    for (const [name, { meta, chunks }] of weights) built.set(name, runtime ? gpuWeight(meta, chunks, this) : packedWeight(meta, chunks, this));
    return { weights: built, tensors };
  }
}

function gpuWeight(meta, chunks, bundle) {
  return new GpuWeight({ outFeatures: meta.N, inFeatures: meta.K, groupSize: meta.group_size, chunks, bundle });
}

/** The PackedWeight of a weight's chunks (scales back in their (num_groups, padded_N) layout). */
function packedWeight(meta, chunks, bundle) {
  const rowBytes = Math.ceil(meta.K / 2);
  const weights = new Uint8Array(meta.N * rowBytes);
  const groups = Math.ceil(meta.K / meta.group_size);
  const scales = new Float32Array(groups * meta.padded_N);
  for (const c of chunks) {
    weights.set(c.weights, c.n0 * rowBytes);
    const s = new Float32Array(c.scales.buffer, 0, c.scales.byteLength / 4);
    for (let g = 0; g < groups; g++) {
      const width = c.scaleStride === meta.padded_N ? meta.padded_N : c.n;
      const at = c.scaleStride === meta.padded_N ? 0 : c.n0;
      scales.set(s.subarray(g * c.scaleStride, g * c.scaleStride + width), g * meta.padded_N + at);
    }
  }
  const w = new PackedWeight(weights, scales, meta.group_size, { outFeatures: meta.N, inFeatures: meta.K, paddedN: meta.padded_N });
  w.bundle = bundle;
  return w;
}

/**
 * Fetch and check a bundle's manifest.json (nothing else yet).
 * @param {string|URL} base the bundle folder's URL.
 * @param {{cache?: boolean|string}} options cache: keep files in the Cache API cache of that
 *     name (true: CACHE_NAME; false: never). Needs a secure context (https, localhost).
 */
export async function openBundle(base, { cache = true } = {}) {
  const baseUrl = new URL(base, globalThis.location ? globalThis.location.href : undefined);
  if (!baseUrl.pathname.endsWith("/")) baseUrl.pathname += "/";
  const url = new URL("manifest.json", baseUrl);
  let manifest;
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new BundleError(`${url}: HTTP ${response.status}`);
    manifest = await response.json();
  } catch (err) {
    if (err instanceof BundleError) throw err;
    throw new BundleError(`${url}: ${err.message}`, { cause: err });
  }
  if (manifest.format !== FORMAT || manifest.version !== VERSION) {
    throw new BundleError(`manifest: format ${manifest.format} version ${manifest.version}; this q4gsw.js reads ${FORMAT} ${VERSION}`);
  }
  const name = cache === true ? CACHE_NAME : cache;
  const store = name && globalThis.caches ? await caches.open(name) : null;
  return new Bundle(manifest, baseUrl, store);
}

/**
 * Open a "layers" bundle (`q4gsw export-web --random / --weight`) and load its layers.
 * @param {string|URL} base the bundle folder's URL.
 * @param {{runtime?: Runtime, onProgress?: Function, cache?: boolean|string}} options with a
 *     runtime the weights go to its GPU (GpuWeight, GpuTensor bias) and no copy stays in JS;
 *     without one they are PackedWeight and Float32Array (any runtime uploads them on use).
 * @returns {Promise<Bundle>} bundle.layer(name) -> {name, weight, bias}.
 */
export async function loadBundle(base, { runtime = null, onProgress = undefined, cache = true } = {}) {
  const bundle = await openBundle(base, { cache });
  if (bundle.kind !== "layers") throw new BundleError(`loadBundle reads a "layers" bundle; this one holds a ${bundle.kind} (use loadModel)`);
  const { weights, tensors } = await bundle.loadData({ runtime, onProgress });
  for (const layer of bundle.manifest.layers) {
    bundle.layers.set(layer.name, { name: layer.name, weight: weights.get(layer.name),
      bias: tensors.get(`${layer.name}.bias`) || null });
  }
  return bundle;
}
