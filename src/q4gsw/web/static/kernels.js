// kernels.js: the linear_q4gsw kernels' decisions and the choice among them, pure (no GPU
// calls): KernelKey, each kernel spec's tiles / constants / key / split (q4gsw/kernels/*.py),
// the cost model (kernels/cost.py, its constants from the bundle's manifest) and select
// (kernels/select.py), plus what a browser adds: a kernel over the device's invocation limit
// or that failed to compile is skipped and listed in `fallbacks`.

import { ArgumentError, UnsupportedShapeError, describe } from "./errors.js";

export const ceilDiv = (a, b) => Math.floor((a + b - 1) / b);

/** Field order of the linear kernels' WGSL `struct Params` (12 x u32), as ops/plan.py packs it. */
export const PARAMS_FIELDS = Object.freeze([
  "m", "n", "k", "row_bytes", "group_size", "num_groups", "scale_stride", "out_stride",
  "out_offset", "n_tiles", "tiles", "split_stride",
]);
/** Invocations per workgroup of reduce_splits.wgsl (kernels/spec.py REDUCE_WG). */
export const REDUCE_WG = 256;

/** [x, y, 1] with x * y >= workgroups, each <= maxPerDimension (runtime/dispatch.py fold_grid). */
export function foldGrid(workgroups, maxPerDimension) {
  if (workgroups <= maxPerDimension) return [Math.max(workgroups, 1), 1, 1];
  const y = ceilDiv(workgroups, maxPerDimension);
  if (y > maxPerDimension) throw new RangeError(`${workgroups} workgroups exceed ${maxPerDimension}^2`);
  return [ceilDiv(workgroups, y), y, 1];
}

/** A compiled kernel: name, override constants ([name, value] pairs) and .wgsl files (runtime/pipelines.py). */
export class KernelKey {
  constructor(name, constants = [], { family = "linear_q4gsw", files = null } = {}) {
    this.name = name;
    this.constants = constants;
    this.family = family;
    this.files = files;
  }

  /** The .wgsl files (without extension), joined in this order with "\n". */
  get sources() { return this.files || [this.name]; }
  get label() { return `${this.family}/${this.name}`; }
  /** {name: number} for createComputePipeline's `constants` (booleans as 0 / 1). */
  get overrides() { return Object.fromEntries(this.constants.map(([k, v]) => [k, Number(v)])); }

  toString() {
    const consts = this.constants.map(([k, v]) => `${k}=${typeof v === "boolean" ? Number(v) : v}`).join(",");
    return consts ? `${this.label}[${consts}]` : this.label;
  }
}

/** value if it names activations ("f32" or "int8"), else ArgumentError naming `argument` of `fn`. */
export function checkActivations(fn, argument, value) {
  if (value !== "f32" && value !== "int8") throw new ArgumentError(fn, argument, '"f32" or "int8"', describe(value));
  return value;
}

/** A problem: x (M, K) against an (N, K) weight (kernels/problem.py). */
export function problem(m, n, k, groupSize, hasBias = false) {
  return { m, n, k, groupSize, hasBias, rowBytes: Math.ceil(k / 2), numGroups: ceilDiv(k, groupSize) };
}
const withN = (p, n) => problem(p.m, n, p.k, p.groupSize, p.hasBias);

// ------------------------------------------------------------------------- the cost model

/** The cost model of kernels/cost.py over `costs` (the manifest's `routing`). */
export class CostModel {
  constructor(costs) { this.c = costs; }
  longGrid(p) { return ceilDiv(p.n, 16) >= this.c.long_grid_feature_blocks; }
  decode(p) { return this.c.seconds_fixed + this.c.decode_seconds_per_mac * p.m * p.n * p.k; }
  decodeX2(p) { return this.c.seconds_fixed + this.c.x2_seconds_per_block_mac * ceilDiv(p.m, 2) * p.n * p.k; }
  narrow(p, onCpu) {
    const faster = p.m === 1 && p.n * p.k <= this.c.narrow_max_weights && !onCpu;
    return this.decode(p) * (faster ? this.c.narrow_speedup : this.c.narrow_slowdown);
  }
  decodeInt8(p) { return this.c.seconds_fixed + this.c.decode_int8_seconds_per_mac * p.m * p.n * p.k; }
  decodeBatch(p, xRows, split) {
    const perBlock = this.c.batch_seconds_per_block_mac[String(xRows)];
    return this.c.seconds_fixed + perBlock * ceilDiv(p.m, xRows) * p.n * p.k + this.split(p, split);
  }
  tiled(p, tileM = 128, split = 1) {
    const tiles = ceilDiv(p.m, tileM) * ceilDiv(p.n, 128) * split;
    const perK = tileM === 128 ? this.c.tiled_seconds_per_k_per_wave : this.c.tiled64_seconds_per_k_per_wave;
    const steps = ceilDiv(Math.floor(p.k / 32), split);
    return this.c.seconds_fixed + perK * 32 * steps * ceilDiv(tiles, this.c.tiled_tiles_per_wave) + this.split(p, split);
  }
  split(p, split) {
    return split <= 1 ? 0 : this.c.split_seconds_fixed + this.c.split_seconds_per_partial * split * p.m * p.n;
  }
}

