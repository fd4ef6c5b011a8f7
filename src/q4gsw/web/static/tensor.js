// tensor.js: what data lives where. PackedWeight (ExecuTorch's int4 bytes and scales in JS
// memory, format.py), GpuWeight (a weight's GPU buffers, split along N into chunks that each
// fit one storage binding, runtime/weights.py) and GpuTensor (a float32 / uint32 tensor in a
// GPU buffer, or a float16 one: a half-precision KV cache; chain.py).

import { DTypeError, GroupSizeError, ShapeError, describe, positiveInt } from "./errors.js";

/** Element types a GpuTensor can hold ("float16": a half-precision KV cache, read and written as IEEE half bits). */
export const DTYPES = Object.freeze(["float32", "uint32", "float16"]);
/** Bytes an element of each dtype takes. */
export const DTYPE_BYTES = Object.freeze({ float32: 4, uint32: 4, float16: 2 });
const ARRAYS = { float32: Float32Array, uint32: Uint32Array, float16: Uint16Array };

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
    /** The bundle whose kernels run this weight (set by loadBundle), or null. */
    this.bundle = null;
  }

  /** ceil(K / group_size): the scale rows that are used. */
  get numGroups() { return Math.ceil(this.inFeatures / this.groupSize); }
  get rowBytes() { return Math.ceil(this.inFeatures / 2); }

  /** Output features per GPU chunk under a binding limit (runtime/weights.py features_per_chunk). */
  featuresPerChunk(maxBinding) {
    const scaleBytes = 4 * this.numGroups * this.paddedN;
    if (this.weights.length <= maxBinding && scaleBytes <= maxBinding) return this.outFeatures;
    const perFeature = Math.max(this.rowBytes, 4 * this.numGroups);
    return Math.max(1, Math.min(this.outFeatures, Math.floor(maxBinding / perFeature)));
  }
}

/**
 * A weight's GPU copy: chunks of output features [n0, n0 + n), each its own weights and
 * scales buffers (scale row stride `scaleStride`), each within one storage binding.
 */
export class GpuWeight {
  /**
   * @param {{outFeatures: number, inFeatures: number, groupSize: number,
   *     chunks: {n0: number, n: number, weights: GPUBuffer, scales: GPUBuffer, scaleStride: number}[]}} w
   */
  constructor({ outFeatures, inFeatures, groupSize, chunks, bundle = null }) {
    Object.assign(this, { outFeatures, inFeatures, groupSize, chunks, bundle });
  }

  get numGroups() { return Math.ceil(this.inFeatures / this.groupSize); }
  get rowBytes() { return Math.ceil(this.inFeatures / 2); }

  /** Free the GPU buffers now. */
  release() {
    for (const c of this.chunks) { c.weights.destroy(); c.scales.destroy(); }
    this.chunks = [];
  }
}

/** Bytes a GPU buffer of nbytes is given: a multiple of 16 (kernels read vec4), at least 16. */
export const paddedSize = (nbytes) => Math.max(16, Math.ceil(nbytes / 16) * 16);

/** A tensor in a GPU buffer (row-major, contiguous), like q4gsw.chain.GpuTensor. */
export class GpuTensor {
  /**
   * @param {Runtime} runtime the runtime whose device holds the buffer.
   * @param {GPUBuffer} buffer at least nbytes; STORAGE, and COPY_SRC to be read.
   * @param {number[]} shape
   * @param {"float32"|"uint32"|"float16"} dtype
   */
  constructor(runtime, buffer, shape, dtype = "float32") {
    this.runtime = runtime;
    this.buffer = buffer;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
  }

  /**
   * A GpuTensor over a buffer you made (ONNX Runtime Web's Tensor.fromGpuBuffer): the
   * buffer needs STORAGE usage (and COPY_SRC for read()).
   * @param {Runtime} runtime
   * @param {GPUBuffer} buffer
   * @param {{shape: number[], dtype?: "float32"|"uint32"|"float16"}} options
   */
  static fromGpuBuffer(runtime, buffer, { shape, dtype = "float32" }) {
    const fn = "GpuTensor.fromGpuBuffer";
    if (!globalThis.GPUBuffer || !(buffer instanceof GPUBuffer)) throw new DTypeError(fn, "buffer", "a GPUBuffer", describe(buffer));
    if (!DTYPES.includes(dtype)) throw new DTypeError(fn, "dtype", `one of ${DTYPES.join(", ")}`, describe(dtype));
    if (!Array.isArray(shape) || !shape.every((s) => Number.isInteger(s) && s > 0)) {
      throw new ShapeError(fn, "shape", "an array of positive ints", describe(shape));
    }
    const t = new GpuTensor(runtime, buffer, shape, dtype);
    if (buffer.size < t.nbytes) throw new ShapeError(fn, "buffer", `at least ${t.nbytes} bytes for shape [${shape}]`, `${buffer.size} bytes`);
    if (!(buffer.usage & GPUBufferUsage.STORAGE)) throw new DTypeError(fn, "buffer", "a buffer with STORAGE usage", `usage ${buffer.usage}`);
    return t;
  }

  get size() { return this.shape.reduce((a, b) => a * b, 1); }
  get nbytes() { return DTYPE_BYTES[this.dtype] * this.size; }
  get [Symbol.toStringTag]() { return `GpuTensor [${this.shape}] ${this.dtype}`; }

  /** Read back: a new Float32Array (Uint32Array for uint32, Uint16Array of half bits for float16) after the work submitted so far. */
  async read() {
    const bytes = await this.runtime.readBuffer(this.buffer, this.nbytes);
    return new ARRAYS[this.dtype](bytes);
  }

  /** Overwrite the contents with a typed array of `size` elements of `dtype`. */
  write(array) {
    const fn = "GpuTensor.write";
    const Type = ARRAYS[this.dtype];
    if (!(array instanceof Type)) throw new DTypeError(fn, "array", Type.name, describe(array));
    if (array.length !== this.size) throw new ShapeError(fn, "array", `${this.size} elements (shape [${this.shape}])`, describe(array));
    this.runtime.checkAlive(fn);
    this.runtime.device.queue.writeBuffer(this.buffer, 0, array);
  }

  /** Free the GPU buffer now. */
  release() { this.buffer.destroy(); }
}
