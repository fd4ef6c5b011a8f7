// q4gsw.js: ExecuTorch's linear_q4gsw through navigator.gpu, from a bundle written by
// `q4gsw export-web`. The same kernels (WGSL text and override constants), argument checks,
// params struct, kernel choice and grid as the Python runtime (src/q4gsw/ops/linear.py).
//
//   import { createRuntime, loadBundle } from "./q4gsw.js";
//   const bundle = await loadBundle(new URL("./", import.meta.url));
//   const rt = await createRuntime();
//   const layer = bundle.layer("layer0");
//   const { out, key, timing } = await rt.linear(x, layer.weight, { bias: layer.bias });
//
// Differences from Python, all explicit: typed arrays instead of ndarrays (x is a flat
// Float32Array of M * K, M = x.length / K unless `m` is given); a weight larger than one
// storage binding is refused (SizeLimitError) rather than split along N; and kernels that use
// subgroup builtins get `enable subgroups;` prepended (Tint requires it, naga rejects it).

// ---------------------------------------------------------------------------------- errors

/** Base class of every error q4gsw.js throws on purpose. */
export class Q4gswError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** An argument is malformed: names the function, the argument, what was expected and what came. */
export class ArgumentError extends Q4gswError {
  constructor(fn, argument, expected, got) {
    super(`${fn}: argument '${argument}': expected ${expected}, got ${got}`);
    this.function = fn;
    this.argument = argument;
    this.expected = expected;
    this.got = got;
  }
}
export class DTypeError extends ArgumentError {}
export class ShapeError extends ArgumentError {}
export class GroupSizeError extends ArgumentError {}
export class SizeLimitError extends ArgumentError {}
/** A kernel was asked for a problem it does not support (the reason is in the message). */
export class UnsupportedShapeError extends Q4gswError {}
/** No WebGPU adapter or device, or the device was lost. */
export class DeviceError extends Q4gswError {}
/** A kernel failed to compile; names the kernel key and its .wgsl files. */
export class ShaderError extends Q4gswError {}
/** The bundle is not one this q4gsw.js reads (format, version, file sizes). */
export class BundleError extends Q4gswError {}

