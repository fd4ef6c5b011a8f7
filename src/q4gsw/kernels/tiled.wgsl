// linear_q4gsw/tiled: prefill (large M) as a tiled GEMM. A workgroup of 256 invocations
// computes a TILE_M (rows of x: 128, or 64 for smaller M) x 128 (output features) tile. Per
// step of 32 k:
//   x tile:      TILE_M x 32 floats, stored k-major (As[kk][m], m in vec4) in workgroup memory;
//   weight tile: 128 rows x 32 k, dequantized once ((u - 8) * scale, exact before the
//                multiply) into Bs[kk][n] and then reused by all TILE_M rows of x.
// Each invocation accumulates an 8 x 8 register tile (4 x 8 when TILE_M = WG / 4: 64 rows of 256
// invocations or 128 of 512, the second four rows dropped at compile time):
// rows {4ty..4ty+3, 64+4ty..64+4ty+3},
// features {4tx..4tx+3, 64+4tx..64+4tx+3}, in 16 named vec4 (no arrays: local memory is
// slow on this stack), reading 4 vec4 from workgroup memory per 64 FMAs (3 per 32 at TILE_M 64).
// The next step's global loads are issued before this step's FMAs (held in registers), or
// with PREFETCH = false at the start of their own step (24 fewer registers live across the FMAs).
// The group's scale is read once per step (needs group_size % 32 == 0; the group index
// advances without division). Edges: rows of x past M and features past N are clamped
// on load and not written. Loop trips per invocation: K/32 steps x 32 = K.
// Needs K % 32 == 0, group_size % 32 == 0.
//
// store4 (the output tile's stores): store_tile.wgsl, composed after this file.
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (u32), 3 scales, 4 bias,
//                     5 params: as general.wgsl.
// Overrides: HAS_BIAS, TILE_M (64 or 128), SPLIT (workgroups per tile along K), PREFETCH, WG (256, or
// 512 with TILE_M 128: 4 x 8 an invocation, invocations 256..511 compute but do not stage),
// DIAG (diagnostics for timing only, results wrong: 0 the kernel; 1 no staging after the first
// step: no global loads, no workgroup-memory stores, barriers kept; 2 the FMA loop cut to 1 k of 32).

override HAS_BIAS: bool = false;
override SPLIT: u32 = 1u;
override TILE_M: u32 = 128u;
override PREFETCH: bool = true;
override WG: u32 = 256u;
override ROWS4: bool = TILE_M * 16u == 4u * WG;  // 4 rows of x an invocation (else 8: two sets of 4)
override DIAG: u32 = 0u;
const BN: u32 = 128u;
const BK: u32 = 32u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> As: array<vec4<f32>, 1024>;  // [BK][32]: up to 128 rows as vec4
var<workgroup> Bs: array<vec4<f32>, 1024>;  // [BK][BN / 4]

