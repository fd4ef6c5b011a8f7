// Type declarations of q4gsw.js (the ES modules beside this file). Checked with
// `npx tsc --noEmit` against tests/web/types_check.ts (see tests/test_web_package.py).

/// <reference types="@webgpu/types" />

// ------------------------------------------------------------------------------------ errors

/** Base class of every error q4gsw.js throws on purpose. */
export class Q4gswError extends Error {}
/** An argument is malformed: names the function, the argument, what was expected and what came. */
export class ArgumentError extends Q4gswError {
  constructor(fn: string, argument: string, expected: string, got: string);
  readonly function: string;
  readonly argument: string;
  readonly expected: string;
  readonly got: string;
}
export class DTypeError extends ArgumentError {}
export class ShapeError extends ArgumentError {}
export class GroupSizeError extends ArgumentError {}
/** A size exceeds what the device can bind or dispatch (or a bundle's chunks exceed a binding). */
export class SizeLimitError extends ArgumentError {}
/** An option needs a WebGPU feature the device lacks (kvCache "f16" without shader-f16). */
export class FeatureError extends ArgumentError {
  constructor(fn: string, argument: string, expected: string, got: string, feature: string);
  /** The missing feature, e.g. "shader-f16". */
  readonly feature: string;
}
/** A kernel was asked for a problem it does not support (the reason is in the message). */
export class UnsupportedShapeError extends Q4gswError {}
/** No WebGPU adapter or device. */
export class DeviceError extends Q4gswError {}
/** The device was lost: every later call on its Runtime throws this; make a new Runtime. */
export class DeviceLostError extends DeviceError {
  /** GPUDeviceLostInfo.reason: "destroyed" or "unknown". */
  readonly reason: string;
  readonly deviceMessage: string;
}
/** A kernel failed to compile; names the kernel key and its .wgsl files. */
export class ShaderError extends Q4gswError {
  readonly key: string | null;
}
/** The bundle is not one this q4gsw.js reads (format, version, kind, a missing file or entry, HTTP). */
export class BundleError extends Q4gswError {}
/** A bundle file is not what its manifest says (truncated, too long, another sha256). */
export class IntegrityError extends BundleError {
  readonly file: string;
  readonly expected: string;
  readonly got: string;
}
/** tokenizer.json holds a kind of tokenizer tokenizer.js does not implement. */
export class UnsupportedTokenizerError extends Q4gswError {}
export function describe(value: unknown): string;

// ------------------------------------------------------------------------- tensors, weights

/** "float16": a half-precision KV cache, read and written as IEEE half bits (Uint16Array). */
export type DType = "float32" | "uint32" | "float16";
export const DTYPES: readonly DType[];
export const DTYPE_BYTES: Readonly<Record<DType, number>>;

/** A tensor in a GPU buffer (row-major, contiguous). */
export class GpuTensor {
  /** Wrap a buffer you made (STORAGE usage; COPY_SRC to read it back). */
  static fromGpuBuffer(runtime: Runtime, buffer: GPUBuffer, options: { shape: number[]; dtype?: DType }): GpuTensor;
  readonly runtime: Runtime;
  readonly buffer: GPUBuffer;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly size: number;
  readonly nbytes: number;
  /** A copy of the contents after the work submitted so far. */
  read(): Promise<Float32Array | Uint32Array | Uint16Array>;
  write(array: Float32Array | Uint32Array | Uint16Array): void;
  release(): void;
}

/** A 4-bit groupwise-symmetric weight as ExecuTorch serializes it, in JS memory. */
export class PackedWeight {
  constructor(weights: Uint8Array, scales: Float32Array, groupSize: number,
    shape: { outFeatures: number; inFeatures: number; paddedN: number });
  readonly weights: Uint8Array;
  readonly scales: Float32Array;
  readonly groupSize: number;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly paddedN: number;
  readonly numGroups: number;
  readonly rowBytes: number;
  /** The bundle whose kernels run it (set by loadBundle), or null. */
  bundle: Bundle | null;
  featuresPerChunk(maxBinding: number): number;
}

