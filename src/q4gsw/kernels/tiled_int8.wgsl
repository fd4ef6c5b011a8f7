// linear_q4gsw/tiled_int8: prefill with 8-bit activations (ExecuTorch's linear_dq8ca_q4gsw),
// the second dispatch after quantize_int8.wgsl. int4 weights x int8 activations summed in i32
// with dot4I8Packed (4 products a call), the group's two scales applied once per group:
//   out[m, n] = sum over groups g of xs[g][m] * ws[g][n] * f32(sum over k in g of xq[m, k] * (u[n, k] - 8))
// A workgroup of WG invocations (256, or 512) computes a TILE_M (rows of x: 128 or 64) x TILE_N (output
// features: 128 or 64) tile, BK (32 or 64) k a step. Per step, in workgroup memory:
//   Xs: the int8 x tile, per k-quad (4 k: one u32 of xq, in quantize_int8's octet order) a vec4
//       over 4 rows: Xs[quad][m / 4];
//   Ws: the weight tile as signed int8 (u - 8), expanded once per step from the nibbles
//       (lo = w & 0x0F0F0F0F: even k, hi = (w >> 4) & 0x0F0F0F0F: odd k, the same order as
//       xq; u - 8 per byte = (u + 0x78) ^ 0x80), Ws[quad][n / 4];
//   Ss: per 32-k chunk, the TILE_M x-scales then the TILE_N weight scales of the chunk's group.
// Each invocation owns an 8 x 8 output tile (the second four rows dropped where TILE_M = WG / 4,
// i.e. 64 rows of 256 invocations or 128 of 512; the second four features at TILE_N = 64, at
// compile time): rows {4ty..4ty+3, 64+4ty..64+4ty+3},
// features {4tx..4tx+3, 64+4tx..64+4tx+3}, as 16 vec4<i32> sums and 16 vec4<f32> accumulators
// (named, never arrays: local memory is slow on NVIDIA). Per k-quad: 4 vec4 reads of workgroup
// memory, 64 dot4I8Packed (3 and 32 at TILE_M or TILE_N = 64, 2 and 16 at 64 x 64). When a chunk ends a group (or the
// workgroup's k range): 64 i32 -> f32 conversions, 64 x (xs * ws) multiply-adds, sums zeroed.
// DOUBLE: two buffers of tiles, the next step stored into the other one after this step's products: one
// barrier a step; else one buffer, two barriers a step. Global loads of the next step are issued
// before this step's products either way (held in registers). SPLIT > 1: K split over SPLIT
// workgroups per tile, partial tiles written for reduce_splits.wgsl (which adds the bias).
// Edges: rows past M and features past N are clamped on load and not written; k past the
// workgroup's range (K % BK != 0) loads x as 0. Needs K % 32 == 0, group_size % 32 == 0
// (group boundaries fall on chunk ends), |sum| < 2^31 (group_size <= 2^21).
//
// store4 (the output tile's stores): store_tile.wgsl, composed after this file.
// Bindings (group 0): 0 out, 1 xq (vec4<u32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params (as tiled.wgsl), 6 xs (f32, [num_groups][M]).
// Overrides: HAS_BIAS, TILE_M (64 or 128), TILE_N (64 or 128), WG (256, or 512 with TILE_M 128),
// BK (32 or 64), DOUBLE, SPLIT, XG32
// (x has a scale per 32 k, xs[k / 32][m], rather than per weight group: the scales are applied at
// every chunk), DIAG (diagnostics for timing only, results wrong: 0 the kernel; 1 no staging after
// the first step: no global loads, no workgroup-memory stores, barriers kept; 2 the products cut to
// one k-quad of 8 per chunk; 3 the i32 sums applied only at the end of the workgroup's k, so the
// 64 f32 accumulators are not live in the loop).

override HAS_BIAS: bool = false;
override SPLIT: u32 = 1u;
override TILE_M: u32 = 128u;
override BK: u32 = 32u;  // the spec passes 64 where its 36 KiB of workgroup memory fit
override DOUBLE: bool = true;
override XG32: bool = false;
override TILE_N: u32 = 128u;
override WG: u32 = 256u;
override DIAG: u32 = 0u;

