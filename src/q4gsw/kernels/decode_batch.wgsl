// linear_q4gsw/decode_batch: small M > 1 (batched decode), the weight unpack shared by up to
// X_ROWS = 8 rows of x. (decode.wgsl gives each row of x its own workgroups, so M rows cost M
// times its unpack, x loads and reductions.)
//
// Invocation c owns one u32 word (8 k) of every weight row (c < K/8 <= WG: one workgroup
// covers all of K) and keeps x[m, 8c .. 8c+7] of the workgroup's X_ROWS rows of x in 2 x X_ROWS vec4
// registers. A step covers 4 weight rows: 4 coalesced u32 loads (the next step's issued
// before this step's math), each word's 8 nibbles unpacked once to 1 + u/16 (as decode.wgsl:
// sum x (u - 8) = 16 * sum x (1 + u/16) - 24 * sum x, scaled per row), then one 8-term dot
// per row of x. The step's 4 x X_ROWS sums (value j = 4 * (row of x) + weight row) are added
// across the subgroup by a transpose-reduction: each exchange level (subgroupShuffleXor)
// halves the values a lane holds, so 32 sums cost 31 shuffles where 32 subgroupAdds cost
// 160. With 32 lanes each lane ends with one value, with 16 two, with 8 four. A block of 4
// (2) rows of x has 16 (8) sums: it skips the first level (two levels) and adds those lane
// bits last with plain butterflies on what it holds (16 or 9 shuffles). Other subgroup
// sizes take one subgroupAdd per value (correct, slower). A row's total is the sum over the
// subgroups' slots in workgroup memory, after the last step. The slots are sized for
// subgroups of MIN_LANES (the size q4gsw probed on the device); should a driver run this
// pipeline with smaller subgroups, MIN_LANES / lanes of them share a slot and add into it
// in turn, one barrier each (correct, slow).
// K past 8 x 1024 is split over SPLIT workgroups per tile (each a contiguous share of the
// words); they write partial sums into slice `split` of a buffer bound as `out` (compact rows,
// slice size params.split_stride) and reduce_splits.wgsl adds the slices and the bias, as for
// tiled.wgsl.
// Needs K % 8 == 0, ceil(K / 8 / SPLIT) <= WG, group_size % 8 == 0, FEATURES % 4 == 0, the
// subgroup feature.
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (u32), 3 scales, 4 bias,
//                     5 params: as general.wgsl (n_tiles = row blocks; tiles = row blocks x ceil(M / X_ROWS)).
// Overrides: WG (>= K/8, multiple of 32), FEATURES (output features = weight rows per workgroup), X_ROWS (rows of x per
// workgroup: 2, 4 or 8), MIN_LANES (sizes the slots), SPLIT (workgroups per tile along K),
// UNPACK_IMAD (lo4 / hi4 of unpack.wgsl, composed after this file), HAS_BIAS.

override WG: u32 = 512u;
override FEATURES: u32 = 16u;
override X_ROWS: u32 = 8u;
override MIN_LANES: u32 = 4u;
override SPLIT: u32 = 1u;
override UNPACK_IMAD: bool = false;
override HAS_BIAS: bool = false;

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

// [FEATURES][X_ROWS][subgroups]: a subgroup's sum for (weight row, row of x)
var<workgroup> partial: array<f32, FEATURES * X_ROWS * WG / MIN_LANES>;

// Per-invocation builtins only. subgroup_size, workgroup_id and num_workgroups are parameters
// of main of their own: Tint's uniformity analysis (naga has none) takes a struct with one
// per-invocation member as non-uniform, and would reject the barrier under `if (shared_slots)`.
struct Invocation {
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
}

// One row of x (lo, hi: its 8 k; xs: their sum) against the step's 4 unpacked words,
// scaled: s * (16 * dot - 24 * xs), with s16 = 16 s, s24 = 24 s.
fn rows4(a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>, b1: vec4<f32>, a2: vec4<f32>, b2: vec4<f32>,
         a3: vec4<f32>, b3: vec4<f32>, lo: vec4<f32>, hi: vec4<f32>, xs: f32, s16: vec4<f32>,
         s24: vec4<f32>) -> vec4<f32> {
  let d = vec4<f32>(dot(a0, lo) + dot(b0, hi), dot(a1, lo) + dot(b1, hi),
                    dot(a2, lo) + dot(b2, hi), dot(a3, lo) + dot(b3, hi));
  return fma(d, s16, -xs * s24);
}

