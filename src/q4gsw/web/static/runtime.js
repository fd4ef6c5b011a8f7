// runtime.js: one WebGPU device and what lives on it (runtime/device.py): what it offers,
// its loss, buffers, weights' GPU copies, compiled pipelines, and the one-call linear().

import { Chain } from "./chain.js";
import {
  ArgumentError, DTypeError, DeviceError, DeviceLostError, Q4gswError, ShaderError, ShapeError, describe, positiveInt,
} from "./errors.js";
import { Router, checkActivations } from "./kernels.js";
import { DTYPE_BYTES, GpuTensor, GpuWeight, PackedWeight, paddedSize } from "./tensor.js";

/** Optional features the kernels or the timing use, requested only when offered. */
export const WANTED_FEATURES = Object.freeze(["timestamp-query", "shader-f16", "subgroups"]);
/** Limits raised to the adapter's maxima (runtime/device.py RAISED_LIMITS). */
export const RAISED_LIMITS = Object.freeze([
  "maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension", "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
]);
/** WGSL that Tint compiles only after `enable <ext>;` (naga rejects the directive, so the files lack it). */
const BROWSER_ENABLES = { subgroups: /\bsubgroup\w*|@builtin\(subgroup_/ };

/** The extensions WGSL text needs enabled in a browser. */
export function browserEnables(text) {
  return Object.entries(BROWSER_ENABLES).filter(([, pattern]) => pattern.test(text)).map(([ext]) => ext);
}

/**
 * Request an adapter and a device with the wanted features and raised limits.
 * @param {{powerPreference?: string, disableFeatures?: string[], maxWorkgroupsPerDimension?: number,
 *     onDeviceLost?: (error: DeviceLostError) => void}} options
 *     maxWorkgroupsPerDimension: fold grids over this many workgroups per dimension instead of
 *     the device's limit (when lower; for tests). onDeviceLost: called once if the device is
 *     lost; every later call on the runtime throws DeviceLostError.
 */
export async function createRuntime({ powerPreference = "high-performance", disableFeatures = [],
  maxWorkgroupsPerDimension = undefined, onDeviceLost = undefined } = {}) {
  if (maxWorkgroupsPerDimension !== undefined) {
    positiveInt("createRuntime", "maxWorkgroupsPerDimension", maxWorkgroupsPerDimension, ArgumentError);
  }
  if (onDeviceLost !== undefined && typeof onDeviceLost !== "function") {
    throw new DTypeError("createRuntime", "onDeviceLost", "a function", describe(onDeviceLost));
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
  return new Runtime(adapter, device, { maxWorkgroupsPerDimension, onDeviceLost });
}

/** One device: what it offers, its buffers and pipelines, and linear(). */
export class Runtime {
  constructor(adapter, device, { maxWorkgroupsPerDimension = undefined, onDeviceLost = undefined } = {}) {
    this.adapter = adapter;
    this.device = device;
    const info = adapter.info || {};
    const limits = device.limits;
    const features = new Set(device.features);
    this.caps = {
      adapter: { vendor: info.vendor, architecture: info.architecture, device: info.device,
        description: info.description, isFallbackAdapter: info.isFallbackAdapter ?? adapter.isFallbackAdapter },
      features,
      limits,
      hasSubgroups: features.has("subgroups"),
      hasTimestamps: features.has("timestamp-query"),
      subgroupMinSize: info.subgroupMinSize || 4,
      maxBindingSize: limits.maxStorageBufferBindingSize,
      maxWorkgroupStorage: limits.maxComputeWorkgroupStorageSize,
      maxInvocations: Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX),
      // a software adapter (SwiftShader, llvmpipe): routing prefers what is fast on a CPU
      isCpu: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter)
        || /swiftshader|llvmpipe|lavapipe/i.test([info.vendor, info.architecture, info.device, info.description].join(" ")),
    };
    /** Workgroups per grid dimension that dispatches fold over (createRuntime's option). */
    this.maxWorkgroupsPerDimension = Math.min(limits.maxComputeWorkgroupsPerDimension, maxWorkgroupsPerDimension ?? Infinity);
    /** null, or the DeviceLostError every call throws once the device is lost. */
    this.lost = null;
    device.lost.then((info) => {
      this.lost = new DeviceLostError(info.reason, info.message || "(no message)");
      if (onDeviceLost) onDeviceLost(this.lost);
    });
    /** Kernel name -> the compiler's message: kernels this browser failed to compile. */
    this.broken = new Map();
    this._routers = new WeakMap();  // costs object -> Router
    this._pipelines = new WeakMap();  // kernel source (a Bundle) -> Map(key -> Promise<GPUComputePipeline>)
    this._weights = new WeakMap();  // PackedWeight -> GpuWeight
  }

  get hasTimestamps() { return this.caps.hasTimestamps; }

  /** Throw DeviceLostError if the device is lost. */
  checkAlive() {
    if (this.lost) throw this.lost;
  }

  /** await promise, turning the rejection a lost device causes (AbortError, OperationError) into DeviceLostError. */
  async guard(promise) {
    try {
      return await promise;
    } catch (err) {
      throw (await this.lostError(err)) || err;
    }
  }

  /** The DeviceLostError behind err, if the device is lost (its `lost` promise may settle a little after the error). */
  async lostError(err) {
    if (err instanceof Q4gswError) return null;
    const lost = this.lost || await Promise.race([this.device.lost.then(() => true), new Promise((r) => setTimeout(r, 200, false))]);
    return lost ? this.lost || new DeviceLostError("unknown", err.message, { cause: err }) : null;
  }

  /** The kernel choice of a bundle's cost model (`costs`: its manifest's routing) on this device. */
  router(costs) {
    if (!this._routers.has(costs)) this._routers.set(costs, new Router(costs, this.caps, this.broken));
    return this._routers.get(costs);
  }

  // --- buffers and tensors ------------------------------------------------------------------

  /** A new buffer of at least nbytes (paddedSize), zero-filled as WebGPU makes them. */
  createBuffer(nbytes, usage, label) {
    this.checkAlive();
    return this.device.createBuffer({ label, size: paddedSize(nbytes), usage });
  }

  /** A buffer holding the bytes of `data` (a typed array, or bytes [offset, offset + nbytes) of one). */
  upload(data, usage, label) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const buffer = this.createBuffer(bytes.length, usage | GPUBufferUsage.COPY_DST, label);
    const whole = bytes.length & ~3;
    if (whole) this.device.queue.writeBuffer(buffer, 0, bytes, 0, whole);
    if (whole !== bytes.length) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(whole));
      this.device.queue.writeBuffer(buffer, whole, tail);
    }
    return buffer;
  }

  /**
   * A GpuTensor holding a copy of `data`.
   * @param {Float32Array|Uint32Array} data
   * @param {number[]} [shape] default [data.length]
   */
  tensor(data, shape = undefined) {
    const fn = "Runtime.tensor";
    if (!(data instanceof Float32Array || data instanceof Uint32Array)) {
      throw new DTypeError(fn, "data", "Float32Array or Uint32Array", describe(data));
    }
    shape = shape || [data.length];
    if (!Array.isArray(shape) || shape.reduce((a, b) => a * b, 1) !== data.length || data.length === 0) {
      throw new ShapeError(fn, "shape", `dimensions whose product is data.length = ${data.length} (> 0)`, describe(shape));
    }
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    return new GpuTensor(this, this.upload(data, usage, "q4gsw/tensor"), shape, data instanceof Uint32Array ? "uint32" : "float32");
  }

  /** A zero-filled GpuTensor of `shape`. */
  empty(shape, dtype = "float32", label = "q4gsw/tensor") {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const size = shape.reduce((a, b) => a * b, 1);
    return new GpuTensor(this, this.createBuffer(DTYPE_BYTES[dtype] * size, usage, label), shape, dtype);
  }

  /** The first nbytes of buffer (COPY_SRC), after the work submitted so far: an ArrayBuffer. */
  async readBuffer(buffer, nbytes) {
    this.checkAlive();
    const size = Math.max(4, Math.ceil(nbytes / 4) * 4);
    const staging = this.device.createBuffer({ label: "q4gsw/read", size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const encoder = this.device.createCommandEncoder({ label: "q4gsw/read" });
      encoder.copyBufferToBuffer(buffer, 0, staging, 0, size);
      this.device.queue.submit([encoder.finish()]);
      await this.guard(staging.mapAsync(GPUMapMode.READ));
      return staging.getMappedRange().slice(0, nbytes);
    } finally {
      staging.destroy();
    }
  }

  /**
   * The GPU copy of a PackedWeight, uploaded once per device and split along N so each chunk
   * fits one storage binding (runtime/weights.py WeightCache).
   */
  gpuWeight(weight) {
    if (weight instanceof GpuWeight) return weight;
    if (!(weight instanceof PackedWeight)) throw new DTypeError("gpuWeight", "weight", "a PackedWeight or GpuWeight", describe(weight));
    let cached = this._weights.get(weight);
    if (!cached) {
      const usage = GPUBufferUsage.STORAGE;
      const step = weight.featuresPerChunk(this.caps.maxBindingSize);
      const chunks = [];
      for (let n0 = 0; n0 < weight.outFeatures; n0 += step) {
        const n = Math.min(step, weight.outFeatures - n0);
        let scales = weight.scales.subarray(0, weight.numGroups * weight.paddedN);
        let scaleStride = weight.paddedN;
        if (step < weight.outFeatures) {  // the chunk's own scale columns, compact
          scales = new Float32Array(weight.numGroups * n);
          for (let g = 0; g < weight.numGroups; g++) scales.set(weight.scales.subarray(g * weight.paddedN + n0, g * weight.paddedN + n0 + n), g * n);
          scaleStride = n;
        }
        chunks.push({ n0, n, scaleStride,
          weights: this.upload(weight.weights.subarray(n0 * weight.rowBytes, (n0 + n) * weight.rowBytes), usage, `q4gsw/weights[${n0}:${n0 + n}]`),
          scales: this.upload(scales, usage, `q4gsw/scales[${n0}:${n0 + n}]`) });
      }
      cached = new GpuWeight({ outFeatures: weight.outFeatures, inFeatures: weight.inFeatures,
        groupSize: weight.groupSize, chunks, bundle: weight.bundle });
      this._weights.set(weight, cached);
    }
    return cached;
  }

  // --- pipelines ----------------------------------------------------------------------------

  /**
   * The compute pipeline of a KernelKey, compiled once: its files' text from `source` (a
   * Bundle: kernelText(stem)), its constants as override constants; label str(key). Cached by
   * label and files (a KV cache's f32 and f16 kernels share the label).
   */
  pipeline(key, source) {
    this.checkAlive();
    if (!this._pipelines.has(source)) this._pipelines.set(source, new Map());
    const cache = this._pipelines.get(source);
    const label = String(key);
    const id = `${label} ${key.sources.join("+")}`;
    if (!cache.has(id)) {
      const compiled = Promise.all(key.sources.map((f) => source.kernelText(f))).then((texts) =>
        this.compile(label, texts.join("\n"), { constants: key.overrides, files: key.sources.map((f) => `${f}.wgsl`) }));
      compiled.catch(() => cache.delete(id));  // a failure is reported to every waiter, then forgotten
      cache.set(id, compiled);
    }
    return cache.get(id);
  }

  /**
   * A shader module of WGSL text as the bundle holds it, checked by the browser's compiler
   * (parsing, validation, uniformity analysis); `enable` directives prepended as needed.
   * @param {string} label the kernel key.
   * @param {string} text the kernel's .wgsl files, joined.
   * @param {{files: string[], enables?: string[]}} kernel the files, for the error.
   * @returns {Promise<GPUShaderModule>} or throws ShaderError with the compiler's errors.
   */
  async shaderModule(label, text, { files, enables = browserEnables(text) }) {
    this.checkAlive();
    const prelude = enables.map((ext) => `enable ${ext};\n`).join("");
    const module = this.device.createShaderModule({ label, code: prelude + text });
    const errors = (await this.guard(module.getCompilationInfo())).messages.filter((m) => m.type === "error");
    if (errors.length) {
      // line numbers of `text` (the prelude is one line per extension)
      const messages = errors.map((m) => `error ${Math.max(0, m.lineNum - enables.length)}:${m.linePos}: ${m.message}`);
      throw new ShaderError(`kernel ${label} (${files.map((f) => `q4gsw/kernels/${f}`).join(" + ")}) failed to compile:\n${messages.join("\n")}`, label);
    }
    return module;
  }

  /**
   * The compute pipeline (entry point `main`) of WGSL text as the bundle holds it.
   * @param {string} label the kernel key (the pipeline's label).
   * @param {string} text the kernel's .wgsl files, joined.
   * @param {{constants: object, files: string[], enables?: string[]}} kernel override constants and files.
   * @returns {Promise<GPUComputePipeline>} or throws ShaderError.
   */
  async compile(label, text, kernel) {
    const module = await this.shaderModule(label, text, kernel);
    try {
      return await this.device.createComputePipelineAsync({
        label, layout: "auto", compute: { module, entryPoint: "main", constants: kernel.constants },
      });
    } catch (err) {
      const lost = await this.lostError(err);
      if (lost) throw lost;
      throw new ShaderError(`kernel ${label} (${kernel.files.map((f) => `q4gsw/kernels/${f}`).join(" + ")}) failed to compile:\n${err.message}`, label);
    }
  }

  // --- one call -------------------------------------------------------------------------------

  /**
   * out = x @ dequantize(weight)^T (+ bias) (ops/linear.py linear()), as one chain: one submit.
   * @param {Float32Array|GpuTensor} x (M, K) row-major; a GpuTensor stays on the GPU.
   * @param {PackedWeight|GpuWeight} weight from loadBundle() (its bundle holds the kernels).
   * @param {{bias?: Float32Array|GpuTensor|null, m?: number, kernel?: string|null,
   *     activations?: "f32"|"int8", output?: "cpu"|"gpu", timing?: boolean}} options
   *     activations: "f32" (default) or "int8" (x quantized to int8 per 32 k inside decode_int8,
   *     M <= 8: q4gsw.linear(activations="int8") at decode sizes); output: where `out` is returned
   *     (default: "gpu" for a GpuTensor x, else "cpu"); timing (default true for a
   *     Float32Array x): GPU time from timestamp queries where the device has
   *     `timestamp-query`, else wall clock from submit to onSubmittedWorkDone.
   * @returns {Promise<{out: Float32Array|GpuTensor, m: number, n: number, kernel: string|null,
   *     key: string|null, grid: number[], timing: {method: string, ns: number}|null,
   *     fallbacks: {kernel: string, reason: string}[]}>} fallbacks: kernels that suit the
   *     shape but not this device (over its limits, or rejected by its compiler), skipped.
   */
  async linear(x, weight, { bias = null, m = undefined, kernel = null, activations = "f32", output = undefined,
    timing = undefined } = {}) {
    const fn = "linear";
    checkActivations(fn, "activations", activations);
    if (!(weight instanceof PackedWeight || weight instanceof GpuWeight)) {
      throw new DTypeError(fn, "weight", "a q4gsw PackedWeight or GpuWeight", describe(weight));
    }
    const onGpu = x instanceof GpuTensor;
    if (!onGpu && !(x instanceof Float32Array)) throw new DTypeError(fn, "x", "Float32Array or GpuTensor", describe(x));
    if (onGpu && x.runtime !== this) throw new DTypeError(fn, "x", "a GpuTensor of this runtime's device", "one of another Runtime");
    if (onGpu && x.dtype !== "float32") throw new DTypeError(fn, "x", "a float32 GpuTensor", describe(x));
    const k = weight.inFeatures;
    const n = weight.outFeatures;
    let rows;
    if (m === undefined || m === null) {
      const length = onGpu ? x.size : x.length;
      if (length % k !== 0) throw new ShapeError(fn, "x", `(M, K) elements with K = ${k} (the weight's in_features)`, describe(x));
      rows = length / k;
    } else {
      if (typeof m !== "number" || !Number.isInteger(m) || m < 0) throw new ShapeError(fn, "m", "a non-negative int", describe(m));
      if ((onGpu ? x.size : x.length) !== m * k) throw new ShapeError(fn, "x", `M * K = ${m} * ${k} elements`, describe(x));
      rows = m;
    }
    if (bias !== null && bias !== undefined) {
      if (!(bias instanceof Float32Array || bias instanceof GpuTensor)) throw new DTypeError(fn, "bias", "Float32Array or GpuTensor", describe(bias));
      if ((bias.length ?? bias.size) !== n) throw new ShapeError(fn, "bias", `shape (${n},) (the weight's out_features)`, describe(bias));
    }
    output = output ?? (onGpu ? "gpu" : "cpu");
    if (output !== "gpu" && output !== "cpu") throw new ArgumentError(fn, "output", '"cpu" or "gpu"', describe(output));
    const source = weight.bundle;
    if (!source) throw new ArgumentError(fn, "weight", "a weight from loadBundle() (its bundle holds the kernels)", "one without a bundle");
    if (rows === 0) {
      if (kernel !== null) this.router(source.manifest.routing).kernel(kernel, activations);  // throws for an unknown name
      return { out: output === "gpu" ? null : new Float32Array(0), m: 0, n, kernel: null, key: null, grid: [0, 0, 0], timing: null, fallbacks: [] };
    }
    this.checkAlive();
    const chain = new Chain(this, { source, label: "q4gsw/linear" });
    try {
      const xt = onGpu ? new GpuTensor(this, x.buffer, [rows, k], x.dtype) : chain.constant(x, [rows, k]);
      const biasArg = bias instanceof Float32Array ? chain.constant(bias, [n]) : bias;
      const out = await chain.linear(xt, weight, { bias: biasArg, kernel, activations });
      const time = await chain.run({ timing: timing ?? !onGpu });
      const first = chain.dispatches[0];
      const result = { m: rows, n, kernel: chain.linears[0].kernel, key: first.key, grid: first.grid, timing: time,
        fallbacks: chain.linears[0].fallbacks };
      if (output === "gpu") return { ...result, out: chain.detach(out) };
      return { ...result, out: await out.read() };
    } finally {
      chain.release();
    }
  }
}