export interface WeightChunk {
  n0: number;
  n: number;
  weights: GPUBuffer;
  scales: GPUBuffer;
  scaleStride: number;
}

/** A weight's GPU buffers, split along N into chunks that each fit one storage binding. */
export class GpuWeight {
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly groupSize: number;
  readonly numGroups: number;
  readonly rowBytes: number;
  chunks: WeightChunk[];
  bundle: Bundle | null;
  release(): void;
}

// --------------------------------------------------------------------------------- routing

export const PARAMS_FIELDS: readonly string[];
export function foldGrid(workgroups: number, maxPerDimension: number): [number, number, number];

export interface Problem {
  m: number; n: number; k: number; groupSize: number; hasBias: boolean; rowBytes: number; numGroups: number;
}
export function problem(m: number, n: number, k: number, groupSize: number, hasBias?: boolean): Problem;

export class KernelKey {
  constructor(name: string, constants?: [string, number | boolean][], options?: { family?: string; files?: string[] | null });
  readonly name: string;
  readonly constants: [string, number | boolean][];
  readonly family: string;
  readonly sources: string[];
  readonly label: string;
  readonly overrides: Record<string, number>;
  toString(): string;
}

export interface KernelSpec {
  readonly name: string;
  supports(p: Problem, caps: RouterCaps): string | null;
  tiles(p: Problem): [number, number];
  split(p: Problem): number;
  key(p: Problem): KernelKey;
  reduceKey(p: Problem): KernelKey;
  invocations(p: Problem): number;
  predictedSeconds(p: Problem): number | null;
}

export interface RouterCaps {
  hasSubgroups: boolean;
  subgroupMinSize: number;
  maxBindingSize: number;
  maxWorkgroupStorage: number;
  maxInvocations: number;
  /** A software adapter (SwiftShader, llvmpipe): decode_narrow is not preferred there. */
  isCpu?: boolean;
}

export interface Fallback {
  kernel: string;
  reason: string;
}

/** The kernels of a bundle on one device, and the choice among them (kernels.select). */
export class Router {
  constructor(costs: Record<string, unknown>, caps: RouterCaps, broken?: Map<string, string>);
  readonly kernels: KernelSpec[];
  /** The 8-bit-activation kernels (decode_int8_subgroup, decode_int8_workgroup). */
  readonly int8Kernels: KernelSpec[];
  readonly broken: Map<string, string>;
  registry(activations: Activations): KernelSpec[];
  kernel(name: string, activations?: Activations): KernelSpec;
  select(p: Problem, name?: string | null, activations?: Activations): { spec: KernelSpec; fallbacks: Fallback[] };
}

// --------------------------------------------------------------------------------- runtime

export const WANTED_FEATURES: readonly string[];
export const RAISED_LIMITS: readonly string[];
export function browserEnables(wgsl: string): string[];

export interface RuntimeOptions {
  powerPreference?: GPUPowerPreference;
  disableFeatures?: string[];
  /** Fold grids over this many workgroups per dimension (when below the device's limit). */
  maxWorkgroupsPerDimension?: number;
  /** Called once if the device is lost. */
  onDeviceLost?: (error: DeviceLostError) => void;
}

export interface Capabilities extends RouterCaps {
  adapter: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  features: Set<string>;
  limits: GPUSupportedLimits;
  hasTimestamps: boolean;
}

export interface Timing {
  method: "timestamp-query" | "wall-clock";
  ns: number;
}

export interface LinearOptions {
  bias?: Float32Array | GpuTensor | null;
  m?: number;
  /** Force a kernel by name (default: chosen by the cost model). */
  kernel?: string | null;
  /** "int8": x quantized to int8 per 32 k inside decode_int8 (M <= 8); default "f32". */
  activations?: Activations;
  /** Where `out` is returned: default "gpu" for a GpuTensor x, else "cpu". */
  output?: "cpu" | "gpu";
  timing?: boolean;
}

