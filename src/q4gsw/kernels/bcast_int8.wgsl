// linear_q4gsw/bcast_int8: prefill with 8-bit activations, the second dispatch after
// quantize_int8.wgsl (same bindings and params as tiled_int8.wgsl), in ONNX Runtime's DP4A shape
// (docs/kernels-prefill.md, "Session 5: ORT's DP4A kernel against tiled_int8"): small tiles, many
// workgroups per SM, one row of x per invocation held in registers, the weights read from workgroup
// memory as broadcasts, the scales applied at every 32-k chunk so that no i32 sum outlives a chunk.
//   out[m, n] = sum over 32-k chunks c of xs[g(c)][m] * ws[g(c)][n] * f32(sum over k in c of xq[m, k] * (u[n, k] - 8))
// A workgroup of 256 invocations computes a 64-row x TILE_N (64 or 128) tile, BK (32, 64 or 128) k a step.
// Invocation i owns row i % 64 and FPT = TILE_N / 4 consecutive features from (i / 64) * FPT: the
// 32 (or 16) invocations of one subgroup share their features, so every weight read is one address
// for the whole subgroup (a broadcast), and the x reads of a chunk are two vec4 per invocation.
// Workgroup memory per step and buffer:
//   Xs[(2c + h) * 64 + row]: the row's 32 k of chunk c as 8 u32 of int8 (quantize_int8's octet
//       order: even k of an octet, then odd), half h of them;
//   Ws[((c * TILE_N) + f) * 2 + h]: feature f's 32 k of chunk c as 8 u32 of signed int8 (u - 8), in
//       the same order (lo = w & 0x0F0F0F0F: even k; hi = (w >> 4) & 0x0F0F0F0F: odd k);
//   Ss: per chunk the 64 x-scales then the TILE_N weight scales of the chunk's group, as vec4.
// Per chunk and 4 features: 8 broadcast vec4 reads, 32 dot4I8Packed in 4 chains of 8, one vec4
// read of weight scales, then acc = fma(vec4<f32>(sums), sx * sw, acc). STEP_SCALES (the spec sets it
// only where a step lies in one group: group_size % BK == 0, x scales per group): the chunks' sums
// add up in i32 over the step and the scales are applied once a step (16 dp4a chains of BK / 4).
// DOUBLE: the next step's global loads issued before this step's products, stored into the other
// buffer after them, one barrier a step; else (ONNX Runtime's order) load, store, barrier, products,
// barrier. SPLIT > 1: K split over SPLIT workgroups per tile, partial tiles for reduce_splits.wgsl.
// Edges: rows past M and features past N clamped on load and not written; chunks past the
// workgroup's k range are skipped. Needs K % 32 == 0 and group_size % 32 == 0 (a chunk lies in one
// group), |a chunk's sum| < 2^31 (always: 32 * 127 * 8).
//
// store4 (the output tile's stores): store_tile.wgsl, composed after this file.
// Bindings (group 0): 0 out, 1 xq (vec4<u32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params (as tiled.wgsl), 6 xs (f32, [num_groups][M]).
// Overrides: HAS_BIAS, TILE_N (64 or 128), BK (32, 64 or 128), DOUBLE, SPLIT, XG32 (x scale per 32 k),
// STEP_SCALES.

override HAS_BIAS: bool = false;
override SPLIT: u32 = 1u;
override TILE_N: u32 = 64u;
override BK: u32 = 32u;
override DOUBLE: bool = true;
override XG32: bool = false;
override STEP_SCALES: bool = false;

const WG: u32 = 256u;
const TILE_M: u32 = 64u;
override NBUF: u32 = select(1u, 2u, DOUBLE);
override CHUNKS: u32 = BK / 32u;            // 32-k chunks a step
override FPT: u32 = TILE_N / 4u;            // features an invocation: 16 or 32
override XV: u32 = TILE_M * BK / 16u;       // vec4 of xq a step
override WV: u32 = TILE_N * BK / 32u;       // vec4 of weights a step
override SC: u32 = (TILE_M + TILE_N) / 4u;  // vec4 of scales a chunk
override SV: u32 = CHUNKS * (TILE_M + TILE_N);  // scales a step

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var<storage, read> xs: array<f32>;

