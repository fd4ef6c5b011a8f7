// q4gsw.js: ExecuTorch's linear_q4gsw and whole Llama-family decoders through navigator.gpu,
// from a bundle written by `q4gsw export-web`: the same WGSL kernels, override constants,
// params structs, kernel choice and recorded graph as the Python runtime (q4gsw.llm).
//
//   import { loadModel } from "./q4gsw.js";
//   const model = await loadModel("./", { onProgress: (p) => console.log(p) });
//   const ids = await model.generate([1, 2, 3], 32, { onToken: (id) => console.log(id) });
//
//   import { createRuntime, loadBundle } from "./q4gsw.js";
//   const rt = await createRuntime();
//   const bundle = await loadBundle("./", { runtime: rt });      // a "layers" bundle
//   const { out } = await rt.linear(x, bundle.layer("layer0").weight);
//
// The modules, by job: errors.js (error classes), kernels.js (kernel specs, cost model,
// routing; pure), tensor.js (PackedWeight, GpuWeight, GpuTensor), runtime.js (device,
// buffers, pipelines, linear()), chain.js (recorded chains), bundle.js (manifest, streamed
// and checked fetches, the Cache API), ops.js (the decoder's ops), model.js (CausalLM,
// loadModel), tokenizer.js (byte-level BPE), and for sentence embeddings: encoder_ops.js (the
// BERT encoder's ops), dense.js (linears kept dense), minilm.js (SentenceEncoder,
// loadSentenceEncoder), wordpiece.js (BERT's WordPiece tokenizer). Differences from Python, all explicit: typed
// arrays instead of ndarrays; kernels using subgroup builtins get `enable subgroups;`
// prepended (Tint needs it, naga rejects it; `enable f16;` is in kv_f16.wgsl itself, which
// both accept); a kernel over the device's invocation limit is
// skipped and listed in `fallbacks` (kernels.js Router.select).

export {
  ArgumentError, BundleError, DTypeError, DeviceError, DeviceLostError, FeatureError, GroupSizeError, IntegrityError,
  Q4gswError, ShaderError, ShapeError, SizeLimitError, UnsupportedShapeError, describe,
} from "./errors.js";
export { KernelKey, PARAMS_FIELDS, Router, foldGrid, problem } from "./kernels.js";
export { DTYPES, DTYPE_BYTES, GpuTensor, GpuWeight, PackedWeight } from "./tensor.js";
export { RAISED_LIMITS, Runtime, WANTED_FEATURES, browserEnables, createRuntime } from "./runtime.js";
export { Chain } from "./chain.js";
export { Bundle, CACHE_NAME, FORMAT, VERSION, loadBundle, openBundle, sha256Hex } from "./bundle.js";
export * as ops from "./ops.js";
export { CausalLM, DECODE_INT8_ROWS, GenerateStats, KV_CACHES, loadModel } from "./model.js";
export { Tokenizer, UnsupportedTokenizerError } from "./tokenizer.js";
export { WordPieceTokenizer } from "./wordpiece.js";
export * as encoderOps from "./encoder_ops.js";
export { DENSE_KERNELS, GpuDenseWeight, denseLinear, selectDense } from "./dense.js";
export { EncodeStats, SentenceEncoder, cosineSimilarity, loadSentenceEncoder } from "./minilm.js";

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