export interface LinearResult<Out> {
  out: Out;
  m: number;
  n: number;
  kernel: string | null;
  key: string | null;
  grid: number[];
  timing: Timing | null;
  fallbacks: Fallback[];
}

export function createRuntime(options?: RuntimeOptions): Promise<Runtime>;

/** One device: what it offers, its buffers and pipelines, and linear(). */
export class Runtime {
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly caps: Capabilities;
  readonly maxWorkgroupsPerDimension: number;
  /** null, or the error every call throws once the device is lost. */
  readonly lost: DeviceLostError | null;
  readonly hasTimestamps: boolean;
  checkAlive(): void;
  router(costs: Record<string, unknown>): Router;
  tensor(data: Float32Array | Uint32Array, shape?: number[]): GpuTensor;
  empty(shape: number[], dtype?: DType, label?: string): GpuTensor;
  gpuWeight(weight: PackedWeight | GpuWeight): GpuWeight;
  compile(label: string, wgsl: string, kernel: { constants: Record<string, number>; files: string[]; enables?: string[] }): Promise<GPUComputePipeline>;
  shaderModule(label: string, wgsl: string, kernel: { files: string[]; enables?: string[] }): Promise<GPUShaderModule>;
  /** out = x @ dequantize(weight)^T (+ bias), one submit. */
  linear(x: Float32Array, weight: PackedWeight | GpuWeight, options?: LinearOptions & { output?: "cpu" }): Promise<LinearResult<Float32Array>>;
  linear(x: Float32Array | GpuTensor, weight: PackedWeight | GpuWeight, options: LinearOptions & { output: "gpu" }): Promise<LinearResult<GpuTensor>>;
  linear(x: GpuTensor, weight: PackedWeight | GpuWeight, options?: LinearOptions): Promise<LinearResult<GpuTensor | Float32Array>>;
}

// ----------------------------------------------------------------------------------- chains

export interface DescribedDispatch {
  key: string;
  grid: number[];
  params: number[] | null;
}

/** Ops recorded once, replayed in one compute pass and one submit. */
export class Chain {
  constructor(runtime: Runtime, options: { source: Bundle; label?: string });
  readonly runtime: Runtime;
  readonly length: number;
  readonly linears: { kernel: string; fallbacks: Fallback[] }[];
  constant(data: Float32Array | Uint32Array, shape?: number[]): GpuTensor;
  output(shape: number[], dtype?: DType): GpuTensor;
  params(words: ArrayLike<number>): GPUBuffer;
  detach(tensor: GpuTensor): GpuTensor;
  record(name: string | KernelKey, constants: [string, number | boolean][], buffers: GPUBuffer[], workgroups: number,
    options?: { family?: string; files?: string[] | null }): Promise<void>;
  linear(x: GpuTensor, weight: PackedWeight | GpuWeight, options?: { bias?: GpuTensor | null; kernel?: string | null; activations?: Activations }): Promise<GpuTensor>;
  encode(encoder: GPUCommandEncoder, options?: { timestampWrites?: GPUComputePassTimestampWrites }): void;
  commandBuffer(options?: { copies?: [GPUBuffer, number, GPUBuffer, number, number][] }): GPUCommandBuffer;
  run(options?: { timing?: boolean }): Promise<Timing | null>;
  submit(commandBuffer: GPUCommandBuffer): Promise<void>;
  describe(): DescribedDispatch[];
  release(): void;
}