var<workgroup> Xs: array<vec4<u32>, NBUF * CHUNKS * 2u * TILE_M>;
var<workgroup> Ws: array<vec4<u32>, NBUF * CHUNKS * 2u * TILE_N>;
var<workgroup> Ss: array<vec4<f32>, NBUF * CHUNKS * SC>;

// A step's global loads for one invocation: vector slots lid + j WG, j < 4 (x vec4s, then weight
// vec4s: 4 slots at 64 x 128 x 128 k), scale slots lid + j WG, j < 3.
struct Loads { v0: vec4<u32>, v1: vec4<u32>, v2: vec4<u32>, v3: vec4<u32>, s0: f32, s1: f32, s2: f32, }

// u - 8 per nibble, as signed bytes: the bytes of u are 0..15.
fn signed_bytes(u: u32) -> u32 {
  return (u + 0x78787878u) ^ 0x80808080u;
}

// One feature's chunk: 32 int8 products in a chain of 8 dot4I8Packed.
fn chain8(a0: vec4<u32>, a1: vec4<u32>, b0: vec4<u32>, b1: vec4<u32>) -> i32 {
  var s = dot4I8Packed(a0.x, b0.x);
  s += dot4I8Packed(a0.y, b0.y);
  s += dot4I8Packed(a0.z, b0.z);
  s += dot4I8Packed(a0.w, b0.w);
  s += dot4I8Packed(a1.x, b1.x);
  s += dot4I8Packed(a1.y, b1.y);
  s += dot4I8Packed(a1.z, b1.z);
  s += dot4I8Packed(a1.w, b1.w);
  return s;
}

// Four consecutive features' chunk sums; w: the Ws index (in vec4) of the first feature's half 0.
fn quad(a0: vec4<u32>, a1: vec4<u32>, w: u32) -> vec4<i32> {
  return vec4<i32>(chain8(a0, a1, Ws[w], Ws[w + 1u]), chain8(a0, a1, Ws[w + 2u], Ws[w + 3u]),
                   chain8(a0, a1, Ws[w + 4u], Ws[w + 5u]), chain8(a0, a1, Ws[w + 6u], Ws[w + 7u]));
}

fn load_vec(i: u32, k0: u32, k_end: u32, m0: u32, n0: u32) -> vec4<u32> {
  if (i < XV) {  // x: row i / (2 CHUNKS), 16 k at h = i % (2 CHUNKS): a row's step is contiguous
    let h = i % (2u * CHUNKS);
    let k = k0 + 16u * h;
    if (k >= k_end) { return vec4<u32>(0u); }
    return xq[min(m0 + i / (2u * CHUNKS), params.m - 1u) * (params.k / 16u) + k / 16u];
  }
  let j = i - XV;
  let k = k0 + 32u * (j % CHUNKS);
  if (j >= WV || k >= k_end) { return vec4<u32>(0u); }
  return weights[min(n0 + j / CHUNKS, params.n - 1u) * (params.k / 32u) + k / 32u];
}

fn store_vec(i: u32, b: u32, v: vec4<u32>) {
  if (i < XV) {
    let h = i % (2u * CHUNKS);
    Xs[(b * CHUNKS * 2u + h) * TILE_M + i / (2u * CHUNKS)] = v;
    return;
  }
  let j = i - XV;
  if (j >= WV) { return; }
  let w = ((b * CHUNKS + j % CHUNKS) * TILE_N + j / CHUNKS) * 2u;
  let lo = v & vec4<u32>(0x0F0F0F0Fu);
  let hi = (v >> vec4<u32>(4u)) & vec4<u32>(0x0F0F0F0Fu);
  Ws[w] = vec4<u32>(signed_bytes(lo.x), signed_bytes(hi.x), signed_bytes(lo.y), signed_bytes(hi.y));
  Ws[w + 1u] = vec4<u32>(signed_bytes(lo.z), signed_bytes(hi.z), signed_bytes(lo.w), signed_bytes(hi.w));
}

