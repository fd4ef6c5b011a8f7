// linear_q4gsw/decode_*: small M (decode), built for read bandwidth.
//
// Invocation c of a workgroup owns 32 consecutive k (one vec4<u32> of every weight row:
// c < K/32) and keeps x[m, 32c .. 32c+31] in eight vec4 registers for the whole dispatch.
// The workgroup walks FEATURES consecutive output features (weight rows), RB = 4 per step; the loads of the
// next step are issued before the current step is computed (two steps in flight), and
// every row is one coalesced 16-byte load per invocation.
// Unpack (unpack.wgsl, composed after this file): each nibble u becomes 1 + u/16 exactly, in
// two integer ops, so a nibble costs those and one fma:
//   sum x (u - 8) = 16 * sum x (1 + u/16) - 24 * sum x
// with sum x over the invocation's 32 k computed once. The group's scale is read once per
// row (needs group_size % 32 == 0), the 4 rows of a step in one 16-byte load when the
// scale row stride is a multiple of 4 (the scale buffer is padded to 16 bytes). Row sums
// across invocations: reduce_subgroup.wgsl or reduce_workgroup.wgsl, composed after this
// file and unpack.wgsl, supply `Invocation`, clear_partials, store_partials,
// reduce_partials and row_total.
// M rows of x are separate workgroups, m varying fastest so the workgroups that read the
// same weight rows run together (L2 serves the repeats); with X_ROWS = 2 (a variant) a workgroup
// takes two rows of x (16 more vec4 registers), each nibble unpacked once for both, and FEATURES
// counts (row of x, weight row) pairs: FEATURES / 2 weight rows.
// Split K (SPLIT > 1, a variant; the route runs SPLIT = 1): the SPLIT workgroups of a tile each
// own a contiguous share of the row's vec4 words (ceil(K / 32 / SPLIT) <= WG) and write their
// partial sums into slice `split` of a buffer bound as `out` (compact rows, slice size
// params.split_stride); reduce_splits.wgsl adds the slices and the bias, as for tiled.wgsl.
// x staged (X_STAGED, a variant): the workgroup first copies its 8 x WG vec4 of x into
// workgroup memory with coalesced loads (consecutive invocations, consecutive vec4), then each
// invocation reads its eight from there; a pad slot every 8 keeps the reads free of bank
// conflicts. Otherwise (the route) each invocation loads its eight directly.
// Needs K % 32 == 0, ceil(K / 32 / SPLIT) <= WG, group_size % 32 == 0, RB | FEATURES,
// FEATURES <= 2 WG (FEATURES <= WG with reduce_workgroup.wgsl).
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params: as general.wgsl.
// Overrides: WG (>= K/32/SPLIT, multiple of 32), FEATURES (output features per workgroup, times X_ROWS),
// UNPACK_IMAD (which integer ops unpack: see unpack.wgsl), SPLIT (workgroups per tile along K),
// X_STAGED, HAS_BIAS, X_ROWS (1, or 2 without SPLIT and X_STAGED).

override WG: u32 = 128u;
override FEATURES: u32 = 16u;
override UNPACK_IMAD: bool = false;
override SPLIT: u32 = 1u;
override X_STAGED: bool = false;
override HAS_BIAS: bool = false;
override X_ROWS: u32 = 1u;
const RB: u32 = 4u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,  // split_stride: with SPLIT > 1
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<vec4<f32>>;  // f32 scales, 16-byte padded
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// x of the workgroup when X_STAGED (vec4 i of the slice in slot i + i / 8); one slot otherwise.
var<workgroup> x_stage: array<vec4<f32>, select(1u, 9u * WG, X_STAGED)>;

fn scale_at(i: u32) -> f32 { return scales[i >> 2u][i & 3u]; }

// Word c (vec4 c: k = 32c .. 32c+31) of weight row min(row, last_row).
fn word_of(row: u32, last_row: u32, words: u32, c: u32) -> vec4<u32> { return weights[min(row, last_row) * words + c]; }

// vec4 i of the workgroup's x slice (x[first + i], clamped to `last`) into its slot.
fn stage_x(i: u32, first: u32, last: u32) { x_stage[i + i / 8u] = x[min(first + i, last)]; }

// acc + (x_j * (1 + u_j / 16)) for the 8 nibbles j of word w (element j = nibble j):
// lo holds x of nibbles 0..3, hi of nibbles 4..7.
fn dot8(w: u32, lo: vec4<f32>, hi: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
  return fma(hi4(w), hi, fma(lo4(w), lo, acc));
}

// sum over 32 k of x_k * (1 + u_k / 16); word i of w holds k = 8i .. 8i+7.
fn dot32(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
         x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
  var v = dot8(w.x, x0, x1, vec4<f32>(0.0));
  v = dot8(w.y, x2, x3, v);
  v = dot8(w.z, x4, x5, v);
  v = dot8(w.w, x6, x7, v);
  return (v.x + v.y) + (v.z + v.w);
}