// ------------------------------------------------------------------------------ the specs

class Spec {
  constructor(cost) { this.cost = cost; }
  constants() { return []; }
  files() { return null; }
  key(p) { return new KernelKey(this.name, [["HAS_BIAS", p.hasBias], ...this.constants(p)], { files: this.files() }); }
  split() { return 1; }
  reduceKey(p) { return new KernelKey("reduce_splits", [["HAS_BIAS", p.hasBias], ["SPLIT", this.split(p)], ["WG", REDUCE_WG]]); }
  partialBytes(p) { const s = this.split(p); return s > 1 ? 4 * s * p.m * p.n : 0; }
  predictedSeconds() { return null; }
  shapeReason() { return null; }
  /** null when the kernel can run p on caps, else why not (KernelSpec.supports). */
  supports(p, caps) {
    const reason = this.shapeReason(p);
    if (reason) return reason;
    if (this.partialBytes(p) > caps.maxBindingSize) {
      return `${this.split(p)} partial sums of M x N need ${this.partialBytes(p)} bytes, past the binding limit ${caps.maxBindingSize}`;
    }
    if (this.split(p) > 1 && this.split(p) * p.m * p.n >= 2 ** 32) return "the partial sums need more than 2^32 elements";
    return null;
  }
}

/** decode.wgsl: one row of x a workgroup (or two: xRows 2, decode_x2_*), FEATURES output features (kernels/decode.py Decode). */
export class Decode extends Spec {
  constructor(cost, reduction, partialCapacity, xRows = 1) {
    super(cost);
    this.reduction = reduction;
    this.xRows = xRows;
    this.name = `decode_${xRows === 2 ? "x2_" : ""}${reduction}`;
    this.partialCapacity = partialCapacity;
    this.maxM = 1024;
    this.kPerInvocation = 32;  // one vec4<u32> of a weight row
    this.featuresPerStep = 4;  // decode.wgsl's RB
    this.xSlotBytes = 16;  // decode.wgsl's x_stage slot
  }
  invocations(p) { return Math.max(32, ceilDiv(p.k, this.kPerInvocation * 32) * 32); }
  wantedFeatures(p) { return (this.cost.longGrid(p) && this.reduction === "subgroup") || this.xRows === 2 ? 32 : 16; }
  features(p) {
    const wg = this.invocations(p);
    const cap = Math.floor(Math.min(Math.floor(this.partialCapacity / wg), this.reduction === "workgroup" ? wg : 2 * wg) / this.xRows);
    const step = this.featuresPerStep;
    return Math.max(step, Math.floor(Math.min(this.wantedFeatures(p), cap) / step) * step);
  }
  tiles(p) { return [ceilDiv(p.n, this.features(p)), ceilDiv(p.m, this.xRows)]; }
  constants(p) {
    return [["FEATURES", this.features(p) * this.xRows], ["WG", this.invocations(p)], ["UNPACK_IMAD", true],
      ...(this.xRows === 2 ? [["X_ROWS", 2]] : [])];
  }
  files() { return ["decode", "unpack", `reduce_${this.reduction}`]; }
  predictedSeconds(p) { return this.xRows === 2 ? this.cost.decodeX2(p) : this.cost.decode(p); }
  shapeReason(p) {
    const kpi = this.kPerInvocation;
    if (p.m > this.maxM) return `M=${p.m} > ${this.maxM}`;
    if (p.k % kpi) return `K=${p.k} is not a multiple of ${kpi}`;
    if (p.groupSize % kpi) return `group_size=${p.groupSize} is not a multiple of ${kpi}`;
    if (p.k > kpi * 1024) return `K=${p.k} > ${kpi * 1024} (${kpi} k per invocation, 1024 invocations)`;
    return null;
  }
  workgroupBytes(p) {
    const wg = this.invocations(p);
    const f = this.features(p) * this.xRows;
    return 4 * (this.reduction === "subgroup" ? Math.floor(f * wg / 4) : f * wg + wg) + this.xSlotBytes;
  }
  supports(p, caps) {
    if (this.reduction === "subgroup" && !caps.hasSubgroups) return "the device has no `subgroup` feature";
    const reason = super.supports(p, caps);
    if (reason === null && this.workgroupBytes(p) > caps.maxWorkgroupStorage) {
      return `needs ${this.workgroupBytes(p)} bytes of workgroup memory, the device has ${caps.maxWorkgroupStorage}`;
    }
    return reason;
  }
}

