// chain.js: device-resident chains (q4gsw/chain.py, ops/plan.py). A Chain records ops once
// against GpuTensors -- every output, params buffer, pipeline and bind group made while
// recording -- and replays them in one compute pass and one submit, allocating nothing.

import { DTypeError, Q4gswError, ShaderError, ShapeError, SizeLimitError, describe } from "./errors.js";
import { KernelKey, PARAMS_FIELDS, checkActivations, foldGrid, problem, reduceWorkgroups, withN } from "./kernels.js";
import { GpuTensor, GpuWeight, PackedWeight } from "./tensor.js";

/**
 * Ops recorded once, replayed by run() in one compute pass and one submit.
 *
 *   const chain = new Chain(rt, { source: bundle });
 *   const h = await chain.linear(x, bundle.layer("up").weight);
 *   await chain.run();              // or encode(encoder) into your own pass
 *   const y = await h.read();
 */
export class Chain {
  /**
   * @param {Runtime} runtime
   * @param {{source: Bundle, label?: string}} options source: the bundle whose kernels run.
   */
  constructor(runtime, { source, label = "q4gsw/chain" } = {}) {
    this.runtime = runtime;
    this.source = source;
    this.label = label;
    /** {key, pipeline, bindGroup, grid, params (the words of its params buffer, or null)} in order. */
    this.dispatches = [];
    /** Per linear(): {kernel, fallbacks}. */
    this.linears = [];
    this._owned = [];
    this._words = new Map();  // params buffer -> its words
    this._zero = null;
    this._validated = false;
  }

  // --- tensors ------------------------------------------------------------------------------

  /** A tensor the chain owns holding a copy of `data` (norm weights, biases, an input, ...). */
  constant(data, shape = [data.length]) {
    const t = this.runtime.tensor(data, shape);
    this._owned.push(t.buffer);
    return t;
  }

  /** A new zero-filled tensor the chain owns, that an op writes. */
  output(shape, dtype = "float32") {
    const t = this.runtime.empty(shape, dtype, `${this.label}/out`);
    this._owned.push(t.buffer);
    return t;
  }

  /** A uniform buffer holding `words` (a kernel's params struct; u32, or f32 bits placed by the caller). */
  params(words) {
    const data = words instanceof Uint32Array ? words : Uint32Array.from(words);
    const buffer = this.runtime.upload(data, GPUBufferUsage.UNIFORM, `${this.label}/params`);
    this._owned.push(buffer);
    this._words.set(buffer, Array.from(data));
    return buffer;
  }

  /** t checked: a GpuTensor of this chain's device and of `dtype` (else DTypeError). */
  tensor(fn, name, t, dtype = "float32") {
    if (!(t instanceof GpuTensor)) throw new DTypeError(fn, name, "a GpuTensor (Runtime.tensor, Chain.output)", describe(t));
    if (t.runtime !== this.runtime) throw new DTypeError(fn, name, "a GpuTensor of this chain's device", "one of another Runtime");
    if (t.dtype !== dtype) throw new DTypeError(fn, name, `a ${dtype} GpuTensor`, describe(t));
    return t;
  }

  /** Keep `t` alive after release() (its buffer becomes the caller's). */
  detach(t) {
    this._owned = this._owned.filter((b) => b !== t.buffer);
    return t;
  }

  // --- recording ----------------------------------------------------------------------------

  /**
   * Record <family>/<name>.wgsl with override `constants` ([name, value] pairs) over `buffers`
   * (bindings 0, 1, ... of group 0) on `workgroups` workgroups (folded into a grid).
   */
  async record(name, constants, buffers, workgroups, { family = "chain", files = null } = {}) {
    const key = name instanceof KernelKey ? name : new KernelKey(name, constants, { family, files });
    const pipeline = await this.runtime.pipeline(key, this.source);
    this._bind(key, pipeline, buffers, workgroups);
  }