export namespace ops {
  function embedRows(chain: Chain, ids: GpuTensor, table: GpuWeight, tokens: number, options?: { idsOffset?: number }): Promise<GpuTensor>;
  function addRmsNorm(chain: Chain, x: GpuTensor, delta: GpuTensor | null, weight: GpuTensor, options: { eps: number; firstRow?: number }): Promise<GpuTensor>;
  function ropeKv(chain: Chain, qkv: GpuTensor, cosSin: GpuTensor, state: GPUBuffer, kCache: GpuTensor, vCache: GpuTensor,
    options: { qHeads: number; kvHeads: number; headDim: number }): Promise<GpuTensor>;
  function attention(chain: Chain, q: GpuTensor, kCache: GpuTensor, vCache: GpuTensor, state: GPUBuffer,
    options: { kvHeads: number; headDim: number; splits?: number; splitKeys?: number; window?: number }): Promise<GpuTensor>;
  function swiglu(chain: Chain, gateUp: GpuTensor): Promise<GpuTensor>;
  function argmax(chain: Chain, logits: GpuTensor, ids: GpuTensor, generated: GpuTensor, state: GPUBuffer, options?: { row?: number }): Promise<void>;
  function sample(chain: Chain, logits: GpuTensor, ids: GpuTensor, generated: GpuTensor, state: GPUBuffer, samplingParams: GPUBuffer,
    options?: { row?: number }): Promise<void>;
  function f32bits(x: number): number;
}

// ----------------------------------------------------------------------------------- bundles

export const FORMAT: "q4gsw-web";
export const VERSION: number;
export const CACHE_NAME: string;
export function sha256Hex(bytes: BufferSource): Promise<string>;

export interface LoadProgress {
  loaded: number;
  total: number;
  file: string;
  files: number;
  filesDone: number;
  fromCache: boolean;
}

export interface Layer {
  name: string;
  weight: PackedWeight | GpuWeight;
  bias: Float32Array | GpuTensor | null;
}

/** A bundle written by `q4gsw export-web`. */
export class Bundle {
  readonly manifest: any;
  readonly baseUrl: URL;
  readonly cache: Cache | null;
  readonly kind: "layers" | "model" | "encoder";
  readonly layers: Map<string, Layer>;
  layer(name: string): Layer;
  kernelText(stem: string): Promise<string>;
  fetchFile(path: string, meta: { nbytes: number; sha256: string }, options?: { onBytes?: (n: number, fromCache: boolean) => void }): Promise<Uint8Array>;
  loadData(options?: { runtime?: Runtime | null; onProgress?: (p: LoadProgress) => void }):
    Promise<{ weights: Map<string, GpuWeight | PackedWeight>; tensors: Map<string, GpuTensor | Float32Array> }>;
}

export function openBundle(base: string | URL, options?: { cache?: boolean | string }): Promise<Bundle>;
export function loadBundle(base: string | URL, options?: { runtime?: Runtime | null; onProgress?: (p: LoadProgress) => void; cache?: boolean | string }): Promise<Bundle>;

// ------------------------------------------------------------------------------------ models

export interface ModelConfig {
  architecture: string;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  max_position_embeddings: number;
  max_positions: number;
  tie_word_embeddings: boolean;
  qkv_bias: boolean;
  o_bias: boolean;
  windows: number[];
  bos_token_id: number | null;
  eos_token_ids: number[];
}

export class GenerateStats {
  promptTokens: number;
  newTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
}

export interface GenerateOptions {
  /** 0 (default): greedy. */
  temperature?: number;
  topK?: number | null;
  topP?: number | null;
  seed?: number | null;
  /** Called with each new id as it arrives. */
  onToken?: ((id: number, index: number) => void) | null;
  /** Stop after one of these (default: the config's; [] never stops early). */
  eosTokenIds?: number[] | null;
}

