// Compiled (never run) by tests/test_web_package.py with `tsc --noEmit --strict`: a web
// developer's use of q4gsw.js, typed through q4gsw.d.ts.
import {
  Activations, BundleError, CausalLM, Chain, DeviceLostError, FeatureError, GpuTensor, IntegrityError, KvCache, Q4gswError,
  SentenceEncoder, WordPieceTokenizer, cosineSimilarity, createRuntime, encoderOps, loadBundle, loadModel,
  loadSentenceEncoder, ops,
} from "q4gsw";

export async function generate(prompt: string): Promise<string> {
  const runtime = await createRuntime({ onDeviceLost: (err: DeviceLostError) => console.warn(err.reason) });
  let model: CausalLM;
  const kvCache: KvCache = runtime.caps.features.has("shader-f16") ? "f16" : "f32";
  try {
    const decodeActivations: Activations = "int8";
    model = await loadModel("./", { runtime, maxPositions: 256, kvCache, decodeActivations,
      onProgress: (p) => console.log(p.phase, p.loaded, p.total) });
  } catch (err) {
    if (err instanceof FeatureError) return `needs ${err.feature} for ${err.argument}`;
    if (err instanceof IntegrityError) return `corrupt: ${err.file}`;
    if (err instanceof BundleError) return "not a bundle";
    throw err;
  }
  const tokenizer = await model.tokenizer();
  const ids = tokenizer ? tokenizer.encode(prompt) : [1, 2, 3];
  const out: number[] = await model.generate(ids, 16, { temperature: 0.7, topK: 40, seed: 1, onToken: (id, i) => console.log(i, id) });
  const rate: number = model.lastStats.decodeTokensPerSecond;
  const cacheBytes: number = model.kvCacheBytesPerToken * model.maxPositions;
  console.log(model.kvCache, model.decodeActivations, cacheBytes);
  const logits: Float32Array = await model.logits(ids);
  console.log(rate, logits.length);
  return tokenizer ? tokenizer.decode(out) : out.join(" ");
}

export async function layer(x: Float32Array): Promise<number> {
  const runtime = await createRuntime();
  const bundle = await loadBundle("./", { runtime });
  const { weight, bias } = bundle.layer("layer0");
  const cpu = await runtime.linear(x, weight, { bias });
  const first: Float32Array = cpu.out;
  const xt: GpuTensor = runtime.tensor(x, [1, weight.inFeatures]);
  const gpu = await runtime.linear(xt, weight, { output: "gpu", activations: "int8" });
  const onGpu: GpuTensor = gpu.out;
  const chain = new Chain(runtime, { source: bundle });
  const h = await chain.linear(xt, weight);
  const g = await ops.swiglu(chain, h);
  await chain.run();
  const back = await g.read();
  for (const f of cpu.fallbacks) console.log(f.kernel, f.reason);
  chain.release();
  if (!(onGpu.buffer instanceof GPUBuffer)) throw new Q4gswError("not a buffer");
  return first[0] + back[0] + (cpu.timing ? cpu.timing.ns : 0);
}

export async function similarity(sentences: string[]): Promise<number[][]> {
  const encoder: SentenceEncoder = await loadSentenceEncoder("./minilm/", { onProgress: (p) => console.log(p.phase, p.loaded) });
  const { embeddings, ids } = await encoder.encode(sentences);
  const tokenizer: WordPieceTokenizer = await encoder.tokenizer();
  const again: Float32Array[] = await encoder.encodeIds(sentences.map((s) => tokenizer.encode(s)));
  console.log(ids[0].length, again.length, encoder.lastStats.sentencesPerSecond, encoder.config.dense, encoder.maxTokens);
  const { chain, mask } = await encoder.chainFor(1, 8);
  const pooled: GpuTensor = await encoderOps.meanPoolNormalize(chain, mask, mask, { seq: 8 });
  pooled.release();
  await encoder.release();
  return embeddings.map((a) => embeddings.map((b) => cosineSimilarity(a, b)));
}