  _bind(key, pipeline, buffers, workgroups) {
    const bindGroup = this.runtime.device.createBindGroup({
      label: String(key), layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const grid = foldGrid(workgroups, this.runtime.maxWorkgroupsPerDimension);
    this.dispatches.push({ key: String(key), pipeline, bindGroup, grid, params: this._words.get(buffers[buffers.length - 1]) || null });
  }

  _zeroBuffer() {
    if (!this._zero) this._zero = this.output([1]).buffer;
    return this._zero;
  }

  /**
   * out = x @ dequantize(weight)^T (+ bias), as q4gsw's Chain.linear computes it: the kernel
   * chosen by the bundle's cost model on this device, one dispatch per weight chunk, a
   * split-K kernel's reduce_splits right after it.
   * @param {GpuTensor} x (..., K) float32.
   * @param {PackedWeight|GpuWeight} weight
   * @param {{bias?: GpuTensor|null, kernel?: string|null, activations?: "f32"|"int8"}} options
   *     kernel: force one by name; activations: "f32" (default) or "int8" (x quantized to int8
   *     per 32 k inside decode_int8, M <= 8: q4gsw.linear(activations="int8") at decode sizes).
   * @returns {Promise<GpuTensor>} (..., N).
   */
  async linear(x, weight, { bias = null, kernel = null, activations = "f32" } = {}) {
    const fn = "Chain.linear";
    checkActivations(fn, "activations", activations);
    x = this.tensor(fn, "x", x);
    if (weight instanceof PackedWeight) weight = this.runtime.gpuWeight(weight);
    if (!(weight instanceof GpuWeight)) throw new DTypeError(fn, "weight", "a PackedWeight or GpuWeight", describe(weight));
    const k = weight.inFeatures;
    const n = weight.outFeatures;
    if (x.shape[x.shape.length - 1] !== k) throw new ShapeError(fn, "x", `(..., K) with K = ${k} (the weight's in_features)`, describe(x));
    if (bias !== null && (this.tensor(fn, "bias", bias).size !== n)) throw new ShapeError(fn, "bias", `shape (${n},) (the weight's out_features)`, describe(bias));
    const m = x.size / k;
    const p = problem(m, n, k, weight.groupSize, bias !== null);
    const { spec, fallbacks, parts } = await planLinear(this.runtime, fn, p, weight, this.source, kernel, activations);
    const out = this.output([...x.shape.slice(0, -1), n]);
    const biasBuf = bias ? bias.buffer : this._zeroBuffer();
    for (const { chunk, cp, key, pipeline, reduce } of parts) {
      const [nTiles, mTiles] = spec.tiles(cp);
      const split = spec.split(cp);
      const slice = cp.m * cp.n;
      let [target, outStride, outOffset] = [out.buffer, p.n, chunk.n0];
      if (split > 1) {
        target = this.runtime.createBuffer(4 * split * slice, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, "q4gsw/partial-sums");
        this._owned.push(target);
        [outStride, outOffset] = [cp.n, 0];
      }
      const values = { m: cp.m, n: cp.n, k: cp.k, row_bytes: cp.rowBytes, group_size: Math.min(cp.groupSize, cp.k),
        num_groups: cp.numGroups, scale_stride: chunk.scaleStride, out_stride: outStride, out_offset: outOffset,
        n_tiles: nTiles, tiles: nTiles * mTiles, split_stride: split > 1 ? slice : 0 };
      const params = this.params(PARAMS_FIELDS.map((f) => values[f]));
      this._bind(key, pipeline, [target, x.buffer, chunk.weights, chunk.scales, biasBuf, params], nTiles * mTiles);
      if (split > 1) {
        const reduceParams = this.params([cp.m, cp.n, p.n, chunk.n0, slice, slice, 0, 0]);
        this._bind(reduce.key, reduce.pipeline, [out.buffer, target, biasBuf, reduceParams], reduceWorkgroups(cp));
      }
    }
    this.linears.push({ kernel: spec.name, fallbacks });
    return out;
  }

  // --- replay -------------------------------------------------------------------------------

  /** Record the dispatches into one compute pass of `encoder`. */
  encode(encoder, { timestampWrites = undefined } = {}) {
    const pass = encoder.beginComputePass({ label: this.label, timestampWrites });
    for (const d of this.dispatches) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(...d.grid);
    }
    pass.end();
  }

  /** The dispatches (then buffer copies [src, srcOffset, dst, dstOffset, size]) as one command buffer. */
  commandBuffer({ copies = [] } = {}) {
    this.runtime.checkAlive();
    const encoder = this.runtime.device.createCommandEncoder({ label: this.label });
    this.encode(encoder);
    for (const c of copies) encoder.copyBufferToBuffer(...c);
    return encoder.finish();
  }

  /**
   * Submit the chain (validated on its first submit: a WebGPU validation error throws).
   * @param {{timing?: boolean}} options timing: resolve with {method, ns}: GPU time of the
   *     pass from timestamp queries where the device has them, else wall clock until
   *     onSubmittedWorkDone; otherwise resolves with null once submitted.
   */
  async run({ timing = false } = {}) {
    const rt = this.runtime;
    rt.checkAlive();
    const device = rt.device;
    const stamps = timing && rt.hasTimestamps;
    let querySet = null;
    let resolve = null;
    let read = null;
    const encoder = device.createCommandEncoder({ label: this.label });
    if (stamps) {
      querySet = device.createQuerySet({ label: "q4gsw/timestamps", type: "timestamp", count: 2 });
      resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    this.encode(encoder, { timestampWrites: stamps ? { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } : undefined });
    if (stamps) {
      encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, read, 0, 16);
    }
    try {
      const start = performance.now();
      await this.submit(encoder.finish());
      if (!timing) return null;
      if (!stamps) {
        await rt.guard(device.queue.onSubmittedWorkDone());
        return { method: "wall-clock", ns: (performance.now() - start) * 1e6 };
      }
      await rt.guard(read.mapAsync(GPUMapMode.READ));
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      return { method: "timestamp-query", ns: Number(t[1] - t[0]) };
    } finally {
      for (const b of [querySet, resolve, read]) if (b) b.destroy();
    }
  }

  /** queue.submit(commandBuffer), inside a validation error scope the first time. */
  async submit(commandBuffer) {
    const device = this.runtime.device;
    if (this._validated) { device.queue.submit([commandBuffer]); return; }
    device.pushErrorScope("validation");
    device.queue.submit([commandBuffer]);
    const error = await this.runtime.guard(device.popErrorScope());
    if (error) {
      throw (await this.runtime.lostError(new Error(error.message)))
        || new Q4gswError(`${this.label}: WebGPU validation error: ${error.message}`);
    }
    this._validated = true;
  }

  /** What the chain runs: [{key, grid, params}] per dispatch (for tests and profiles). */
  describe() {
    return this.dispatches.map(({ key, grid, params }) => ({ key, grid, params }));
  }

  /** Free every buffer the chain owns (outputs, constants, params, partial sums). */
  release() {
    for (const b of this._owned) b.destroy();
    this._owned = [];
    this.dispatches = [];
    this._words.clear();
    this._zero = null;
  }

  get length() { return this.dispatches.length; }
}

/**
 * The kernel for p and every chunk's compiled pipeline (ops/plan.py plan_linear with the
 * browser's routing): checks sizes first; a kernel the browser fails to compile is
 * recorded as broken and routed around (unless it was asked for: its ShaderError is thrown).
 */
export async function planLinear(runtime, fn, p, weight, source, kernel = null, activations = "f32") {
  const router = runtime.router(source.manifest.routing);
  for (;;) {
    const { spec, fallbacks } = router.select(p, kernel, activations);
    checkSizes(runtime, fn, p, spec);
    try {
      const parts = await Promise.all(weight.chunks.map(async (chunk) => {
        const cp = withN(p, chunk.n);
        const key = spec.key(cp);
        const part = { chunk, cp, key, pipeline: await runtime.pipeline(key, source), reduce: null };
        if (spec.split(cp) > 1) part.reduce = { key: spec.reduceKey(cp), pipeline: await runtime.pipeline(spec.reduceKey(cp), source) };
        return part;
      }));
      return { spec, fallbacks, parts };
    } catch (err) {
      if (kernel !== null || !(err instanceof ShaderError)) throw err;
      router.broken.set(spec.name, err.message);
      console.warn(`q4gsw: ${err.message}\nq4gsw: routing around ${spec.name} on this device`);
    }
  }
}

/** Refuse what the device cannot bind or dispatch, naming the argument (ops/plan.py check_sizes). */
export function checkSizes(runtime, fn, p, spec) {
  const limit = runtime.caps.maxBindingSize;
  if (4 * p.m * p.k > limit) {
    throw new SizeLimitError(fn, "x", `at most ${limit} bytes (the adapter's storage binding limit)`, `${4 * p.m * p.k} bytes (M=${p.m}, K=${p.k})`);
  }
  if (4 * p.m * p.n > limit) {
    throw new SizeLimitError(fn, "x", `M with M * N * 4 <= ${limit} bytes of output`, `${4 * p.m * p.n} bytes (M=${p.m}, N=${p.n})`);
  }
  const [nTiles, mTiles] = spec.tiles(p);
  const dim = runtime.maxWorkgroupsPerDimension;
  if (nTiles * mTiles > dim * dim) throw new SizeLimitError(fn, "x", `at most ${dim}^2 workgroups`, `${nTiles * mTiles} for M=${p.m}, N=${p.n}`);
}