/** A Llama-family decoder on the GPU. */
export class CausalLM {
  readonly runtime: Runtime;
  readonly bundle: Bundle;
  readonly config: ModelConfig;
  readonly maxPositions: number;
  /** How the KV cache stores K and V. */
  readonly kvCache: KvCache;
  /** How the decode step (and prompts of up to DECODE_INT8_ROWS tokens) run their linears. */
  readonly decodeActivations: Activations;
  /** Bytes of KV cache a position takes (K and V of every layer). */
  readonly kvCacheBytesPerToken: number;
  readonly lastStats: GenerateStats;
  generate(inputIds: ArrayLike<number>, maxNewTokens: number, options?: GenerateOptions): Promise<number[]>;
  logits(inputIds: ArrayLike<number>): Promise<Float32Array>;
  tokenizer(): Promise<Tokenizer | null>;
  decodeChain(greedy?: boolean): Promise<{ chain: Chain; logits: GpuTensor }>;
  prefillChain(rows: number, options?: { allLogits?: boolean; greedy?: boolean }): Promise<{ chain: Chain; logits: GpuTensor }>;
  release(): Promise<void>;
}

export interface ModelProgress extends Partial<LoadProgress> {
  phase: "fetch" | "compile";
}

/** "f16": K and V in half precision (half the memory and reads; needs shader-f16, else FeatureError). */
export type KvCache = "f32" | "f16";
export const KV_CACHES: Readonly<Record<KvCache, DType>>;
/** "int8": x quantized to int8 on the GPU before the int4 products (~5e-3 relative error a linear). */
export type Activations = "f32" | "int8";
/** Prompts of up to this many tokens run the model's decodeActivations (decode_int8's largest M). */
export const DECODE_INT8_ROWS: number;

export function loadModel(base: string | URL, options?: {
  runtime?: Runtime | null;
  maxPositions?: number | null;
  cache?: boolean | string;
  kvCache?: KvCache;
  decodeActivations?: Activations;
  onProgress?: (p: ModelProgress) => void;
}): Promise<CausalLM>;

// --------------------------------------------------------------------------------- tokenizer

/** Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, Llama 3, Qwen2). */
export class Tokenizer {
  static fromJSON(json: unknown): Tokenizer;
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
}

// ------------------------------------------------------------------------ sentence embeddings

/** A linear kept dense: its rows (K padded to a multiple of 4) in chunks along N. */
export interface DenseChunk {
  n0: number;
  n: number;
  /** float32 rows, or float16 rows as u32 pairs (uint32). */
  weights: GpuTensor;
}

/** A dense (N, K) fp32 or fp16 weight on the GPU (mixed precision). */
export class GpuDenseWeight {
  constructor(options: { outFeatures: number; inFeatures: number; dtype: "float32" | "float16"; chunks: DenseChunk[] });
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly dtype: "float32" | "float16";
  readonly chunks: DenseChunk[];
  /** vec4 per weight row on the GPU. */
  readonly row: number;
  release(): void;
}

export interface DenseProblem {
  m: number; n: number; k: number; dtype: "float32" | "float16"; hasBias: boolean;
}

export interface DenseKernel {
  readonly file: string;
  tiles(p: DenseProblem): [number, number];
  constants(p: DenseProblem): [string, number | boolean][];
  /** Why the kernel cannot run p on the device, or null. */
  reason(p: DenseProblem, caps: RouterCaps): string | null;
}

export const DENSE_KERNELS: Readonly<Record<"gemv" | "gemm" | "general", DenseKernel>>;
/** gemv for M <= 8, gemm above, general where neither runs. */
export function selectDense(p: DenseProblem, caps: RouterCaps): "gemv" | "gemm" | "general" | undefined;
/** out = x @ weight^T (+ bias) recorded into chain, one dispatch per weight chunk. */
export function denseLinear(chain: Chain, x: GpuTensor, weight: GpuDenseWeight, options?: { bias?: GpuTensor | null }): Promise<GpuTensor>;

export namespace encoderOps {
  const MAX_KEYS: number;
  function tokenEmbeddings(chain: Chain, ids: GpuTensor, typeIds: GpuTensor, wordChunks: { n0: number; table: GpuTensor }[],
    position: GpuTensor, tokenType: GpuTensor, options: { seq: number }): Promise<GpuTensor>;
  function layerNorm(chain: Chain, x: GpuTensor, delta: GpuTensor | null, weight: GpuTensor, bias: GpuTensor, options: { eps: number }): Promise<GpuTensor>;
  function gelu(chain: Chain, x: GpuTensor): Promise<GpuTensor>;
  function encoderAttention(chain: Chain, q: GpuTensor, k: GpuTensor, v: GpuTensor, mask: GpuTensor,
    options: { heads: number; seq: number }): Promise<GpuTensor>;
  function meanPoolNormalize(chain: Chain, hidden: GpuTensor, mask: GpuTensor, options: { seq: number }): Promise<GpuTensor>;
}