// Scale slot i: chunk i / (TILE_M + TILE_N); the x-scale of tile row j or the weight scale of tile
// feature j - TILE_M. 0 past the workgroup's k range.
fn load_scale(i: u32, k0: u32, k_end: u32, m0: u32, n0: u32) -> f32 {
  let c = i / (TILE_M + TILE_N);
  let j = i % (TILE_M + TILE_N);
  let kc = k0 + 32u * c;
  if (i >= SV || kc >= k_end) { return 0.0; }
  let g = kc / params.group_size;
  if (j < TILE_M) { return xs[select(g, kc / 32u, XG32) * params.m + min(m0 + j, params.m - 1u)]; }
  return scales[g * params.scale_stride + min(n0 + j - TILE_M, params.n - 1u)];
}

fn store_scale(i: u32, b: u32, s: f32) {
  if (i >= SV) { return; }
  let j = i % (TILE_M + TILE_N);
  Ss[(b * CHUNKS + i / (TILE_M + TILE_N)) * SC + j / 4u][j % 4u] = s;
}

fn load(lid: u32, k0: u32, k_end: u32, m0: u32, n0: u32) -> Loads {
  let z = vec4<u32>(0u);
  var l = Loads(load_vec(lid, k0, k_end, m0, n0), z, z, z, load_scale(lid, k0, k_end, m0, n0), 0.0, 0.0);
  if (XV + WV > WG) { l.v1 = load_vec(lid + WG, k0, k_end, m0, n0); }
  if (XV + WV > 2u * WG) { l.v2 = load_vec(lid + 2u * WG, k0, k_end, m0, n0); }
  if (XV + WV > 3u * WG) { l.v3 = load_vec(lid + 3u * WG, k0, k_end, m0, n0); }
  if (SV > WG) { l.s1 = load_scale(lid + WG, k0, k_end, m0, n0); }
  if (SV > 2u * WG) { l.s2 = load_scale(lid + 2u * WG, k0, k_end, m0, n0); }
  return l;
}