/** A short description of a value for error messages: type and length or value. */
export function describe(value) {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} length=${value.length}`;
  if (Array.isArray(value)) return `Array length=${value.length}`;
  if (typeof value === "string") return `string ${JSON.stringify(value.slice(0, 40))}`;
  if (typeof value === "object") return `${value.constructor ? value.constructor.name : "object"}`;
  return `${typeof value} ${String(value).slice(0, 40)}`;
}

function positiveInt(fn, argument, value, ErrorClass = GroupSizeError) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new ErrorClass(fn, argument, "a positive int", describe(value));
  }
  if (value <= 0) throw new ErrorClass(fn, argument, "a positive int", String(value));
  return value;
}

// ------------------------------------------------------------------ params, grid, routing

/** Field order of every kernel's WGSL `struct Params` (12 x u32), as ops/linear.py packs it. */
export const PARAMS_FIELDS = Object.freeze([
  "m", "n", "k", "row_bytes", "group_size", "num_groups", "scale_stride", "out_stride",
  "out_offset", "n_tiles", "tiles", "split_stride",
]);

/** [x, y, 1] with x * y >= workgroups, each <= maxPerDimension (runtime/dispatch.py fold_grid). */
export function foldGrid(workgroups, maxPerDimension) {
  if (workgroups <= maxPerDimension) return [Math.max(workgroups, 1), 1, 1];
  const y = Math.ceil(workgroups / maxPerDimension);
  if (y > maxPerDimension) throw new RangeError(`${workgroups} workgroups exceed ${maxPerDimension}^2`);
  return [Math.ceil(workgroups / y), y, 1];
}

/** Whether the decode kernel is predicted faster than the tiled one (registry.decode_beats_tiled). */
export function decodeBeatsTiled(p, routing) {
  // (registry.py adds the same fixed cost to both sides; it cancels here)
  const decode = routing.decode_seconds_per_mac * p.m * p.n * p.k;
  const tiles = Math.ceil(p.m / routing.tiled_tile) * Math.ceil(p.n / routing.tiled_tile);
  const tiled = routing.tiled_seconds_per_k_per_wave * p.k * Math.ceil(tiles / routing.tiled_tiles_per_wave);
  return decode <= tiled;
}

// ---------------------------------------------------------------------------- the weight

/** A 4-bit groupwise-symmetric weight, exactly as ExecuTorch serializes it (format.py). */
export class PackedWeight {
  /**
   * @param {Uint8Array} weights (N, ceil(K/2)) row-major: even k low nibble, odd k high, q + 8.
   * @param {Float32Array} scales (scaleRows, paddedN) row-major; element (k, n) uses
   *     scales[floor(k / groupSize) * paddedN + n].
   * @param {number} groupSize elements of K per scale.
   * @param {{outFeatures: number, inFeatures: number, paddedN: number}} shape N, K, padded_N.
   */
  constructor(weights, scales, groupSize, { outFeatures, inFeatures, paddedN } = {}) {
    const fn = "PackedWeight";
    if (!(weights instanceof Uint8Array)) throw new DTypeError(fn, "weights", "Uint8Array", describe(weights));
    if (!(scales instanceof Float32Array)) throw new DTypeError(fn, "weight_scales", "Float32Array", describe(scales));
    positiveInt(fn, "group_size", groupSize);
    const n = positiveInt(fn, "outFeatures", outFeatures, ShapeError);
    const k = positiveInt(fn, "inFeatures", inFeatures, ShapeError);
    const pn = positiveInt(fn, "paddedN", paddedN, ShapeError);
    const rowBytes = Math.ceil(k / 2);
    if (weights.length !== n * rowBytes) {
      throw new ShapeError(fn, "weights", `N * ceil(K/2) = ${n} * ${rowBytes} bytes for N=${n}, K=${k}`, describe(weights));
    }
    if (pn < n) throw new ShapeError(fn, "weight_scales", `padded_N >= N = ${n} columns`, `padded_N=${pn}`);
    if (scales.length % pn !== 0) {
      throw new ShapeError(fn, "weight_scales", `(num_groups, padded_N=${pn}) elements`, describe(scales));
    }
    const groups = Math.ceil(k / groupSize);
    if (scales.length / pn < groups) {
      throw new GroupSizeError(fn, "weight_scales",
        `at least ceil(K/group_size) = ceil(${k}/${groupSize}) = ${groups} rows`, `${scales.length / pn} rows`);
    }
    Object.assign(this, { weights, scales, groupSize, outFeatures: n, inFeatures: k, paddedN: pn });
    this.kernels = [];  // set by loadBundle: the layer's kernel entries from the manifest
    this.bundle = null;
    this._gpu = new WeakMap();  // device -> {weights, scales}
  }

  /** ceil(K / group_size): the scale rows that are used. */
  get numGroups() { return Math.ceil(this.inFeatures / this.groupSize); }
  get rowBytes() { return Math.ceil(this.inFeatures / 2); }
}

// ---------------------------------------------------------------------------- the bundle

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new BundleError(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function typed(bytes, meta, url) {
  if (bytes.length !== meta.nbytes) throw new BundleError(`${url}: ${bytes.length} bytes, the manifest says ${meta.nbytes}`);
  const copy = bytes.slice().buffer;  // aligned for the Float32Array view
  return meta.dtype === "float32" ? new Float32Array(copy) : new Uint8Array(copy);
}

/** A bundle written by `q4gsw export-web`: its manifest, layers and kernel sources. */
export class Bundle {
  constructor(manifest, baseUrl) {
    this.manifest = manifest;
    this.baseUrl = baseUrl;
    this.layers = new Map();
    this._sources = new Map();
  }

  /** The layer `name`: {name, weight: PackedWeight, bias: Float32Array | null}. */
  layer(name) {
    const layer = this.layers.get(name);
    if (!layer) throw new ShapeError("Bundle.layer", "name", `one of ${[...this.layers.keys()].join(", ")}`, describe(name));
    return layer;
  }

  /** The WGSL text of kernel key `key` (a str(KernelKey) of the manifest), fetched once. */
  async source(key) {
    const entry = this.manifest.kernels[key];
    if (!entry) throw new BundleError(`kernel key ${key} is not in the manifest`);
    if (!this._sources.has(entry.source)) {
      const url = new URL(entry.source, this.baseUrl);
      this._sources.set(entry.source, fetchBytes(url).then((b) => new TextDecoder().decode(b)));
    }
    return this._sources.get(entry.source);
  }
}

/** Fetch a bundle's manifest and every layer's weights (base: the bundle folder's URL). */
export async function loadBundle(base) {
  const baseUrl = new URL(base, globalThis.location ? globalThis.location.href : undefined);
  if (!baseUrl.pathname.endsWith("/")) baseUrl.pathname += "/";
  const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(new URL("manifest.json", baseUrl))));
  if (manifest.format !== "q4gsw-web" || manifest.version !== 1) {
    throw new BundleError(`manifest: format ${manifest.format} version ${manifest.version}; this q4gsw.js reads q4gsw-web 1`);
  }
  const bundle = new Bundle(manifest, baseUrl);
  await Promise.all(manifest.layers.map(async (l) => {
    const arrays = {};
    for (const [part, meta] of Object.entries(l.files)) {
      const url = new URL(meta.file, baseUrl);
      arrays[part] = typed(await fetchBytes(url), meta, url);
    }
    const weight = new PackedWeight(arrays.weights, arrays.scales, l.group_size,
      { outFeatures: l.N, inFeatures: l.K, paddedN: l.padded_N });
    weight.kernels = l.kernels;
    weight.bundle = bundle;
    bundle.layers.set(l.name, { name: l.name, weight, bias: arrays.bias || null });
  }));
  return bundle;
}

// --------------------------------------------------------------------------- the runtime

function kernelFiles(files) {
  return files.map((f) => `q4gsw/kernels/${f}`).join(" + ");
}

/** Optional features the kernels or the timing use, requested only when offered. */
export const WANTED_FEATURES = Object.freeze(["timestamp-query", "shader-f16", "subgroups"]);
/** Limits raised to the adapter's maxima (runtime/device.py RAISED_LIMITS). */
export const RAISED_LIMITS = Object.freeze([
  "maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension", "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
]);

/**
 * Request an adapter and a device with the wanted features and raised limits.
 * @param {{powerPreference?: string, disableFeatures?: string[], maxWorkgroupsPerDimension?: number}} options
 *     maxWorkgroupsPerDimension: fold grids over this many workgroups per dimension instead of
 *     the device's limit (when lower). For tests: a small problem then takes the folded grid
 *     that only a huge one would on the device's limit (65 535).
 */
export async function createRuntime({ powerPreference = "high-performance", disableFeatures = [],
  maxWorkgroupsPerDimension = undefined } = {}) {
  if (maxWorkgroupsPerDimension !== undefined) {
    positiveInt("createRuntime", "maxWorkgroupsPerDimension", maxWorkgroupsPerDimension, ArgumentError);
  }
  if (!globalThis.navigator || !navigator.gpu) {
    throw new DeviceError("navigator.gpu is missing: this browser has no WebGPU (or it is disabled)");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference });
  if (!adapter) throw new DeviceError("navigator.gpu.requestAdapter() found no adapter");
  const features = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !disableFeatures.includes(f));
  const requiredLimits = {};
  for (const name of RAISED_LIMITS) if (name in adapter.limits) requiredLimits[name] = adapter.limits[name];
  const device = await adapter.requestDevice({ label: "q4gsw", requiredFeatures: features, requiredLimits });
  return new Runtime(adapter, device, { maxWorkgroupsPerDimension });
}

/** One device: what it offers, its pipelines, and linear(). */
export class Runtime {
  constructor(adapter, device, { maxWorkgroupsPerDimension = undefined } = {}) {
    this.adapter = adapter;
    this.device = device;
    const info = adapter.info || {};
    this.caps = {
      adapter: { vendor: info.vendor, architecture: info.architecture, device: info.device,
        description: info.description, isFallbackAdapter: info.isFallbackAdapter ?? adapter.isFallbackAdapter },
      features: new Set(device.features),
      limits: device.limits,
    };
    /** Workgroups per grid dimension that linear() folds over (createRuntime's option). */
    this.maxWorkgroupsPerDimension = Math.min(device.limits.maxComputeWorkgroupsPerDimension,
      maxWorkgroupsPerDimension ?? Infinity);
    this.lost = null;
    device.lost.then((reason) => { this.lost = reason; });
    this._pipelines = new Map();
    this._broken = new Map();  // key -> ShaderError message: kernels this browser cannot compile
  }

  get hasTimestamps() { return this.caps.features.has("timestamp-query"); }

  /** Why the kernel entry cannot run p on this device, or null. */
  supports(entry, kernel, p) {
    if (entry.unsupported) return entry.unsupported;
    const key = entry.keys[p.has_bias ? "bias" : "no_bias"];
    if (this._broken.has(key)) return `failed to compile on this device: ${this._broken.get(key)}`;
    if (entry.max_m !== null && entry.max_m !== undefined && p.m > entry.max_m) return `M=${p.m} > ${entry.max_m}`;
    for (const ext of kernel.enables) {
      if (!this.caps.features.has(ext)) return `the device has no \`${ext}\` feature`;
    }
    const invocations = this.caps.limits.maxComputeInvocationsPerWorkgroup;
    if (kernel.invocations > invocations) {
      return `needs ${kernel.invocations} invocations per workgroup, the device has ${invocations}`;
    }
    const storage = this.caps.limits.maxComputeWorkgroupStorageSize;
    if (entry.workgroup_bytes > storage) {
      return `needs ${entry.workgroup_bytes} bytes of workgroup memory, the device has ${storage}`;
    }
    return null;
  }

  /** The kernel entry to run p (registry.select): the one named, else the first supported
   * one that prefers p, else the first supported one. */
  select(p, weight, name = null) {
    const manifest = weight.bundle ? weight.bundle.manifest : null;
    const shape = `M=${p.m} N=${p.n} K=${p.k} group_size=${p.group_size}`;
    if (!manifest) throw new UnsupportedShapeError("this PackedWeight has no kernels: load it with loadBundle()");
    const kernelOf = (entry) => (entry.unsupported ? null : manifest.kernels[entry.keys[p.has_bias ? "bias" : "no_bias"]]);
    if (name !== null && name !== undefined) {
      const entry = weight.kernels.find((e) => e.name === name);
      if (!entry) throw new UnsupportedShapeError(`unknown kernel ${JSON.stringify(name)}; known: ${manifest.kernel_order.join(", ")}`);
      const reason = this.supports(entry, kernelOf(entry), p);
      if (reason) throw new UnsupportedShapeError(`kernel '${name}' cannot run ${shape}: ${reason}`);
      return entry;
    }
    const reasons = [];
    let fallback = null;
    for (const entry of weight.kernels) {
      const reason = this.supports(entry, kernelOf(entry), p);
      if (reason) { reasons.push(`${entry.name}: ${reason}`); continue; }
      const beats = decodeBeatsTiled(p, manifest.routing);
      const prefers = entry.prefers === "decode" ? beats : entry.prefers === "tiled" ? !beats : false;
      if (prefers) return entry;
      fallback = fallback || entry;
    }
    if (fallback) return fallback;
    throw new UnsupportedShapeError(`no kernel runs ${shape}: ${reasons.join("; ")}`);
  }

  /** The compute pipeline of a kernel key, compiled once (label: the key). */
  async pipeline(bundle, key) {
    if (!this._pipelines.has(key)) {
      this._pipelines.set(key, bundle.source(key).then((text) => this.compile(key, text, bundle.manifest.kernels[key])));
    }
    return this._pipelines.get(key);
  }

  /**
   * A shader module of WGSL text as the bundle holds it, checked by the browser's compiler
   * (parsing, validation, uniformity analysis).
   * @param {string} label the kernel key.
   * @param {string} text the kernel's .wgsl files, joined.
   * @param {{enables: string[], files: string[]}} kernel its manifest entry: extensions to
   *     `enable` (prepended) and the files, for the error.
   * @returns {Promise<GPUShaderModule>} or throws ShaderError with the compiler's errors.
   */
  async shaderModule(label, text, { enables, files }) {
    const prelude = enables.map((ext) => `enable ${ext};\n`).join("");
    const module = this.device.createShaderModule({ label, code: prelude + text });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === "error");
    if (errors.length) {
      // line numbers of `text` (the prelude is one line per extension)
      const messages = errors.map((m) => `error ${Math.max(0, m.lineNum - enables.length)}:${m.linePos}: ${m.message}`);
      throw new ShaderError(`kernel ${label} (${kernelFiles(files)}) failed to compile:\n${messages.join("\n")}`);
    }
    return module;
  }

  /**
   * The compute pipeline (entry point `main`) of WGSL text as the bundle holds it.
   * @param {string} label the kernel key (the pipeline's label).
   * @param {string} text the kernel's .wgsl files, joined.
   * @param {{constants: object, enables: string[], files: string[]}} kernel its manifest entry
   *     (see shaderModule); `constants`: the override constants.
   * @returns {Promise<GPUComputePipeline>} or throws ShaderError.
   */
  async compile(label, text, kernel) {
    const module = await this.shaderModule(label, text, kernel);
    try {
      return await this.device.createComputePipelineAsync({
        label,
        layout: "auto",
        compute: { module, entryPoint: "main", constants: kernel.constants },
      });
    } catch (err) {
      throw new ShaderError(`kernel ${label} (${kernelFiles(kernel.files)}) failed to compile:\n${err.message}`);
    }
  }

  _gpuWeight(weight) {
    let cached = weight._gpu.get(this.device);
    if (!cached) {
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
      cached = {
        weights: this._upload(weight.weights, usage, "q4gsw/weights"),
        // 16-byte padded, as in Python (ops/weights.py): the decode kernels read scales as vec4
        scales: this._upload(weight.scales.subarray(0, weight.numGroups * weight.paddedN), usage, "q4gsw/scales", 16),
      };
      weight._gpu.set(this.device, cached);
    }
    return cached;
  }

  _upload(array, usage, label, align = 4) {
    const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    const size = Math.max(align, Math.ceil(bytes.length / align) * align);
    const buffer = this.device.createBuffer({ label, size, usage: usage | GPUBufferUsage.COPY_DST });
    const padded = new Uint8Array(size);
    padded.set(bytes);
    this.device.queue.writeBuffer(buffer, 0, padded);
    return buffer;
  }

  /**
   * out = x @ dequantize(weight)^T (+ bias), on this device (ops/linear.py linear()).
   * @param {Float32Array} x (M, K) row-major.
   * @param {PackedWeight} weight from loadBundle().
   * @param {{bias?: Float32Array|null, m?: number, kernel?: string|null}} options
   * @returns {Promise<{out: Float32Array, m: number, n: number, kernel: string|null, key: string|null,
   *     grid: number[], timing: {method: string, ns: number}|null, fallbacks: {kernel, reason}[]}>}
   *     out is (M, N) row-major; fallbacks: preferred kernels skipped as uncompilable here; timing
   *     is GPU time from timestamp queries when the device has `timestamp-query`, else wall clock
   *     from submit to onSubmittedWorkDone, and says which in `method`.
   */
  async linear(x, weight, { bias = null, m = undefined, kernel = null } = {}) {
    const fn = "linear";
    if (!(weight instanceof PackedWeight)) throw new DTypeError(fn, "weight", "a q4gsw PackedWeight", describe(weight));
    if (!(x instanceof Float32Array)) throw new DTypeError(fn, "x", "Float32Array", describe(x));
    const n = weight.outFeatures;
    const k = weight.inFeatures;
    let rows;
    if (m === undefined || m === null) {
      if (x.length % k !== 0) {
        throw new ShapeError(fn, "x", `(M, K) elements with K = ${k} (the weight's in_features)`, describe(x));
      }
      rows = x.length / k;
    } else {
      if (typeof m !== "number" || !Number.isInteger(m) || m < 0) throw new ShapeError(fn, "m", "a non-negative int", describe(m));
      if (x.length !== m * k) throw new ShapeError(fn, "x", `M * K = ${m} * ${k} elements`, describe(x));
      rows = m;
    }
    if (bias !== null && bias !== undefined) {
      if (!(bias instanceof Float32Array)) throw new DTypeError(fn, "bias", "Float32Array", describe(bias));
      if (bias.length !== n) throw new ShapeError(fn, "bias", `shape (${n},) (the weight's out_features)`, describe(bias));
    } else {
      bias = null;
    }
    const p = { m: rows, n, k, group_size: weight.groupSize, has_bias: bias !== null,
      row_bytes: weight.rowBytes, num_groups: weight.numGroups };
    if (rows === 0) {
      if (kernel !== null && weight.bundle && !weight.bundle.manifest.kernel_order.includes(kernel)) {
        this.select(p, weight, kernel);  // throws for an unknown name
      }
      return { out: new Float32Array(0), m: 0, n, kernel: null, key: null, grid: [0, 0, 0], timing: null, fallbacks: [] };
    }
    if (this.lost) throw new DeviceError(`the device was lost: ${this.lost.message}`);
    // Default routing skips kernels this browser failed to compile, and says so: the result's
    // `fallbacks` lists them with the compiler's message (console.warn too, once per key).
    // A kernel named by the caller is never replaced: its ShaderError is thrown.
    for (;;) {
      const entry = this.select(p, weight, kernel);
      const key = entry.keys[p.has_bias ? "bias" : "no_bias"];
      this._checkSizes(fn, p, entry, weight);
      let pipeline;
      try {
        pipeline = await this.pipeline(weight.bundle, key);
      } catch (err) {
        if (kernel !== null || !(err instanceof ShaderError)) throw err;
        this._broken.set(key, err.message);
        console.warn(`q4gsw: ${err.message}\nq4gsw: routing around ${entry.name} on this device`);
        continue;
      }
      const fallbacks = weight.kernels
        .filter((e) => !e.unsupported && this._broken.has(e.keys[p.has_bias ? "bias" : "no_bias"]))
        .map((e) => ({ kernel: e.name, reason: this._broken.get(e.keys[p.has_bias ? "bias" : "no_bias"]) }));
      return { ...(await this._run(p, x, weight, bias, entry, key, pipeline)), fallbacks };
    }
  }

  /** Refuse what the device cannot bind or dispatch, naming the argument (ops/linear.py check_sizes). */
  _checkSizes(fn, p, entry, weight) {
    const limit = this.caps.limits.maxStorageBufferBindingSize;
    if (4 * p.m * p.k > limit) {
      throw new SizeLimitError(fn, "x", `at most ${limit} bytes (the adapter's storage binding limit)`, `${4 * p.m * p.k} bytes (M=${p.m}, K=${p.k})`);
    }
    if (4 * p.m * p.n > limit) {
      throw new SizeLimitError(fn, "x", `M with M * N * 4 <= ${limit} bytes of output`, `${4 * p.m * p.n} bytes (M=${p.m}, N=${p.n})`);
    }
    const scaleBytes = 4 * weight.numGroups * weight.paddedN;
    if (weight.weights.length > limit || scaleBytes > limit) {
      throw new SizeLimitError(fn, "weight", `weights and used scales of at most ${limit} bytes each (q4gsw.js does not split weights)`,
        `${weight.weights.length} and ${scaleBytes} bytes`);
    }
    const dim = this.maxWorkgroupsPerDimension;
    const tiles = entry.n_tiles * Math.ceil(p.m / entry.m_per_tile);
    if (tiles > dim * dim) throw new SizeLimitError(fn, "x", `at most ${dim}^2 workgroups`, `${tiles} for M=${p.m}, N=${p.n}`);
  }

  async _run(p, x, weight, bias, entry, key, pipeline) {
    const device = this.device;
    const gpu = this._gpuWeight(weight);
    const S = GPUBufferUsage;
    const nTiles = entry.n_tiles;
    const tiles = nTiles * Math.ceil(p.m / entry.m_per_tile);
    const values = { m: p.m, n: p.n, k: p.k, row_bytes: p.row_bytes, group_size: p.group_size, num_groups: p.num_groups,
      scale_stride: weight.paddedN, out_stride: p.n, out_offset: 0, n_tiles: nTiles, tiles, split_stride: 0 };
    const params = new Uint32Array(PARAMS_FIELDS.map((f) => values[f]));
    const outBytes = 4 * p.m * p.n;
    const temps = [
      this._upload(x, S.STORAGE, "q4gsw/x"),
      device.createBuffer({ label: "q4gsw/out", size: Math.max(4, outBytes), usage: S.STORAGE | S.COPY_SRC }),
      this._upload(bias || new Float32Array(1), S.STORAGE, "q4gsw/bias"),
      this._upload(params, S.UNIFORM, "q4gsw/params"),
    ];
    const [xBuf, outBuf, biasBuf, paramsBuf] = temps;
    const readBuf = device.createBuffer({ label: "q4gsw/read", size: Math.max(4, outBytes), usage: S.MAP_READ | S.COPY_DST });
    temps.push(readBuf);
    const bindGroup = device.createBindGroup({
      label: key,
      layout: pipeline.getBindGroupLayout(0),
      entries: [outBuf, xBuf, gpu.weights, gpu.scales, biasBuf, paramsBuf].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const grid = foldGrid(tiles, this.maxWorkgroupsPerDimension);
    let querySet = null;
    let stampBuf = null;
    let stampRead = null;
    if (this.hasTimestamps) {
      querySet = device.createQuerySet({ label: "q4gsw/timestamps", type: "timestamp", count: 2 });
      stampBuf = device.createBuffer({ label: "q4gsw/timestamps", size: 16, usage: S.QUERY_RESOLVE | S.COPY_SRC });
      stampRead = device.createBuffer({ label: "q4gsw/timestamps-read", size: 16, usage: S.MAP_READ | S.COPY_DST });
      temps.push(stampBuf, stampRead);
    }
    device.pushErrorScope("validation");
    const encoder = device.createCommandEncoder({ label: "q4gsw" });
    const pass = encoder.beginComputePass({
      label: key,
      timestampWrites: querySet ? { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } : undefined,
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(...grid);
    pass.end();
    if (querySet) {
      encoder.resolveQuerySet(querySet, 0, 2, stampBuf, 0);
      encoder.copyBufferToBuffer(stampBuf, 0, stampRead, 0, 16);
    }
    encoder.copyBufferToBuffer(outBuf, 0, readBuf, 0, Math.max(4, outBytes));
    const start = performance.now();
    device.queue.submit([encoder.finish()]);
    const error = await device.popErrorScope();
    try {
      if (error) throw new Q4gswError(`${key}: WebGPU validation error: ${error.message}`);
      let timing;
      if (!querySet) {
        await device.queue.onSubmittedWorkDone();
        timing = { method: "wall-clock", ns: (performance.now() - start) * 1e6 };
      }
      await readBuf.mapAsync(GPUMapMode.READ);
      const out = new Float32Array(readBuf.getMappedRange().slice(0, outBytes));
      readBuf.unmap();
      if (querySet) {
        await stampRead.mapAsync(GPUMapMode.READ);
        const stamps = new BigUint64Array(stampRead.getMappedRange().slice(0));
        stampRead.unmap();
        timing = { method: "timestamp-query", ns: Number(stamps[1] - stamps[0]) };
      }
      return { out, m: p.m, n: p.n, kernel: entry.name, key, grid, timing };
    } finally {
      for (const b of temps) b.destroy();
      if (querySet) querySet.destroy();
    }
  }
}

// ------------------------------------------------------------------------- the reference

/** out = x @ dequantize(weight)^T (+ bias) in float64 on the CPU (format.py linear_reference). */
export function linearReference(x, weight, bias = null) {
  const n = weight.outFeatures;
  const k = weight.inFeatures;
  const m = x.length / k;
  const out = new Float64Array(m * n);
  const row = new Float64Array(k);
  for (let j = 0; j < n; j++) {
    for (let kk = 0; kk < k; kk++) {
      const byte = weight.weights[j * weight.rowBytes + (kk >> 1)];
      const q = ((kk & 1) ? byte >> 4 : byte & 15) - 8;
      row[kk] = q * weight.scales[Math.floor(kk / weight.groupSize) * weight.paddedN + j];
    }
    for (let i = 0; i < m; i++) {
      let s = bias ? bias[j] : 0;
      for (let kk = 0; kk < k; kk++) s += x[i * k + kk] * row[kk];
      out[i * n + j] = s;
    }
  }
  return out;
}