/** Where a table or dense weight's rows [n0, n0 + n) lie: a tensor of the bundle. */
export interface RowChunk {
  tensor: string;
  n0: number;
  n: number;
}

/** The "model" of an encoder bundle (`q4gsw export-web OUT --model minilm`). */
export interface EncoderConfig {
  architecture: string;
  name: string;
  hidden_size: number;
  num_heads: number;
  num_layers: number;
  intermediate_size: number;
  layer_norm_eps: number;
  max_seq_length: number;
  max_position_embeddings: number;
  vocab_size: number;
  type_vocab_size: number;
  pooling: "mean";
  normalize: boolean;
  hidden_act: string;
  group_size: number;
  method: string;
  word_embeddings: RowChunk[];
  dense: Record<string, { N: number; K: number; dtype: "float32" | "float16"; chunks: RowChunk[] }>;
}

export class EncodeStats {
  sentences: number;
  /** B x T, padding included. */
  tokens: number;
  /** Tokenize, submit and read back (recording excluded). */
  seconds: number;
  /** Recording the chain and compiling its kernels (0 when replayed). */
  recordSeconds: number;
  /** Whether this call recorded a chain (a batch shape not seen before). */
  recorded: boolean;
  readonly sentencesPerSecond: number;
}

export interface EncoderChain {
  chain: Chain;
  ids: GpuTensor;
  typeIds: GpuTensor;
  mask: GpuTensor;
  embeddings: GpuTensor;
}

/** all-MiniLM-L6-v2 (BERT, mean pooling, L2 normalization) on the GPU. */
export class SentenceEncoder {
  readonly runtime: Runtime;
  readonly bundle: Bundle;
  readonly config: EncoderConfig;
  readonly lastStats: EncodeStats;
  /** The int4 linears' kernel by name, or null: chosen by the bundle's cost model. */
  readonly linearKernel: string | null;
  readonly linearNames: string[];
  /** The longest sequence (tokens, [CLS] and [SEP] included) a batch may have. */
  readonly maxTokens: number;
  /** Unit-norm embeddings, one per sentence, and the token ids of each; one submit. */
  encode(sentences: string[]): Promise<{ embeddings: Float32Array[]; ids: number[][] }>;
  encodeIds(tokenIds: (number[] | Uint32Array)[]): Promise<Float32Array[]>;
  tokenizer(): Promise<WordPieceTokenizer>;
  record(batch: number, seq: number): Promise<EncoderChain>;
  chainFor(batch: number, seq: number): Promise<EncoderChain>;
  release(): Promise<void>;
}

export function loadSentenceEncoder(base: string | URL, options?: {
  runtime?: Runtime | null;
  cache?: boolean | string;
  /** Run the int4 linears on this kernel (e.g. "tiled") instead of the routed one. */
  linearKernel?: string | null;
  onProgress?: (p: ModelProgress) => void;
}): Promise<SentenceEncoder>;

export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number;

/** BERT's WordPiece from a Hugging Face tokenizer.json (BertNormalizer, BertPreTokenizer, [CLS] A [SEP]). */
export class WordPieceTokenizer {
  static fromJSON(json: unknown, options?: { maxLength?: number | null }): WordPieceTokenizer;
  readonly maxLength: number | null;
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
}

/** out = x @ dequantize(weight)^T (+ bias) in float64 on the CPU. */
export function linearReference(x: Float32Array, weight: PackedWeight, bias?: Float32Array | null): Float64Array;