fn store(lid: u32, b: u32, l: Loads) {
  store_vec(lid, b, l.v0);
  store_scale(lid, b, l.s0);
  if (XV + WV > WG) { store_vec(lid + WG, b, l.v1); }
  if (XV + WV > 2u * WG) { store_vec(lid + 2u * WG, b, l.v2); }
  if (XV + WV > 3u * WG) { store_vec(lid + 3u * WG, b, l.v3); }
  if (SV > WG) { store_scale(lid + WG, b, l.s1); }
  if (SV > 2u * WG) { store_scale(lid + 2u * WG, b, l.s2); }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let tiles_per_split = params.tiles / SPLIT;
  let split = tile / tiles_per_split;
  let n0 = (tile % tiles_per_split % params.n_tiles) * TILE_N;
  let m0 = (tile % tiles_per_split / params.n_tiles) * TILE_M;
  let row = lid % TILE_M;
  let f0 = (lid / TILE_M) * FPT;  // the first of this invocation's features in the tile

  var acc0 = vec4<f32>(0.0); var acc1 = acc0; var acc2 = acc0; var acc3 = acc0;
  var acc4 = acc0; var acc5 = acc0; var acc6 = acc0; var acc7 = acc0;

  // this workgroup's k steps: [k_begin, k_end), whole steps of BK except at K
  let steps_per_split = (params.k / BK + select(0u, 1u, params.k % BK != 0u) + SPLIT - 1u) / SPLIT;
  let k_begin = min(split * steps_per_split * BK, params.k);
  let k_end = min(k_begin + steps_per_split * BK, params.k);
  let steps = (k_end - k_begin + BK - 1u) / BK;

  var l = Loads(vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u), 0.0, 0.0, 0.0);
  if (DOUBLE && steps > 0u) {
    l = load(lid, k_begin, k_end, m0, n0);
    store(lid, 0u, l);
    workgroupBarrier();
  }
  for (var s = 0u; s < steps; s++) {
    let k0 = k_begin + s * BK;
    var b = 0u;
    if (DOUBLE) {
      b = s % 2u;
      if (s + 1u < steps) { l = load(lid, k0 + BK, k_end, m0, n0); }
    } else {
      store(lid, 0u, load(lid, k0, k_end, m0, n0));
      workgroupBarrier();
    }
    var t0 = vec4<i32>(0); var t1 = t0; var t2 = t0; var t3 = t0;  // STEP_SCALES: the step's sums
    var t4 = t0; var t5 = t0; var t6 = t0; var t7 = t0;
    for (var c = 0u; c < CHUNKS; c++) {
      if (k0 + 32u * c >= k_end) { break; }
      let bc = b * CHUNKS + c;
      let a0 = Xs[2u * bc * TILE_M + row];
      let a1 = Xs[(2u * bc + 1u) * TILE_M + row];
      let w = (bc * TILE_N + f0) * 2u;
      if (STEP_SCALES) {
        t0 += quad(a0, a1, w); t1 += quad(a0, a1, w + 8u);
        t2 += quad(a0, a1, w + 16u); t3 += quad(a0, a1, w + 24u);
        if (FPT == 32u) {
          t4 += quad(a0, a1, w + 32u); t5 += quad(a0, a1, w + 40u);
          t6 += quad(a0, a1, w + 48u); t7 += quad(a0, a1, w + 56u);
        }
        continue;
      }
      let sc = bc * SC;
      let sx = Ss[sc + row / 4u][row % 4u];
      let sw = sc + (TILE_M + f0) / 4u;
      acc0 = fma(vec4<f32>(quad(a0, a1, w)), sx * Ss[sw], acc0);
      acc1 = fma(vec4<f32>(quad(a0, a1, w + 8u)), sx * Ss[sw + 1u], acc1);
      acc2 = fma(vec4<f32>(quad(a0, a1, w + 16u)), sx * Ss[sw + 2u], acc2);
      acc3 = fma(vec4<f32>(quad(a0, a1, w + 24u)), sx * Ss[sw + 3u], acc3);
      if (FPT == 32u) {
        acc4 = fma(vec4<f32>(quad(a0, a1, w + 32u)), sx * Ss[sw + 4u], acc4);
        acc5 = fma(vec4<f32>(quad(a0, a1, w + 40u)), sx * Ss[sw + 5u], acc5);
        acc6 = fma(vec4<f32>(quad(a0, a1, w + 48u)), sx * Ss[sw + 6u], acc6);
        acc7 = fma(vec4<f32>(quad(a0, a1, w + 56u)), sx * Ss[sw + 7u], acc7);
      }
    }
    if (STEP_SCALES) {  // the step lies in one group: its first chunk's scales are the step's
      let sc = b * CHUNKS * SC;
      let sx = Ss[sc + row / 4u][row % 4u];
      let sw = sc + (TILE_M + f0) / 4u;
      acc0 = fma(vec4<f32>(t0), sx * Ss[sw], acc0); acc1 = fma(vec4<f32>(t1), sx * Ss[sw + 1u], acc1);
      acc2 = fma(vec4<f32>(t2), sx * Ss[sw + 2u], acc2); acc3 = fma(vec4<f32>(t3), sx * Ss[sw + 3u], acc3);
      if (FPT == 32u) {
        acc4 = fma(vec4<f32>(t4), sx * Ss[sw + 4u], acc4); acc5 = fma(vec4<f32>(t5), sx * Ss[sw + 5u], acc5);
        acc6 = fma(vec4<f32>(t6), sx * Ss[sw + 6u], acc6); acc7 = fma(vec4<f32>(t7), sx * Ss[sw + 7u], acc7);
      }
    }
    if (DOUBLE && s + 1u < steps) { store(lid, 1u - b, l); }
    workgroupBarrier();
  }

  let r = m0 + row;
  let c0 = n0 + f0;
  store4(split, r, c0, acc0); store4(split, r, c0 + 4u, acc1);
  store4(split, r, c0 + 8u, acc2); store4(split, r, c0 + 12u, acc3);
  if (FPT == 32u) {
    store4(split, r, c0 + 16u, acc4); store4(split, r, c0 + 20u, acc5);
    store4(split, r, c0 + 24u, acc6); store4(split, r, c0 + 28u, acc7);
  }
}