/** decode_narrow.wgsl: decode with 8-byte loads, 8 rows a workgroup (kernels/decode.py DecodeNarrow). */
export class DecodeNarrow extends Decode {
  constructor(cost, reduction, partialCapacity, onCpu) {
    super(cost, reduction, partialCapacity);
    this.name = `decode_narrow_${reduction}`;
    this.onCpu = onCpu;
    this.kPerInvocation = 16;  // one vec2<u32> of a weight row
    this.featuresPerStep = 8;
    this.xSlotBytes = 0;
  }
  wantedFeatures() { return 8; }
  files() { return ["decode_narrow", "unpack", `reduce_${this.reduction}`]; }
  predictedSeconds(p) { return this.cost.narrow(p, this.onCpu); }
}

/**
 * decode_int8.wgsl: small M with 8-bit activations in one dispatch, x quantized per 32 k inside the
 * kernel (kernels/decode.py DecodeInt8; activations "int8").
 */
export class DecodeInt8 extends Decode {
  constructor(cost, reduction, partialCapacity, onCpu) {
    super(cost, reduction, partialCapacity);
    this.name = `decode_int8_${reduction}`;
    this.activations = "int8";
    this.onCpu = onCpu;
    this.maxM = 8;
    this.xSlotBytes = 0;
  }
  wantedFeatures(p) {
    if (p.m >= 2 || this.cost.longGrid(p)) return 32;
    return p.n * p.k <= this.cost.c.narrow_max_weights && !this.onCpu ? 8 : 16;
  }
  constants(p) { return [["FEATURES", this.features(p)], ["WG", this.invocations(p)]]; }
  files() { return ["decode_int8", `reduce_${this.reduction}`]; }
  predictedSeconds(p) { return this.cost.decodeInt8(p); }
}

/** decode_batch.wgsl: blocks of 2, 4 or 8 rows of x, K split past 8192 (kernels/decode.py DecodeBatch). */
export class DecodeBatch extends Spec {
  constructor(cost, minLanes, storageLimit) {
    super(cost);
    this.name = "decode_batch";
    this.minLanes = minLanes;
    this.storageLimit = storageLimit;
    this.maxK = 32768;
  }
  xRows(p) { return p.m <= 2 ? 2 : p.m <= 4 ? 4 : 8; }
  split(p) { return Math.max(1, ceilDiv(Math.floor(p.k / 8), this.xRows(p) === 8 ? 512 : 1024)); }
  invocations(p) { return Math.max(32, ceilDiv(ceilDiv(Math.floor(p.k / 8), this.split(p)), 32) * 32); }
  workgroupBytes(p, features) {
    return 4 * features * this.xRows(p) * Math.floor(this.invocations(p) / this.minLanes);
  }
  features(p) {
    let f = this.xRows(p) === 8 ? 64 : this.cost.longGrid(p) ? 32 : 16;
    while (f > 4 && this.workgroupBytes(p, f) > this.storageLimit) f = Math.floor(f / 2);
    return f;
  }
  predictedSeconds(p) { return this.cost.decodeBatch(p, this.xRows(p), this.split(p)); }
  tiles(p) { return [ceilDiv(p.n, this.features(p)), ceilDiv(p.m, this.xRows(p)) * this.split(p)]; }
  constants(p) {
    return [["WG", this.invocations(p)], ["FEATURES", this.features(p)], ["X_ROWS", this.xRows(p)],
      ["MIN_LANES", this.minLanes], ["SPLIT", this.split(p)], ["UNPACK_IMAD", true]];
  }
  files() { return ["decode_batch", "unpack"]; }
  shapeReason(p) {
    if (p.k % 8) return `K=${p.k} is not a multiple of 8`;
    if (p.k > this.maxK) return `K=${p.k} > ${this.maxK} (at most 8 workgroups of 512 invocations, 8 k each, cover K)`;
    if (p.groupSize % 8) return `group_size=${p.groupSize} is not a multiple of 8`;
    return null;
  }
  supports(p, caps) {
    if (!caps.hasSubgroups) return "the device has no `subgroup` feature";
    const reason = super.supports(p, caps);
    const bytes = reason === null ? this.workgroupBytes(p, this.features(p)) : 0;
    if (bytes > this.storageLimit) {
      return `needs ${bytes} bytes of workgroup memory (subgroups of ${this.minLanes}), the device has ${this.storageLimit}`;
    }
    return reason;
  }
}

