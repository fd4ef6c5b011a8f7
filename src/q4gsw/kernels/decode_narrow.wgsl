// linear_q4gsw/decode_narrow: decode.wgsl with 8-byte weight loads and 8 rows a step (a variant
// for measurement; routing does not choose it).
//
// Invocation c of a workgroup owns 16 consecutive k (one vec2<u32> of every weight row) and keeps
// x[m, 16c .. 16c+15] in four vec4 registers (decode.wgsl: 32 k, eight). The workgroup walks
// FEATURES consecutive output features, RB = 8 a step, the next step's 8 loads issued before
// the current step's math: per invocation as many bytes in flight as decode.wgsl (8 x 8 bytes a
// step), half the registers of x, twice the invocations per row, half the steps per row block.
// Unpack, scales and the row sums as decode.wgsl (unpack.wgsl and reduce_subgroup.wgsl or
// reduce_workgroup.wgsl are composed after this file); the 8 rows' scales are two 16-byte loads
// when the scale row stride is a multiple of 4. K split over SPLIT workgroups as decode.wgsl
// (partial sums into slice `split` of `out`, added by reduce_splits.wgsl).
// Needs K % 16 == 0, ceil(K / 16 / SPLIT) <= WG, group_size % 16 == 0, 8 | FEATURES,
// FEATURES <= 2 WG (<= WG with reduce_workgroup.wgsl).
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec2<u32>), 3 scales, 4 bias,
//                     5 params: as general.wgsl.
// Overrides: WG (>= K/16/SPLIT, multiple of 32), FEATURES, UNPACK_IMAD, SPLIT, HAS_BIAS.

override WG: u32 = 256u;
override FEATURES: u32 = 32u;
override UNPACK_IMAD: bool = false;
override SPLIT: u32 = 1u;
override HAS_BIAS: bool = false;
const RB: u32 = 8u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<vec4<f32>>;  // f32 scales, 16-byte padded
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

fn scale_at(i: u32) -> f32 { return scales[i >> 2u][i & 3u]; }

// The scales of rows n0 + r .. n0 + r + 3 (clamped to the last row) at group row `base`.
fn scales4(base: u32, row: u32, last_row: u32) -> vec4<f32> {
  if ((params.scale_stride & 3u) == 0u) {
    return scales[(base + row) >> 2u];  // row % 4 == 0: one load (rows past N are never written)
  }
  return vec4<f32>(scale_at(base + min(row, last_row)), scale_at(base + min(row + 1u, last_row)),
                   scale_at(base + min(row + 2u, last_row)), scale_at(base + min(row + 3u, last_row)));
}

// Pair c (k = 16c .. 16c+15) of weight row min(row, last_row).
fn pair_of(row: u32, last_row: u32, pairs: u32, c: u32) -> vec2<u32> { return weights[min(row, last_row) * pairs + c]; }

// sum over 16 k of x_k * (1 + u_k / 16); word i of w holds k = 8i .. 8i+7.
fn dot16(w: vec2<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
  let v = fma(hi4(w.y), x3, fma(lo4(w.y), x2, fma(hi4(w.x), x1, lo4(w.x) * x0)));
  return (v.x + v.y) + (v.z + v.w);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let m = tile % params.m;
  let split = (tile / params.m) % SPLIT;
  let n0 = (tile / params.m / SPLIT) * FEATURES;
  let pairs = params.k / 16u;  // vec2<u32> per weight row
  let pairs_per_split = (pairs + SPLIT - 1u) / SPLIT;
  let pair = split * pairs_per_split + inv.lid;
  let owns_k = inv.lid < pairs_per_split && pair < pairs;
  let c = min(pair, pairs - 1u);
  let last_row = params.n - 1u;

  // Every load of the first step (8 rows of weights, then x) is issued before anything waits
  // on one: with FEATURES = 8 an invocation makes one trip to memory.
  var w0 = pair_of(n0, last_row, pairs, c);      var w1 = pair_of(n0 + 1u, last_row, pairs, c);
  var w2 = pair_of(n0 + 2u, last_row, pairs, c); var w3 = pair_of(n0 + 3u, last_row, pairs, c);
  var w4 = pair_of(n0 + 4u, last_row, pairs, c); var w5 = pair_of(n0 + 5u, last_row, pairs, c);
  var w6 = pair_of(n0 + 6u, last_row, pairs, c); var w7 = pair_of(n0 + 7u, last_row, pairs, c);
  let xb = (m * params.k) / 4u + 4u * c;
  let x0 = x[xb]; let x1 = x[xb + 1u]; let x2 = x[xb + 2u]; let x3 = x[xb + 3u];
  let scale_base = ((16u * c) / params.group_size) * params.scale_stride;
  clear_partials(inv);
  for (var r = 0u; r < FEATURES; r += RB) {
    let s_lo = scales4(scale_base, n0 + r, last_row);
    let s_hi = scales4(scale_base, n0 + r + 4u, last_row);
    // the next step's rows (the last step re-reads its own rows: cache hits)
    let rn = n0 + min(r + RB, FEATURES - RB);
    let v0 = pair_of(rn, last_row, pairs, c);      let v1 = pair_of(rn + 1u, last_row, pairs, c);
    let v2 = pair_of(rn + 2u, last_row, pairs, c); let v3 = pair_of(rn + 3u, last_row, pairs, c);
    let v4 = pair_of(rn + 4u, last_row, pairs, c); let v5 = pair_of(rn + 5u, last_row, pairs, c);
    let v6 = pair_of(rn + 6u, last_row, pairs, c); let v7 = pair_of(rn + 7u, last_row, pairs, c);
    // sum of x over the invocation's 16 k, after the loads above are issued (recomputed a step)
    let xs = x0 + x1 + x2 + x3;
    let x_sum = select(0.0, xs.x + xs.y + xs.z + xs.w, owns_k);
    let d_lo = vec4<f32>(dot16(w0, x0, x1, x2, x3), dot16(w1, x0, x1, x2, x3),
                         dot16(w2, x0, x1, x2, x3), dot16(w3, x0, x1, x2, x3));
    let d_hi = vec4<f32>(dot16(w4, x0, x1, x2, x3), dot16(w5, x0, x1, x2, x3),
                         dot16(w6, x0, x1, x2, x3), dot16(w7, x0, x1, x2, x3));
    store_partials(select(vec4<f32>(0.0), s_lo * (16.0 * d_lo - 24.0 * x_sum), owns_k), r, inv);
    store_partials(select(vec4<f32>(0.0), s_hi * (16.0 * d_hi - 24.0 * x_sum), owns_k), r + 4u, inv);
    w0 = v0; w1 = v1; w2 = v2; w3 = v3; w4 = v4; w5 = v5; w6 = v6; w7 = v7;
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < FEATURES) { store_row(inv.lid, n0, m, split, inv); }
  if (FEATURES > WG && inv.lid + WG < FEATURES) { store_row(inv.lid + WG, n0, m, split, inv); }
}

// The workgroup's total for its output feature f (row n0 + f), into out (its slice `split` with SPLIT > 1).
fn store_row(f: u32, n0: u32, m: u32, split: u32, inv: Invocation) {
  let n = n0 + f;
  if (n < params.n) {
    var total = row_total(f, inv);
    if (HAS_BIAS && SPLIT == 1u) { total += bias[params.out_offset + n]; }  // else reduce_splits adds it
    out[split * params.split_stride + m * params.out_stride + params.out_offset + n] = total;
  }
}