// One exchange level: a lane with `bit` set keeps `hi` and sends `lo`, the others the
// reverse; each adds what its partner (lane ^ bit) sent.
fn level4(lo: vec4<f32>, hi: vec4<f32>, lane: u32, bit: u32) -> vec4<f32> {
  let upper = (lane & bit) != 0u;
  return select(lo, hi, upper) + subgroupShuffleXor(select(hi, lo, upper), bit);
}

// The exchange levels a block of fewer than 8 rows of x leaves out (a with 4 rows, a and b
// with 2), added last as plain butterflies over the value(s) a lane holds.
fn fold4(v: vec4<f32>, bit_a: u32, bit_b: u32) -> vec4<f32> {
  var s = v;
  if (X_ROWS <= 4u) { s += subgroupShuffleXor(s, bit_a); }
  if (X_ROWS <= 2u) { s += subgroupShuffleXor(s, bit_b); }
  return s;
}
fn fold2(v: vec2<f32>, bit_a: u32, bit_b: u32) -> vec2<f32> {
  var s = v;
  if (X_ROWS <= 4u) { s += subgroupShuffleXor(s, bit_a); }
  if (X_ROWS <= 2u) { s += subgroupShuffleXor(s, bit_b); }
  return s;
}
fn fold1(v: f32, bit_a: u32, bit_b: u32) -> f32 {
  var s = v;
  if (X_ROWS <= 4u) { s += subgroupShuffleXor(s, bit_a); }
  if (X_ROWS <= 2u) { s += subgroupShuffleXor(s, bit_b); }
  return s;
}

fn slot(row: u32, xr: u32, groups: u32, sg: u32) -> u32 {
  return (row * X_ROWS + xr) * groups + sg;
}

// The first subgroup of a slot stores (workgroup memory is not zeroed), later ones add.
fn add_slot(row: u32, xr: u32, groups: u32, sg: u32, v: f32, add: bool) {
  let i = slot(row, xr, groups, sg);
  partial[i] = select(v, partial[i] + v, add);
}