/** tiled.wgsl: 128 x 128 output tiles (kernels/tiled.py Tiled). */
export class Tiled extends Spec {
  constructor(cost) { super(cost); this.name = "tiled"; }
  invocations() { return 256; }
  predictedSeconds(p) { return this.cost.tiled(p); }
  tiles(p) { return [ceilDiv(p.n, 128), ceilDiv(p.m, 128)]; }
  files() { return ["tiled", "store_tile"]; }
  shapeReason(p) {
    if (p.k % 32) return `K=${p.k} is not a multiple of 32`;
    if (p.groupSize % 32) return `group_size=${p.groupSize} is not a multiple of 32`;
    return null;
  }
}

/** tiled.wgsl with 64- or 128-row tiles and K split (kernels/tiled.py TiledSplit). */
export class TiledSplit extends Tiled {
  constructor(cost) { super(cost); this.name = "tiled_split"; this.maxSplit = 16; }
  tileRows(p) { return p.m <= 64 ? 64 : 128; }
  split(p) {
    const tiles = ceilDiv(p.m, this.tileRows(p)) * ceilDiv(p.n, 128);
    let split = 1;
    while (split * 2 <= this.maxSplit && tiles * split * 2 <= this.cost.c.tiled_tiles_per_wave
      && Math.floor(Math.floor(p.k / 32) / (split * 2)) >= 4) split *= 2;
    return split;
  }
  predictedSeconds(p) { return this.cost.tiled(p, this.tileRows(p), this.split(p)); }
  tiles(p) { return [ceilDiv(p.n, 128), ceilDiv(p.m, this.tileRows(p)) * this.split(p)]; }
  constants(p) { return [["TILE_M", this.tileRows(p)], ["SPLIT", this.split(p)]]; }
}

/** general.wgsl: any shape, a workgroup per (output feature, 4 rows of x) (kernels/general.py). */
export class General extends Spec {
  constructor(cost) { super(cost); this.name = "general"; }
  invocations() { return 64; }
  tiles(p) { return [p.n, ceilDiv(p.m, 4)]; }
  constants() { return [["WG", 64]]; }
}

// ------------------------------------------------------------------------------ the choice

/**
 * The kernels of a bundle on one device, and the choice among them.
 * @param {object} costs the manifest's `routing` (kernels/cost.py's constants).
 * @param {{hasSubgroups: boolean, subgroupMinSize: number, maxBindingSize: number,
 *     maxWorkgroupStorage: number, maxInvocations: number, isCpu: boolean}} caps what the device
 *     offers (isCpu: a software adapter such as SwiftShader, where decode_narrow is not preferred).
 * @param {Map<string, string>} broken kernel name -> the compiler's message, for kernels
 *     this browser failed to compile.
 */
export class Router {
  constructor(costs, caps, broken = new Map()) {
    this.cost = new CostModel(costs);
    this.caps = caps;
    this.broken = broken;
    const capacity = costs.decode_partial_capacity;
    /** In the order ties are broken (select.py KERNELS, less the baseline). */
    this.kernels = [
      new Decode(this.cost, "subgroup", capacity.subgroup), new Decode(this.cost, "workgroup", capacity.workgroup),
      new DecodeNarrow(this.cost, "subgroup", capacity.subgroup, Boolean(caps.isCpu)),
      new Decode(this.cost, "subgroup", capacity.subgroup, 2),
      new DecodeBatch(this.cost, caps.subgroupMinSize, caps.maxWorkgroupStorage),
      new Tiled(this.cost), new TiledSplit(this.cost), new General(this.cost),
    ];
    /** The 8-bit-activation kernels q4gsw.js has (select.py INT8_KERNELS' decode_int8 only: no int8 GEMM here). */
    this.int8Kernels = [new DecodeInt8(this.cost, "subgroup", capacity.subgroup, Boolean(caps.isCpu)),
      new DecodeInt8(this.cost, "workgroup", capacity.workgroup, Boolean(caps.isCpu))];
  }

