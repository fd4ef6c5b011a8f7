// dense.js: linears kept dense (fp32, or fp16 read as u32 pairs) beside the int4 ones: mixed
// precision (q4gsw/kernels/dense.py and ops/dense.py plan_dense, mirrored: the same kernels,
// keys, params words and choice). A GpuDenseWeight's rows are padded to a multiple of 4
// elements and split along N into chunks that each fit one binding, as the Python runtime
// uploads them (and as `q4gsw export-web` writes them).

import { DTypeError, ShapeError, UnsupportedShapeError, describe } from "./errors.js";
import { KernelKey, ceilDiv } from "./kernels.js";
import { GpuTensor } from "./tensor.js";

export const FAMILY = "dense_linear";
/** Up to this many rows of x, gemv; above, gemm (kernels/dense.py GEMV_MAX_M). */
export const GEMV_MAX_M = 8;
/** The storage types and the weight file each one appends to a kernel. */
export const WEIGHT_FILES = Object.freeze({ float32: "dense_weight_f32", float16: "dense_weight_f16" });
/** Workgroup memory of dense_gemm.wgsl (two 1024-vec4 tiles) and its invocations. */
const GEMM_WORKGROUP_BYTES = 32768;
const GEMM_INVOCATIONS = 256;

/** A dense (N, K) weight on the GPU: chunks [{n0, n, weights: GpuTensor of rows [n0, n0 + n)}]. */
export class GpuDenseWeight {
  constructor({ outFeatures, inFeatures, dtype, chunks }) {
    if (!WEIGHT_FILES[dtype]) throw new DTypeError("GpuDenseWeight", "dtype", `one of ${Object.keys(WEIGHT_FILES).join(", ")}`, describe(dtype));
    Object.assign(this, { outFeatures, inFeatures, dtype, chunks });
  }

  /** vec4 per weight row on the GPU: ceil(K / 4). */
  get row() { return ceilDiv(this.inFeatures, 4); }

  release() { for (const c of this.chunks) c.weights.release(); }
}

/** Invocations of gemv for a row of `vec4s` vec4: a power of two in [32, 256] (dense.py _wg_for). */
export function wgFor(vec4s) {
  return Math.max(32, Math.min(256, 2 ** Math.max(0, Math.ceil(Math.log2(Math.max(1, vec4s))))));
}

/** The dense kernels (dense.py's specs): tiles [nTiles, mTiles], constants, why one cannot run p. */
export const DENSE_KERNELS = Object.freeze({
  gemv: { file: "dense_gemv", tiles: (p) => [ceilDiv(p.n, 4), p.m], constants: (p) => [["WG", wgFor(Math.floor(p.k / 4))]],
    reason: (p, caps) => (p.k % 4 ? `K=${p.k} is not a multiple of 4 (gemv reads x as vec4)`
      : wgFor(Math.floor(p.k / 4)) > caps.maxInvocations ? `needs ${wgFor(Math.floor(p.k / 4))} invocations per workgroup, the device has ${caps.maxInvocations}` : null) },
  gemm: { file: "dense_gemm", tiles: (p) => [ceilDiv(p.n, 128), ceilDiv(p.m, 128)], constants: (p) => [["K_TAIL", p.k % 32 !== 0]],
    reason: (p, caps) => (p.k % 4 ? `K=${p.k} is not a multiple of 4 (gemm reads x as vec4)`
      : GEMM_WORKGROUP_BYTES > caps.maxWorkgroupStorage ? `needs ${GEMM_WORKGROUP_BYTES} bytes of workgroup memory, the device has ${caps.maxWorkgroupStorage}`
        : GEMM_INVOCATIONS > caps.maxInvocations ? `needs ${GEMM_INVOCATIONS} invocations per workgroup, the device has ${caps.maxInvocations}` : null) },
  general: { file: "dense_general", tiles: (p) => [p.n, ceilDiv(p.m, 4)], constants: () => [["WG", 64]], reason: () => null },
});

/** The kernel name for p = {m, n, k, dtype, hasBias} (dense.py select_dense): gemv for M <= 8, gemm above, general where neither runs. */
export function selectDense(p, caps) {
  const order = p.m <= GEMV_MAX_M ? ["gemv", "gemm", "general"] : ["gemm", "gemv", "general"];
  return order.find((name) => DENSE_KERNELS[name].reason(p, caps) === null);
}

/** The KernelKey of a dense kernel on p (dense.py DenseSpec.key). */
export function denseKey(name, p) {
  const spec = DENSE_KERNELS[name];
  return new KernelKey(name, [["HAS_BIAS", p.hasBias], ...spec.constants(p)], { family: FAMILY, files: [spec.file, WEIGHT_FILES[p.dtype]] });
}

/**
 * out = x @ weight^T (+ bias) with a dense weight, recorded into chain (Chain.dense_linear):
 * one dispatch per weight chunk.
 * @param {Chain} chain
 * @param {GpuTensor} x (..., K) float32.
 * @param {GpuDenseWeight} weight
 * @param {{bias?: GpuTensor|null}} options
 * @returns {Promise<GpuTensor>} (..., N).
 */
export async function denseLinear(chain, x, weight, { bias = null } = {}) {
  const fn = "Chain.dense_linear";
  x = chain.tensor(fn, "x", x);
  if (!(weight instanceof GpuDenseWeight)) throw new DTypeError(fn, "weight", "a GpuDenseWeight", describe(weight));
  const k = weight.inFeatures;
  const n = weight.outFeatures;
  if (x.shape[x.shape.length - 1] !== k) throw new ShapeError(fn, "x", `(..., K) with K = ${k} (the weight's in_features)`, describe(x));
  if (bias !== null && chain.tensor(fn, "bias", bias).size !== n) throw new ShapeError(fn, "bias", `shape (${n},) (the weight's out_features)`, describe(bias));
  const m = x.size / k;
  const p = { m, n, k, dtype: weight.dtype, hasBias: bias !== null };
  const name = selectDense(p, chain.runtime.caps);
  if (!name) throw new UnsupportedShapeError(`no dense kernel runs M=${m} N=${n} K=${k} on this device`);
  const out = chain.output([...x.shape.slice(0, -1), n]);
  const biasBuf = bias ? bias.buffer : chain.output([1]).buffer;
  for (const chunk of weight.chunks) {
    if (!(chunk.weights instanceof GpuTensor)) throw new DTypeError(fn, "weight", "chunks of GpuTensor rows", describe(chunk.weights));
    const cp = { ...p, n: chunk.n };
    const [nTiles, mTiles] = DENSE_KERNELS[name].tiles(cp);
    const params = chain.params([cp.m, cp.n, cp.k, weight.row, n, chunk.n0, nTiles, nTiles * mTiles]);
    await chain.record(denseKey(name, cp), null, [out.buffer, x.buffer, chunk.weights.buffer, biasBuf, params], nTiles * mTiles);
  }
  return out;
}