fn load_x(row: u32, c: u32, owns: bool) -> vec4<f32> {
  return select(vec4<f32>(0.0), x[row * (params.k / 4u) + c], owns);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(subgroup_size) lanes: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let tiles_per_split = params.tiles / SPLIT;
  let split = tile / tiles_per_split;
  let m0 = (tile % tiles_per_split / params.n_tiles) * X_ROWS;
  let n0 = (tile % tiles_per_split % params.n_tiles) * FEATURES;
  let words = params.k / 8u;
  let words_per_split = (words + SPLIT - 1u) / SPLIT;
  let owns = inv.lid < words_per_split && split * words_per_split + inv.lid < words;
  let c = min(split * words_per_split + inv.lid, words - 1u);  // word c of every row: k = 8c .. 8c+7
  let last_m = params.m - 1u;
  // rows m0 .. m0 + X_ROWS - 1 of x (clamped: rows past M are computed and never written)
  let x0l = load_x(min(m0, last_m), 2u * c, owns);      let x0h = load_x(min(m0, last_m), 2u * c + 1u, owns);
  let x1l = load_x(min(m0 + 1u, last_m), 2u * c, owns); let x1h = load_x(min(m0 + 1u, last_m), 2u * c + 1u, owns);
  var x2l = vec4<f32>(0.0); var x2h = x2l; var x3l = x2l; var x3h = x2l;
  if (X_ROWS > 2u) {
    x2l = load_x(min(m0 + 2u, last_m), 2u * c, owns); x2h = load_x(min(m0 + 2u, last_m), 2u * c + 1u, owns);
    x3l = load_x(min(m0 + 3u, last_m), 2u * c, owns); x3h = load_x(min(m0 + 3u, last_m), 2u * c + 1u, owns);
  }
  var x4l = vec4<f32>(0.0); var x4h = x4l; var x5l = x4l; var x5h = x4l;
  var x6l = x4l; var x6h = x4l; var x7l = x4l; var x7h = x4l;
  if (X_ROWS > 4u) {
    x4l = load_x(min(m0 + 4u, last_m), 2u * c, owns); x4h = load_x(min(m0 + 4u, last_m), 2u * c + 1u, owns);
    x5l = load_x(min(m0 + 5u, last_m), 2u * c, owns); x5h = load_x(min(m0 + 5u, last_m), 2u * c + 1u, owns);
    x6l = load_x(min(m0 + 6u, last_m), 2u * c, owns); x6h = load_x(min(m0 + 6u, last_m), 2u * c + 1u, owns);
    x7l = load_x(min(m0 + 7u, last_m), 2u * c, owns); x7h = load_x(min(m0 + 7u, last_m), 2u * c + 1u, owns);
  }
  let one = vec4<f32>(1.0);
  let xs = vec4<f32>(dot(x0l + x0h, one), dot(x1l + x1h, one), dot(x2l + x2h, one), dot(x3l + x3h, one));
  let xs2 = vec4<f32>(dot(x4l + x4h, one), dot(x5l + x5h, one), dot(x6l + x6h, one), dot(x7l + x7h, one));
  let scale_base = ((8u * c) / params.group_size) * params.scale_stride;
  let last_row = params.n - 1u;
  let lane = inv.lane;
  let shared_slots = lanes < MIN_LANES;  // (uniform)
  let groups = select((WG + lanes - 1u) / lanes, WG / MIN_LANES, shared_slots);  // slots per (row, row of x)
  let sg = select(inv.lid / lanes, inv.lid / MIN_LANES, shared_slots);
  let transposed = !shared_slots && (lanes == 8u || lanes == 16u || lanes == 32u);
  // exchange bits: up to three vec4 levels (which p: a only with 8 rows of x, b with 4 or 8),
  // then up to two component levels; the levels a block leaves out are plain butterflies
  // at the end (`skipped`), after which only lanes with those bits clear store.
  let bit_a = lanes / 2u;
  let bit_b = lanes / 4u;
  let bit_c = lanes / 8u;
  let skipped = select(0u, bit_a, X_ROWS <= 4u) | select(0u, bit_b, X_ROWS <= 2u);
  let stores = (lane & skipped) == 0u;
  // after the vec4 levels a lane holds p[q], q = bit of c + 2 * bit of b + 4 * bit of a (< X_ROWS)
  let q = select(0u, 1u, (lane & bit_c) != 0u) + select(0u, 2u, X_ROWS > 2u && (lane & bit_b) != 0u)
        + select(0u, 4u, X_ROWS > 4u && (lane & bit_a) != 0u);

  var w0 = weights[min(n0, last_row) * words + c];
  var w1 = weights[min(n0 + 1u, last_row) * words + c];
  var w2 = weights[min(n0 + 2u, last_row) * words + c];
  var w3 = weights[min(n0 + 3u, last_row) * words + c];
  for (var r = 0u; r < FEATURES; r += 4u) {
    let s = vec4<f32>(scales[scale_base + min(n0 + r, last_row)], scales[scale_base + min(n0 + r + 1u, last_row)],
                      scales[scale_base + min(n0 + r + 2u, last_row)], scales[scale_base + min(n0 + r + 3u, last_row)]);
    // the next step's rows (the last step re-reads its own: cache hits)
    let rn = min(r + 4u, FEATURES - 4u);
    let v0 = weights[min(n0 + rn, last_row) * words + c];
    let v1 = weights[min(n0 + rn + 1u, last_row) * words + c];
    let v2 = weights[min(n0 + rn + 2u, last_row) * words + c];
    let v3 = weights[min(n0 + rn + 3u, last_row) * words + c];
    let a0 = lo4(w0); let b0 = hi4(w0); let a1 = lo4(w1); let b1 = hi4(w1);
    let a2 = lo4(w2); let b2 = hi4(w2); let a3 = lo4(w3); let b3 = hi4(w3);
    let s16 = select(vec4<f32>(0.0), 16.0 * s, owns);  // invocations past K/8 add nothing
    let s24 = select(vec4<f32>(0.0), 24.0 * s, owns);
    let p0 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x0l, x0h, xs.x, s16, s24);
    let p1 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x1l, x1h, xs.y, s16, s24);
    var p2 = vec4<f32>(0.0); var p3 = p2;
    if (X_ROWS > 2u) {
      p2 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x2l, x2h, xs.z, s16, s24);
      p3 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x3l, x3h, xs.w, s16, s24);
    }
    var p4 = vec4<f32>(0.0); var p5 = p4; var p6 = p4; var p7 = p4;
    if (X_ROWS > 4u) {
      p4 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x4l, x4h, xs2.x, s16, s24);
      p5 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x5l, x5h, xs2.y, s16, s24);
      p6 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x6l, x6h, xs2.z, s16, s24);
      p7 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x7l, x7h, xs2.w, s16, s24);
    }
    if (transposed) {
      var qa0 = p0; var qa1 = p1; var qa2 = p2; var qa3 = p3;
      if (X_ROWS > 4u) {
        qa0 = level4(p0, p4, lane, bit_a); qa1 = level4(p1, p5, lane, bit_a);
        qa2 = level4(p2, p6, lane, bit_a); qa3 = level4(p3, p7, lane, bit_a);
      }
      var qb0 = qa0; var qb1 = qa1;
      if (X_ROWS > 2u) { qb0 = level4(qa0, qa2, lane, bit_b); qb1 = level4(qa1, qa3, lane, bit_b); }
      let f = level4(qb0, qb1, lane, bit_c);  // p[q], summed over the subgroup when lanes == 8
      if (lanes == 8u) {
        let g = fold4(f, bit_a, bit_b);
        if (stores) {
          partial[slot(r, q, groups, sg)] = g.x; partial[slot(r + 1u, q, groups, sg)] = g.y;
          partial[slot(r + 2u, q, groups, sg)] = g.z; partial[slot(r + 3u, q, groups, sg)] = g.w;
        }
      } else {
        let bit_d = lanes / 16u;  // picks components (x, y) or (z, w)
        let up_d = (lane & bit_d) != 0u;
        let h = select(f.xy, f.zw, up_d) + subgroupShuffleXor(select(f.zw, f.xy, up_d), bit_d);
        let e0 = select(0u, 2u, up_d);  // weight row of h.x within the step
        if (lanes == 16u) {
          let g = fold2(h, bit_a, bit_b);
          if (stores) {
            partial[slot(r + e0, q, groups, sg)] = g.x;
            partial[slot(r + e0 + 1u, q, groups, sg)] = g.y;
          }
        } else {
          let up_e = (lane & 1u) != 0u;
          let total = fold1(select(h.x, h.y, up_e) + subgroupShuffleXor(select(h.y, h.x, up_e), 1u), bit_a, bit_b);
          if (stores) { partial[slot(r + e0 + select(0u, 1u, up_e), q, groups, sg)] = total; }
        }
      }
    } else {
      let t0 = subgroupAdd(p0); let t1 = subgroupAdd(p1); let t2 = subgroupAdd(p2); let t3 = subgroupAdd(p3);
      let t4 = subgroupAdd(p4); let t5 = subgroupAdd(p5); let t6 = subgroupAdd(p6); let t7 = subgroupAdd(p7);
      // one subgroup a slot, or (shared_slots) MIN_LANES / lanes of them adding in turn
      let turns = select(1u, MIN_LANES / lanes, shared_slots);
      let my_turn = select(0u, (inv.lid % MIN_LANES) / lanes, shared_slots);
      for (var i = 0u; i < turns; i++) {
        if (shared_slots) { workgroupBarrier(); }
        if (lane == 0u && my_turn == i) {
          for (var e = 0u; e < 4u; e++) {
            add_slot(r + e, 0u, groups, sg, t0[e], i > 0u); add_slot(r + e, 1u, groups, sg, t1[e], i > 0u);
            if (X_ROWS > 2u) { add_slot(r + e, 2u, groups, sg, t2[e], i > 0u); add_slot(r + e, 3u, groups, sg, t3[e], i > 0u); }
            if (X_ROWS > 4u) {
              add_slot(r + e, 4u, groups, sg, t4[e], i > 0u); add_slot(r + e, 5u, groups, sg, t5[e], i > 0u);
              add_slot(r + e, 6u, groups, sg, t6[e], i > 0u); add_slot(r + e, 7u, groups, sg, t7[e], i > 0u);
            }
          }
        }
      }
    }
    w0 = v0; w1 = v1; w2 = v2; w3 = v3;
  }
  workgroupBarrier();
  for (var t = inv.lid; t < FEATURES * X_ROWS; t += WG) {
    let row = t / X_ROWS;
    let xr = t % X_ROWS;
    let n = n0 + row;
    let m = m0 + xr;
    if (n < params.n && m < params.m) {
      var total = 0.0;
      for (var i = 0u; i < groups; i++) { total += partial[slot(row, xr, groups, i)]; }
      if (HAS_BIAS && SPLIT == 1u) { total += bias[params.out_offset + n]; }  // else reduce_splits adds it
      out[split * params.split_stride + m * params.out_stride + params.out_offset + n] = total;
    }
  }
}