  /** The kernels computing with `activations` ("f32" or "int8"). */
  registry(activations) {
    if (activations === "f32") return this.kernels;
    if (activations === "int8") return this.int8Kernels;
    throw new UnsupportedShapeError(`activations: expected "f32" or "int8", got ${JSON.stringify(activations)}`);
  }

  /** The kernel `name` among those computing with `activations` (UnsupportedShapeError for an unknown one). */
  kernel(name, activations = "f32") {
    const kernels = this.registry(activations);
    const spec = kernels.find((s) => s.name === name);
    if (!spec) {
      const other = activations === "f32" ? "int8" : "f32";
      if (this.registry(other).some((s) => s.name === name)) {
        throw new UnsupportedShapeError(`kernel '${name}' computes with ${other} activations, not ${activations} (pass activations "${other}")`);
      }
      throw new UnsupportedShapeError(`unknown kernel ${JSON.stringify(name)}; known for ${activations} activations: ${kernels.map((s) => s.name).join(", ")}`);
    }
    return spec;
  }

  /** Why this device cannot run spec on p although its shape is supported, or null. */
  deviceReason(spec, p) {
    if (this.broken.has(spec.name)) return `failed to compile on this device: ${this.broken.get(spec.name)}`;
    const invocations = spec.invocations(p);
    if (invocations > this.caps.maxInvocations) {
      return `needs ${invocations} invocations per workgroup, the device has ${this.caps.maxInvocations}`;
    }
    return null;
  }

  /**
   * The kernel for p: `name` if given (or UnsupportedShapeError saying why it cannot run p);
   * else the supported one with the least predicted time (ties: kernel order), else the
   * first fallback (general), as kernels.select() chooses. A kernel this device cannot run
   * is skipped; should the cost model prefer a decode kernel that is skipped, general (a
   * mat-vec like decode) stands in rather than a 128-row tile computing 1 useful row.
   * activations: "f32" (the default kernels) or "int8" (decode_int8 only: M <= 8).
   * @returns {{spec: Spec, fallbacks: {kernel: string, reason: string}[]}} fallbacks: the
   *     kernels ranked ahead of the chosen one that suit p's shape but not this device.
   */
  select(p, name = null, activations = "f32") {
    const shape = `M=${p.m} N=${p.n} K=${p.k} group_size=${p.groupSize}`;
    if (name !== null && name !== undefined) {
      const spec = this.kernel(name, activations);
      const reason = spec.supports(p, this.caps) || this.deviceReason(spec, p);
      if (reason) throw new UnsupportedShapeError(`kernel '${name}' cannot run ${shape}: ${reason}`);
      return { spec, fallbacks: [] };
    }
    const reasons = [];
    const skipped = [];  // {spec, seconds, reason}: suits the shape, not this device
    let best = null;
    let preferred = null;  // the choice on a device without the browser's limits
    let fallback = null;
    for (const spec of this.registry(activations)) {
      const reason = spec.supports(p, this.caps);
      if (reason) { reasons.push(`${spec.name}: ${reason}`); continue; }
      const device = this.deviceReason(spec, p);
      const seconds = spec.predictedSeconds(p);
      if (seconds !== null && (preferred === null || seconds < preferred.seconds)) preferred = { spec, seconds };
      if (device) {
        skipped.push({ spec, seconds, reason: device });
        reasons.push(`${spec.name}: ${device}`);
      } else if (seconds === null) {
        fallback = fallback || { spec, seconds };
      } else if (best === null || seconds < best.seconds) {
        best = { spec, seconds };
      }
    }
    const isDecode = (spec) => spec.name.startsWith("decode");
    let chosen = best || fallback;
    if (preferred && skipped.some((s) => s.spec === preferred.spec) && isDecode(preferred.spec)
      && !(best && isDecode(best.spec)) && fallback) chosen = fallback;
    if (chosen) {
      // the kernels ranked ahead of the chosen one that this device cannot run
      const order = this.registry(activations);
      const ahead = (s) => s.seconds !== null && (chosen.seconds === null || s.seconds < chosen.seconds
        || (s.seconds === chosen.seconds && order.indexOf(s.spec) < order.indexOf(chosen.spec)));
      return { spec: chosen.spec, fallbacks: skipped.filter(ahead).map((s) => ({ kernel: s.spec.name, reason: s.reason })) };
    }
    throw new UnsupportedShapeError(`no kernel runs ${shape}: ${reasons.join("; ")}`);
  }
}

/** Workgroups of the reduce_splits dispatch: one invocation per output element. */
export const reduceWorkgroups = (p) => ceilDiv(p.m * p.n, REDUCE_WG);
export { withN };
