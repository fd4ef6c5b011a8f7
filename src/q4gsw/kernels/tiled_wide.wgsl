// linear_q4gsw/tiled_wide: tiled.wgsl with a larger register tile. A workgroup of 256
// invocations computes a 128 (rows of x) x 256 (output features) tile, 16 k a step:
//   x tile:      128 x 16 floats, k-major (As[kk][m], m in vec4), stored by invocations 0..127;
//   weight tile: 256 rows x 16 k, dequantized once ((u - 8) * scale) into Bs[kk][n].
// Each invocation accumulates 8 x 16 outputs in 32 named vec4: rows {4ty..4ty+3, 64+4ty..},
// features {4tx.., 64+4tx.., 128+4tx.., 192+4tx..} (+0..3), reading 6 vec4 from workgroup memory
// per 128 FMAs (tiled: 4 per 64). Per step each invocation stages as much as tiled's does per
// 32 k, for the same 2048 FMAs. The next step's global loads are issued before this step's FMAs.
// Edges: rows past M and features past N are clamped on load and not written. With SPLIT > 1,
// K is split over workgroups and reduce_splits.wgsl adds the partial tiles (and the bias).
// Needs K % 32 == 0, group_size % 32 == 0 (a 16-k step lies in one group).
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (u32), 3 scales, 4 bias,
//                     5 params: as tiled.wgsl.
// Overrides: HAS_BIAS, SPLIT (workgroups per tile along K).

override HAS_BIAS: bool = false;
override SPLIT: u32 = 1u;
const TILE_M: u32 = 128u;
const BN: u32 = 256u;
const BK: u32 = 16u;

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

var<workgroup> As: array<vec4<f32>, 512>;   // [BK][TILE_M / 4]
var<workgroup> Bs: array<vec4<f32>, 1024>;  // [BK][BN / 4]