// (u - 8) for nibbles 4h .. 4h+3 of word w, exactly (2^23 + u - (2^23 + 8)).
fn nibbles(w: u32, h: u32) -> vec4<f32> {
  let s = 16u * h;
  let u = (vec4<u32>(w >> s, w >> (s + 4u), w >> (s + 8u), w >> (s + 12u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
  return bitcast<vec4<f32>>(u) - vec4<f32>(8388616.0);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let tiles_per_split = params.tiles / SPLIT;
  let split = tile / tiles_per_split;
  let n0 = (tile % tiles_per_split % params.n_tiles) * BN;
  let m0 = (tile % tiles_per_split / params.n_tiles) * TILE_M;
  let ty = lid / 16u;
  let tx = lid % 16u;
  // loaders: x rows 4q..4q+3 at k-vec4 kv; weight rows 4q..4q+3, nibbles 4h..4h+3 of word wd
  let q = lid % 32u;
  let kv = lid / 32u;
  let wd = kv / 2u;
  let h = kv % 2u;
  let xrow = params.k / 4u;
  let last_m = params.m - 1u;
  let xa = min(m0 + 4u * q, last_m) * xrow + kv;
  let xb = min(m0 + 4u * q + 1u, last_m) * xrow + kv;
  let xc = min(m0 + 4u * q + 2u, last_m) * xrow + kv;
  let xd = min(m0 + 4u * q + 3u, last_m) * xrow + kv;
  let last_n = params.n - 1u;
  let na = min(n0 + 4u * q, last_n);
  let nb = min(n0 + 4u * q + 1u, last_n);
  let nc = min(n0 + 4u * q + 2u, last_n);
  let nd = min(n0 + 4u * q + 3u, last_n);
  let words = params.k / 8u;  // u32 per weight row

  var acc00 = vec4<f32>(0.0); var acc01 = acc00; var acc10 = acc00; var acc11 = acc00;
  var acc20 = acc00; var acc21 = acc00; var acc30 = acc00; var acc31 = acc00;
  var acc40 = acc00; var acc41 = acc00; var acc50 = acc00; var acc51 = acc00;
  var acc60 = acc00; var acc61 = acc00; var acc70 = acc00; var acc71 = acc00;

  // this workgroup's k steps: [k_begin, k_end), a multiple of BK each
  let steps_per_split = (params.k / BK + SPLIT - 1u) / SPLIT;
  let k_begin = min(split * steps_per_split * BK, params.k);
  let k_end = min(k_begin + steps_per_split * BK, params.k);
  var g = k_begin / params.group_size;  // once per workgroup, not in the loop
  var group_end = (g + 1u) * params.group_size;
  // Global loads run one step ahead (held in registers while the current step computes).
  let kk = 8u * wd + 4u * h;  // k of this invocation's first nibble within a step
  let loader = lid < 256u;  // invocations 0..255 stage the tiles (all of them with WG = 256)
  let loads_x = 4u * q < TILE_M && loader;
  var ra = vec4<f32>(0.0); var rb = ra; var rc = ra; var rd = ra;
  var wa = 0u; var wb = 0u; var wc = 0u; var wd4 = 0u;
  var s = vec4<f32>(0.0);
  if (PREFETCH && loader && k_begin < k_end) {
    if (loads_x) {
      let k4 = k_begin / 4u;
      ra = x[xa + k4]; rb = x[xb + k4]; rc = x[xc + k4]; rd = x[xd + k4];
    }
    let w = k_begin / 8u + wd;
    wa = weights[na * words + w]; wb = weights[nb * words + w];
    wc = weights[nc * words + w]; wd4 = weights[nd * words + w];
    s = vec4<f32>(scales[g * params.scale_stride + na], scales[g * params.scale_stride + nb],
                  scales[g * params.scale_stride + nc], scales[g * params.scale_stride + nd]);
  }
  for (var k0 = k_begin; k0 < k_end; k0 += BK) {
    let stage = DIAG != 1u || k0 == k_begin;  // DIAG 1: the first step's tiles reused (timing only)
    if (!PREFETCH && stage && loader) {  // this step's loads, now
      if (k0 >= group_end) { g += 1u; group_end += params.group_size; }
      if (loads_x) {
        let k4 = k0 / 4u;
        ra = x[xa + k4]; rb = x[xb + k4]; rc = x[xc + k4]; rd = x[xd + k4];
      }
      let w = k0 / 8u + wd;
      wa = weights[na * words + w]; wb = weights[nb * words + w];
      wc = weights[nc * words + w]; wd4 = weights[nd * words + w];
      s = vec4<f32>(scales[g * params.scale_stride + na], scales[g * params.scale_stride + nb],
                    scales[g * params.scale_stride + nc], scales[g * params.scale_stride + nd]);
    }
    // x tile: four rows at one k-vec4, transposed to k-major vec4 over m.
    if (loads_x && stage) {
      As[(4u * kv) * 32u + q] = vec4<f32>(ra.x, rb.x, rc.x, rd.x);
      As[(4u * kv + 1u) * 32u + q] = vec4<f32>(ra.y, rb.y, rc.y, rd.y);
      As[(4u * kv + 2u) * 32u + q] = vec4<f32>(ra.z, rb.z, rc.z, rd.z);
      As[(4u * kv + 3u) * 32u + q] = vec4<f32>(ra.w, rb.w, rc.w, rd.w);
    }
    // weight tile: four rows x four nibbles, dequantized with the group's scales.
    if (stage && loader) {
      let qa = nibbles(wa, h) * s.x;
      let qb = nibbles(wb, h) * s.y;
      let qc = nibbles(wc, h) * s.z;
      let qd = nibbles(wd4, h) * s.w;
      Bs[kk * 32u + q] = vec4<f32>(qa.x, qb.x, qc.x, qd.x);
      Bs[(kk + 1u) * 32u + q] = vec4<f32>(qa.y, qb.y, qc.y, qd.y);
      Bs[(kk + 2u) * 32u + q] = vec4<f32>(qa.z, qb.z, qc.z, qd.z);
      Bs[(kk + 3u) * 32u + q] = vec4<f32>(qa.w, qb.w, qc.w, qd.w);
    }
    workgroupBarrier();

    // the next step's loads, in flight during this step's FMAs
    let k1 = k0 + BK;
    if (PREFETCH && DIAG != 1u && loader && k1 < k_end) {
      if (k1 >= group_end) { g += 1u; group_end += params.group_size; }
      if (loads_x) {
        let k4 = k1 / 4u;
        ra = x[xa + k4]; rb = x[xb + k4]; rc = x[xc + k4]; rd = x[xd + k4];
      }
      let w = k1 / 8u + wd;
      wa = weights[na * words + w]; wb = weights[nb * words + w];
      wc = weights[nc * words + w]; wd4 = weights[nd * words + w];
      s = vec4<f32>(scales[g * params.scale_stride + na], scales[g * params.scale_stride + nb],
                    scales[g * params.scale_stride + nc], scales[g * params.scale_stride + nd]);
    }

    for (var kk2 = 0u; kk2 < select(BK, 1u, DIAG == 2u); kk2++) {
      let a0 = As[kk2 * 32u + ty];
      let b0 = Bs[kk2 * 32u + tx];
      let b1 = Bs[kk2 * 32u + 16u + tx];
      acc00 = fma(vec4<f32>(a0.x), b0, acc00); acc01 = fma(vec4<f32>(a0.x), b1, acc01);
      acc10 = fma(vec4<f32>(a0.y), b0, acc10); acc11 = fma(vec4<f32>(a0.y), b1, acc11);
      acc20 = fma(vec4<f32>(a0.z), b0, acc20); acc21 = fma(vec4<f32>(a0.z), b1, acc21);
      acc30 = fma(vec4<f32>(a0.w), b0, acc30); acc31 = fma(vec4<f32>(a0.w), b1, acc31);
      if (ROWS4) { continue; }
      let a1 = As[kk2 * 32u + 16u + ty];
      acc40 = fma(vec4<f32>(a1.x), b0, acc40); acc41 = fma(vec4<f32>(a1.x), b1, acc41);
      acc50 = fma(vec4<f32>(a1.y), b0, acc50); acc51 = fma(vec4<f32>(a1.y), b1, acc51);
      acc60 = fma(vec4<f32>(a1.z), b0, acc60); acc61 = fma(vec4<f32>(a1.z), b1, acc61);
      acc70 = fma(vec4<f32>(a1.w), b0, acc70); acc71 = fma(vec4<f32>(a1.w), b1, acc71);
    }
    workgroupBarrier();
  }

  let r0 = m0 + 4u * ty;
  let r1 = m0 + 64u + 4u * ty;
  let c0 = n0 + 4u * tx;
  let c1 = n0 + 64u + 4u * tx;
  store4(split, r0, c0, acc00); store4(split, r0, c1, acc01);
  store4(split, r0 + 1u, c0, acc10); store4(split, r0 + 1u, c1, acc11);
  store4(split, r0 + 2u, c0, acc20); store4(split, r0 + 2u, c1, acc21);
  store4(split, r0 + 3u, c0, acc30); store4(split, r0 + 3u, c1, acc31);
  if (ROWS4) { return; }
  store4(split, r1, c0, acc40); store4(split, r1, c1, acc41);
  store4(split, r1 + 1u, c0, acc50); store4(split, r1 + 1u, c1, acc51);
  store4(split, r1 + 2u, c0, acc60); store4(split, r1 + 2u, c1, acc61);
  store4(split, r1 + 3u, c0, acc70); store4(split, r1 + 3u, c1, acc71);
}