override NBUF: u32 = select(1u, 2u, DOUBLE);
override ROWS4: bool = TILE_M * 16u == 4u * WG;  // 4 rows of x an invocation (else 8: two sets of 4)
override QUADS: u32 = BK / 4u;       // k-quads (u32 of int8) a step
override CHUNKS: u32 = BK / 32u;     // 32-k chunks a step (scales are staged per chunk)
override XS: u32 = TILE_M / 4u;      // vec4 of Xs per quad
override WS: u32 = TILE_N / 4u;      // vec4 of Ws per quad
override SS: u32 = (TILE_M + TILE_N) / 4u;  // vec4 of Ss per chunk
override XV: u32 = TILE_M * BK / 16u;   // vec4 of xq a step
override WV: u32 = TILE_N * BK / 32u;       // vec4 of weights a step
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

var<workgroup> Xs: array<vec4<u32>, NBUF * QUADS * XS>;
var<workgroup> Ws: array<vec4<u32>, NBUF * QUADS * WS>;
var<workgroup> Ss: array<vec4<f32>, NBUF * CHUNKS * SS>;

// One step's global loads, held in registers between issue and store.
struct Loads {
  x0: vec4<u32>, x1: vec4<u32>, w: vec4<u32>, s0: f32, s1: f32,
}

fn dots(a: u32, b: vec4<u32>) -> vec4<i32> {
  return vec4<i32>(dot4I8Packed(a, b.x), dot4I8Packed(a, b.y), dot4I8Packed(a, b.z), dot4I8Packed(a, b.w));
}

// u - 8 per nibble, as signed bytes: bytes of lo_or_hi are u in 0..15.
fn signed_bytes(u: u32) -> u32 {
  return (u + 0x78787878u) ^ 0x80808080u;
}

// Scale slot i of the step at k0: chunk i / (TILE_M + TILE_N); x-scale of tile row j, or weight
// scale of tile feature j - TILE_M. 0 past the workgroup's k range.
fn load_scale(i: u32, k0: u32, k_end: u32, m0: u32, n0: u32) -> f32 {
  let c = i / (TILE_M + TILE_N);
  let j = i % (TILE_M + TILE_N);
  let kc = k0 + 32u * c;
  if (i >= SV || kc >= k_end) { return 0.0; }
  let g = kc / params.group_size;
  if (j < TILE_M) { return xs[select(g, kc / 32u, XG32) * params.m + min(m0 + j, params.m - 1u)]; }
  return scales[g * params.scale_stride + min(n0 + j - TILE_M, params.n - 1u)];
}

fn load_x(i: u32, k0: u32, k_end: u32, m0: u32) -> vec4<u32> {
  let row = i % TILE_M;
  let k = k0 + 16u * (i / TILE_M);
  if (i >= XV || k >= k_end) { return vec4<u32>(0u); }
  return xq[min(m0 + row, params.m - 1u) * (params.k / 16u) + k / 16u];
}

fn load_w(i: u32, k0: u32, k_end: u32, n0: u32) -> vec4<u32> {
  let row = i % TILE_N;
  let k = k0 + 32u * (i / TILE_N);
  if (i >= WV || k >= k_end) { return vec4<u32>(0u); }
  return weights[min(n0 + row, params.n - 1u) * (params.k / 32u) + k / 32u];
}

fn load(lid: u32, k0: u32, k_end: u32, m0: u32, n0: u32) -> Loads {
  return Loads(load_x(lid, k0, k_end, m0), load_x(lid + WG, k0, k_end, m0), load_w(lid, k0, k_end, n0),
               load_scale(lid, k0, k_end, m0, n0), load_scale(lid + WG, k0, k_end, m0, n0));
}

fn store_x(i: u32, b: u32, v: vec4<u32>) {
  if (i >= XV) { return; }
  let row = i % TILE_M;
  let q = b * QUADS + 4u * (i / TILE_M);
  let r4 = row / 4u;
  let c = row % 4u;
  Xs[q * XS + r4][c] = v.x;
  Xs[(q + 1u) * XS + r4][c] = v.y;
  Xs[(q + 2u) * XS + r4][c] = v.z;
  Xs[(q + 3u) * XS + r4][c] = v.w;
}