// (u - 8) for nibbles 4h .. 4h+3 of word w, exactly (2^23 + u - (2^23 + 8)).
fn nibbles(w: u32, h: u32) -> vec4<f32> {
  let s = 16u * h;
  let u = (vec4<u32>(w >> s, w >> (s + 4u), w >> (s + 8u), w >> (s + 12u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
  return bitcast<vec4<f32>>(u) - vec4<f32>(8388616.0);
}

fn store4(split: u32, row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  let o = row * params.out_stride + params.out_offset + split * params.split_stride;
  var r = v;
  if (HAS_BIAS && SPLIT == 1u) {  // with a split, reduce_splits adds the bias
    let last = params.n - 1u;
    r += vec4<f32>(bias[params.out_offset + min(col, last)], bias[params.out_offset + min(col + 1u, last)],
                   bias[params.out_offset + min(col + 2u, last)], bias[params.out_offset + min(col + 3u, last)]);
  }
  if (col < params.n) { out[o + col] = r.x; }
  if (col + 1u < params.n) { out[o + col + 1u] = r.y; }
  if (col + 2u < params.n) { out[o + col + 2u] = r.z; }
  if (col + 3u < params.n) { out[o + col + 3u] = r.w; }
}

@compute @workgroup_size(256)
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
  // x loaders (invocations 0..127): rows 4q..4q+3 at k-vec4 kv (0..3)
  let q = lid % 32u;
  let kv = lid / 32u;
  let loads_x = lid < 128u;
  let xrow = params.k / 4u;
  let last_m = params.m - 1u;
  let xa = min(m0 + 4u * q, last_m) * xrow + kv;
  let xb = min(m0 + 4u * q + 1u, last_m) * xrow + kv;
  let xc = min(m0 + 4u * q + 2u, last_m) * xrow + kv;
  let xd = min(m0 + 4u * q + 3u, last_m) * xrow + kv;
  // weight loaders (all): rows 4p..4p+3, nibbles 4h..4h+3 of word wd (of the step's two)
  let p = lid % 64u;
  let kq = lid / 64u;
  let wd = kq / 2u;
  let h = kq % 2u;
  let last_n = params.n - 1u;
  let na = min(n0 + 4u * p, last_n);
  let nb = min(n0 + 4u * p + 1u, last_n);
  let nc = min(n0 + 4u * p + 2u, last_n);
  let nd = min(n0 + 4u * p + 3u, last_n);
  let words = params.k / 8u;  // u32 per weight row
  let kk = 4u * kq;  // k of this invocation's first nibble within a step

  var acc00 = vec4<f32>(0.0); var acc01 = vec4<f32>(0.0); var acc02 = vec4<f32>(0.0); var acc03 = vec4<f32>(0.0);
  var acc10 = vec4<f32>(0.0); var acc11 = vec4<f32>(0.0); var acc12 = vec4<f32>(0.0); var acc13 = vec4<f32>(0.0);
  var acc20 = vec4<f32>(0.0); var acc21 = vec4<f32>(0.0); var acc22 = vec4<f32>(0.0); var acc23 = vec4<f32>(0.0);
  var acc30 = vec4<f32>(0.0); var acc31 = vec4<f32>(0.0); var acc32 = vec4<f32>(0.0); var acc33 = vec4<f32>(0.0);
  var acc40 = vec4<f32>(0.0); var acc41 = vec4<f32>(0.0); var acc42 = vec4<f32>(0.0); var acc43 = vec4<f32>(0.0);
  var acc50 = vec4<f32>(0.0); var acc51 = vec4<f32>(0.0); var acc52 = vec4<f32>(0.0); var acc53 = vec4<f32>(0.0);
  var acc60 = vec4<f32>(0.0); var acc61 = vec4<f32>(0.0); var acc62 = vec4<f32>(0.0); var acc63 = vec4<f32>(0.0);
  var acc70 = vec4<f32>(0.0); var acc71 = vec4<f32>(0.0); var acc72 = vec4<f32>(0.0); var acc73 = vec4<f32>(0.0);

  // this workgroup's k steps: [k_begin, k_end), a multiple of BK each
  let steps_per_split = (params.k / BK + SPLIT - 1u) / SPLIT;
  let k_begin = min(split * steps_per_split * BK, params.k);
  let k_end = min(k_begin + steps_per_split * BK, params.k);
  var g = k_begin / params.group_size;
  var group_end = (g + 1u) * params.group_size;
  var ra = vec4<f32>(0.0); var rb = ra; var rc = ra; var rd = ra;
  var wa = 0u; var wb = 0u; var wc = 0u; var wd4 = 0u;
  var s = vec4<f32>(0.0);
  if (k_begin < k_end) {
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
    if (loads_x) {
      As[(4u * kv) * 32u + q] = vec4<f32>(ra.x, rb.x, rc.x, rd.x);
      As[(4u * kv + 1u) * 32u + q] = vec4<f32>(ra.y, rb.y, rc.y, rd.y);
      As[(4u * kv + 2u) * 32u + q] = vec4<f32>(ra.z, rb.z, rc.z, rd.z);
      As[(4u * kv + 3u) * 32u + q] = vec4<f32>(ra.w, rb.w, rc.w, rd.w);
    }
    let qa = nibbles(wa, h) * s.x;
    let qb = nibbles(wb, h) * s.y;
    let qc = nibbles(wc, h) * s.z;
    let qd = nibbles(wd4, h) * s.w;
    Bs[kk * 64u + p] = vec4<f32>(qa.x, qb.x, qc.x, qd.x);
    Bs[(kk + 1u) * 64u + p] = vec4<f32>(qa.y, qb.y, qc.y, qd.y);
    Bs[(kk + 2u) * 64u + p] = vec4<f32>(qa.z, qb.z, qc.z, qd.z);
    Bs[(kk + 3u) * 64u + p] = vec4<f32>(qa.w, qb.w, qc.w, qd.w);
    workgroupBarrier();

    // the next step's loads, in flight during this step's FMAs
    let k1 = k0 + BK;
    if (k1 < k_end) {
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

    for (var kk2 = 0u; kk2 < BK; kk2++) {
      let a0 = As[kk2 * 32u + ty];
      let a1 = As[kk2 * 32u + 16u + ty];
      let b0 = Bs[kk2 * 64u + tx];
      let b1 = Bs[kk2 * 64u + 16u + tx];
      let b2 = Bs[kk2 * 64u + 32u + tx];
      let b3 = Bs[kk2 * 64u + 48u + tx];
      acc00 = fma(vec4<f32>(a0.x), b0, acc00); acc01 = fma(vec4<f32>(a0.x), b1, acc01);
      acc02 = fma(vec4<f32>(a0.x), b2, acc02); acc03 = fma(vec4<f32>(a0.x), b3, acc03);
      acc10 = fma(vec4<f32>(a0.y), b0, acc10); acc11 = fma(vec4<f32>(a0.y), b1, acc11);
      acc12 = fma(vec4<f32>(a0.y), b2, acc12); acc13 = fma(vec4<f32>(a0.y), b3, acc13);
      acc20 = fma(vec4<f32>(a0.z), b0, acc20); acc21 = fma(vec4<f32>(a0.z), b1, acc21);
      acc22 = fma(vec4<f32>(a0.z), b2, acc22); acc23 = fma(vec4<f32>(a0.z), b3, acc23);
      acc30 = fma(vec4<f32>(a0.w), b0, acc30); acc31 = fma(vec4<f32>(a0.w), b1, acc31);
      acc32 = fma(vec4<f32>(a0.w), b2, acc32); acc33 = fma(vec4<f32>(a0.w), b3, acc33);
      acc40 = fma(vec4<f32>(a1.x), b0, acc40); acc41 = fma(vec4<f32>(a1.x), b1, acc41);
      acc42 = fma(vec4<f32>(a1.x), b2, acc42); acc43 = fma(vec4<f32>(a1.x), b3, acc43);
      acc50 = fma(vec4<f32>(a1.y), b0, acc50); acc51 = fma(vec4<f32>(a1.y), b1, acc51);
      acc52 = fma(vec4<f32>(a1.y), b2, acc52); acc53 = fma(vec4<f32>(a1.y), b3, acc53);
      acc60 = fma(vec4<f32>(a1.z), b0, acc60); acc61 = fma(vec4<f32>(a1.z), b1, acc61);
      acc62 = fma(vec4<f32>(a1.z), b2, acc62); acc63 = fma(vec4<f32>(a1.z), b3, acc63);
      acc70 = fma(vec4<f32>(a1.w), b0, acc70); acc71 = fma(vec4<f32>(a1.w), b1, acc71);
      acc72 = fma(vec4<f32>(a1.w), b2, acc72); acc73 = fma(vec4<f32>(a1.w), b3, acc73);
    }
    workgroupBarrier();
  }

  let r0 = m0 + 4u * ty;
  let r1 = m0 + 64u + 4u * ty;
  let c0 = n0 + 4u * tx;
  let c1 = n0 + 64u + 4u * tx;
  let c2 = n0 + 128u + 4u * tx;
  let c3 = n0 + 192u + 4u * tx;
  store4(split, r0, c0, acc00); store4(split, r0, c1, acc01);
  store4(split, r0, c2, acc02); store4(split, r0, c3, acc03);
  store4(split, r0 + 1u, c0, acc10); store4(split, r0 + 1u, c1, acc11);
  store4(split, r0 + 1u, c2, acc12); store4(split, r0 + 1u, c3, acc13);
  store4(split, r0 + 2u, c0, acc20); store4(split, r0 + 2u, c1, acc21);
  store4(split, r0 + 2u, c2, acc22); store4(split, r0 + 2u, c3, acc23);
  store4(split, r0 + 3u, c0, acc30); store4(split, r0 + 3u, c1, acc31);
  store4(split, r0 + 3u, c2, acc32); store4(split, r0 + 3u, c3, acc33);
  store4(split, r1, c0, acc40); store4(split, r1, c1, acc41);
  store4(split, r1, c2, acc42); store4(split, r1, c3, acc43);
  store4(split, r1 + 1u, c0, acc50); store4(split, r1 + 1u, c1, acc51);
  store4(split, r1 + 1u, c2, acc52); store4(split, r1 + 1u, c3, acc53);
  store4(split, r1 + 2u, c0, acc60); store4(split, r1 + 2u, c1, acc61);
  store4(split, r1 + 2u, c2, acc62); store4(split, r1 + 2u, c3, acc63);
  store4(split, r1 + 3u, c0, acc70); store4(split, r1 + 3u, c1, acc71);
  store4(split, r1 + 3u, c2, acc72); store4(split, r1 + 3u, c3, acc73);
}