// dot32 of the same word for two rows of x (x, y): each nibble unpacked once for both.
fn dot32x2(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
           x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
           y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>,
           y4: vec4<f32>, y5: vec4<f32>, y6: vec4<f32>, y7: vec4<f32>) -> vec2<f32> {
  var l = lo4(w.x); var h = hi4(w.x);
  var vx = fma(h, x1, l * x0);           var vy = fma(h, y1, l * y0);
  l = lo4(w.y); h = hi4(w.y);
  vx = fma(h, x3, fma(l, x2, vx));       vy = fma(h, y3, fma(l, y2, vy));
  l = lo4(w.z); h = hi4(w.z);
  vx = fma(h, x5, fma(l, x4, vx));       vy = fma(h, y5, fma(l, y4, vy));
  l = lo4(w.w); h = hi4(w.w);
  vx = fma(h, x7, fma(l, x6, vx));       vy = fma(h, y7, fma(l, y6, vy));
  return vec2<f32>((vx.x + vx.y) + (vx.z + vx.w), (vy.x + vy.y) + (vy.z + vy.w));
}

// (workgroup_id and num_workgroups are separate parameters, not members of Invocation:
// a struct holding per-invocation values is non-uniform as a whole, and the WGSL
// uniformity analysis of browsers then rejects the barriers after the early return.)
@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let rows = FEATURES / X_ROWS;  // weight rows of the workgroup; FEATURES counts (row of x, row) pairs
  let blocks = (params.m + X_ROWS - 1u) / X_ROWS;
  let m = (tile % blocks) * X_ROWS;
  let split = (tile / blocks) % SPLIT;
  let n0 = (tile / blocks / SPLIT) * rows;
  let words = params.k / 32u;          // vec4<u32> per weight row
  let words_per_split = (words + SPLIT - 1u) / SPLIT;
  let word = split * words_per_split + inv.lid;  // the vec4 of every row this invocation owns
  let owns_k = inv.lid < words_per_split && word < words;
  let c = min(word, words - 1u);

  // x[m, 32c .. 32c+31] as eight vec4: x(2i) and x(2i+1) are k = 8i .. 8i+7 (word i).
  // (Staging all of x, 16 KiB per workgroup at K = 4096, was 2x slower: residency; see
  // docs/kernels-decode.md. X_STAGED stages the workgroup's share of K only.)
  // Step r covers rows n0 + r .. n0 + r + 3 (clamped to the last row; extra rows unwritten);
  // w_a .. w_d hold the current step's words.
  let last_row = params.n - 1u;
  let xb = (m * params.k) / 4u + 8u * c;
  var x0: vec4<f32>; var x1: vec4<f32>; var x2: vec4<f32>; var x3: vec4<f32>;
  var x4: vec4<f32>; var x5: vec4<f32>; var x6: vec4<f32>; var x7: vec4<f32>;
  var w_a: vec4<u32>; var w_b: vec4<u32>; var w_c: vec4<u32>; var w_d: vec4<u32>;
  if (X_STAGED) {
    // the first step's words load while x is staged
    w_a = word_of(n0, last_row, words, c);      w_b = word_of(n0 + 1u, last_row, words, c);
    w_c = word_of(n0 + 2u, last_row, words, c); w_d = word_of(n0 + 3u, last_row, words, c);
    let first = (m * params.k) / 4u + 8u * split * words_per_split;
    let last = (m + 1u) * params.k / 4u - 1u;  // vec4 past the row of x: clamped, never used
    stage_x(inv.lid, first, last);            stage_x(inv.lid + WG, first, last);
    stage_x(inv.lid + 2u * WG, first, last);  stage_x(inv.lid + 3u * WG, first, last);
    stage_x(inv.lid + 4u * WG, first, last);  stage_x(inv.lid + 5u * WG, first, last);
    stage_x(inv.lid + 6u * WG, first, last);  stage_x(inv.lid + 7u * WG, first, last);
    workgroupBarrier();
    let sb = 9u * inv.lid;  // vec4 8 lid + j of the slice sits in slot 9 lid + j
    x0 = x_stage[sb];      x1 = x_stage[sb + 1u]; x2 = x_stage[sb + 2u]; x3 = x_stage[sb + 3u];
    x4 = x_stage[sb + 4u]; x5 = x_stage[sb + 5u]; x6 = x_stage[sb + 6u]; x7 = x_stage[sb + 7u];
  } else {
    x0 = x[xb];      x1 = x[xb + 1u]; x2 = x[xb + 2u]; x3 = x[xb + 3u];
    x4 = x[xb + 4u]; x5 = x[xb + 5u]; x6 = x[xb + 6u]; x7 = x[xb + 7u];
    w_a = word_of(n0, last_row, words, c);      w_b = word_of(n0 + 1u, last_row, words, c);
    w_c = word_of(n0 + 2u, last_row, words, c); w_d = word_of(n0 + 3u, last_row, words, c);
  }
  let xs = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
  let x_sum = select(0.0, xs.x + xs.y + xs.z + xs.w, owns_k);
  // X_ROWS = 2: the next row of x (clamped to the last; a row past M is never written)
  let yb = (min(m + 1u, params.m - 1u) * params.k) / 4u + 8u * c;
  var y0 = vec4<f32>(0.0); var y1 = y0; var y2 = y0; var y3 = y0; var y4 = y0; var y5 = y0; var y6 = y0; var y7 = y0;
  if (X_ROWS == 2u) {
    y0 = x[yb];      y1 = x[yb + 1u]; y2 = x[yb + 2u]; y3 = x[yb + 3u];
    y4 = x[yb + 4u]; y5 = x[yb + 5u]; y6 = x[yb + 6u]; y7 = x[yb + 7u];
  }
  let ys = y0 + y1 + y2 + y3 + y4 + y5 + y6 + y7;
  let y_sum = select(0.0, ys.x + ys.y + ys.z + ys.w, owns_k);
  let scale_base = ((32u * c) / params.group_size) * params.scale_stride;
  clear_partials(inv);

  for (var r = 0u; r < rows; r += RB) {
    let n_a = min(n0 + r, last_row);
    let n_b = min(n0 + r + 1u, last_row);
    let n_c = min(n0 + r + 2u, last_row);
    let n_d = min(n0 + r + 3u, last_row);
    var s: vec4<f32>;
    if ((params.scale_stride & 3u) == 0u) {
      // rows n0 + r .. +3 start at a multiple of 4: one 16-byte load (rows past N read
      // padding or other columns of the same group row; they are never written)
      s = scales[(scale_base + n0 + r) >> 2u];
    } else {
      s = vec4<f32>(scale_at(scale_base + n_a), scale_at(scale_base + n_b),
                    scale_at(scale_base + n_c), scale_at(scale_base + n_d));
    }
    // the next step's rows (the last step re-reads its own rows: cache hits)
    let r_next = min(r + RB, rows - RB);
    let next_a = weights[min(n0 + r_next, last_row) * words + c];
    let next_b = weights[min(n0 + r_next + 1u, last_row) * words + c];
    let next_c = weights[min(n0 + r_next + 2u, last_row) * words + c];
    let next_d = weights[min(n0 + r_next + 3u, last_row) * words + c];
    if (X_ROWS == 2u) {
      let pa = dot32x2(w_a, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7);
      let pb = dot32x2(w_b, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7);
      let pc = dot32x2(w_c, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7);
      let pd = dot32x2(w_d, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3, y4, y5, y6, y7);
      let d = vec4<f32>(pa.x, pb.x, pc.x, pd.x);
      let e = vec4<f32>(pa.y, pb.y, pc.y, pd.y);
      store_partials(select(vec4<f32>(0.0), s * (16.0 * d - 24.0 * x_sum), owns_k), r, inv);
      store_partials(select(vec4<f32>(0.0), s * (16.0 * e - 24.0 * y_sum), owns_k), rows + r, inv);
    } else {
      let d = vec4<f32>(dot32(w_a, x0, x1, x2, x3, x4, x5, x6, x7),
                        dot32(w_b, x0, x1, x2, x3, x4, x5, x6, x7),
                        dot32(w_c, x0, x1, x2, x3, x4, x5, x6, x7),
                        dot32(w_d, x0, x1, x2, x3, x4, x5, x6, x7));
      store_partials(select(vec4<f32>(0.0), s * (16.0 * d - 24.0 * x_sum), owns_k), r, inv);
    }
    w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < FEATURES) { store_row(inv.lid, n0, m, split, rows, inv); }
  if (FEATURES > WG && inv.lid + WG < FEATURES) { store_row(inv.lid + WG, n0, m, split, rows, inv); }
}

// The workgroup's total for its partial row f: output feature n0 + f % rows of row of x
// m + f / rows, into out (its slice `split` with SPLIT > 1).
fn store_row(f: u32, n0: u32, m: u32, split: u32, rows: u32, inv: Invocation) {
  let n = n0 + f % rows;
  let row = m + f / rows;
  if (n < params.n && row < params.m) {
    var total = row_total(f, inv);
    if (HAS_BIAS && SPLIT == 1u) { total += bias[params.out_offset + n]; }  // else reduce_splits adds it
    out[split * params.split_stride + row * params.out_stride + params.out_offset + n] = total;
  }
}