fn store_w_word(q: u32, n4: u32, c: u32, w: u32) {
  Ws[q * WS + n4][c] = signed_bytes(w & 0x0F0F0F0Fu);
  Ws[(q + 1u) * WS + n4][c] = signed_bytes((w >> 4u) & 0x0F0F0F0Fu);
}

fn store_w(i: u32, b: u32, v: vec4<u32>) {
  if (i >= WV) { return; }
  let row = i % TILE_N;
  let q = b * QUADS + 8u * (i / TILE_N);  // a vec4 of weights is 32 k: 4 octets, 8 quads
  let n4 = row / 4u;
  let c = row % 4u;
  store_w_word(q, n4, c, v.x);
  store_w_word(q + 2u, n4, c, v.y);
  store_w_word(q + 4u, n4, c, v.z);
  store_w_word(q + 6u, n4, c, v.w);
}

fn store_scale(i: u32, b: u32, s: f32) {
  if (i >= SV) { return; }
  let c = i / (TILE_M + TILE_N);
  let j = i % (TILE_M + TILE_N);
  Ss[(b * CHUNKS + c) * SS + j / 4u][j % 4u] = s;
}

fn store(lid: u32, b: u32, l: Loads) {
  store_x(lid, b, l.x0);
  store_x(lid + WG, b, l.x1);
  store_w(lid, b, l.w);
  store_scale(lid, b, l.s0);
  store_scale(lid + WG, b, l.s1);
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
  let ty = lid / 16u;
  let tx = lid % 16u;

  var i00 = vec4<i32>(0); var i01 = i00; var i10 = i00; var i11 = i00;
  var i20 = i00; var i21 = i00; var i30 = i00; var i31 = i00;
  var i40 = i00; var i41 = i00; var i50 = i00; var i51 = i00;
  var i60 = i00; var i61 = i00; var i70 = i00; var i71 = i00;
  var f00 = vec4<f32>(0.0); var f01 = f00; var f10 = f00; var f11 = f00;
  var f20 = f00; var f21 = f00; var f30 = f00; var f31 = f00;
  var f40 = f00; var f41 = f00; var f50 = f00; var f51 = f00;
  var f60 = f00; var f61 = f00; var f70 = f00; var f71 = f00;

  // this workgroup's k steps: [k_begin, k_end), whole steps of BK except at K
  let steps_per_split = (params.k / BK + select(0u, 1u, params.k % BK != 0u) + SPLIT - 1u) / SPLIT;
  let k_begin = min(split * steps_per_split * BK, params.k);
  let k_end = min(k_begin + steps_per_split * BK, params.k);
  let steps = (k_end - k_begin + BK - 1u) / BK;

  var l = load(lid, k_begin, k_end, m0, n0);
  if (DOUBLE && steps > 0u) {
    store(lid, 0u, l);
    workgroupBarrier();
  }
  for (var s = 0u; s < steps; s++) {
    let k0 = k_begin + s * BK;
    let b = select(0u, s % 2u, DOUBLE);
    let stage = DIAG != 1u;  // DIAG 1: the tiles of the first step are reused (timing only)
    if (!DOUBLE) {
      if (stage || s == 0u) { store(lid, 0u, l); }
      workgroupBarrier();
    }
    if (stage && s + 1u < steps) { l = load(lid, k0 + BK, k_end, m0, n0); }

    for (var c = 0u; c < CHUNKS; c++) {
      for (var qq = 0u; qq < select(8u, 1u, DIAG == 2u); qq++) {
        let q = b * QUADS + 8u * c + qq;
        let a0 = Xs[q * XS + ty];
        let b0 = Ws[q * WS + tx];
        var b1 = vec4<u32>(0u);
        i00 += dots(a0.x, b0); i10 += dots(a0.y, b0); i20 += dots(a0.z, b0); i30 += dots(a0.w, b0);
        if (TILE_N == 128u) {
          b1 = Ws[q * WS + 16u + tx];
          i01 += dots(a0.x, b1); i11 += dots(a0.y, b1); i21 += dots(a0.z, b1); i31 += dots(a0.w, b1);
        }
        if (ROWS4) { continue; }
        let a1 = Xs[q * XS + 16u + ty];
        i40 += dots(a1.x, b0); i50 += dots(a1.y, b0); i60 += dots(a1.z, b0); i70 += dots(a1.w, b0);
        if (TILE_N == 128u) {
          i41 += dots(a1.x, b1); i51 += dots(a1.y, b1); i61 += dots(a1.z, b1); i71 += dots(a1.w, b1);
        }
      }
      // the chunk ends a group (of x or the weight), or this workgroup's k: apply the scales once
      let kc_end = k0 + 32u * (c + 1u);
      let group_ends = (XG32 || kc_end % params.group_size == 0u) && DIAG != 3u;
      if (group_ends || kc_end >= k_end) {
        let sb = (b * CHUNKS + c) * SS;
        let sa0 = Ss[sb + ty];
        let sw0 = Ss[sb + XS + tx];
        f00 = fma(vec4<f32>(i00), sw0 * sa0.x, f00); f10 = fma(vec4<f32>(i10), sw0 * sa0.y, f10);
        f20 = fma(vec4<f32>(i20), sw0 * sa0.z, f20); f30 = fma(vec4<f32>(i30), sw0 * sa0.w, f30);
        i00 = vec4<i32>(0); i10 = i00; i20 = i00; i30 = i00;
        var sw1 = vec4<f32>(0.0);
        if (TILE_N == 128u) {
          sw1 = Ss[sb + XS + 16u + tx];
          f01 = fma(vec4<f32>(i01), sw1 * sa0.x, f01); f11 = fma(vec4<f32>(i11), sw1 * sa0.y, f11);
          f21 = fma(vec4<f32>(i21), sw1 * sa0.z, f21); f31 = fma(vec4<f32>(i31), sw1 * sa0.w, f31);
          i01 = i00; i11 = i00; i21 = i00; i31 = i00;
        }
        if (!ROWS4) {
          let sa1 = Ss[sb + 16u + ty];
          f40 = fma(vec4<f32>(i40), sw0 * sa1.x, f40); f50 = fma(vec4<f32>(i50), sw0 * sa1.y, f50);
          f60 = fma(vec4<f32>(i60), sw0 * sa1.z, f60); f70 = fma(vec4<f32>(i70), sw0 * sa1.w, f70);
          i40 = i00; i50 = i00; i60 = i00; i70 = i00;
          if (TILE_N == 128u) {
            f41 = fma(vec4<f32>(i41), sw1 * sa1.x, f41); f51 = fma(vec4<f32>(i51), sw1 * sa1.y, f51);
            f61 = fma(vec4<f32>(i61), sw1 * sa1.z, f61); f71 = fma(vec4<f32>(i71), sw1 * sa1.w, f71);
            i41 = i00; i51 = i00; i61 = i00; i71 = i00;
          }
        }
      }
    }
    if (DOUBLE && stage && s + 1u < steps) { store(lid, 1u - b, l); }
    workgroupBarrier();
  }

  let r0 = m0 + 4u * ty;
  let r1 = m0 + 64u + 4u * ty;
  let c0 = n0 + 4u * tx;
  let c1 = n0 + 64u + 4u * tx;
  store4(split, r0, c0, f00); store4(split, r0 + 1u, c0, f10);
  store4(split, r0 + 2u, c0, f20); store4(split, r0 + 3u, c0, f30);
  if (TILE_N == 128u) {
    store4(split, r0, c1, f01); store4(split, r0 + 1u, c1, f11);
    store4(split, r0 + 2u, c1, f21); store4(split, r0 + 3u, c1, f31);
  }
  if (ROWS4) { return; }
  store4(split, r1, c0, f40); store4(split, r1 + 1u, c0, f50);
  store4(split, r1 + 2u, c0, f60); store4(split, r1 + 3u, c0, f70);
  if (TILE_N == 128u) {
    store4(split, r1, c1, f41); store4(split, r1 + 1u, c1, f51);
    store4(split, r1 + 2u, c1, f61); store4(split, r1 + 3u, c1, f71);
  }
}
