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
// same weight rows run together (L2 serves the repeats).
// Needs K % 32 == 0, K <= 32 * WG, group_size % 32 == 0, RB | FEATURES, FEATURES <= WG.
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params: as general.wgsl.
// Overrides: WG (>= K/32, multiple of 32), FEATURES (output features per workgroup), UNPACK_IMAD (which
// integer ops unpack: see unpack.wgsl), HAS_BIAS.

override WG: u32 = 128u;
override FEATURES: u32 = 16u;
override UNPACK_IMAD: bool = false;
override HAS_BIAS: bool = false;
const RB: u32 = 4u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,  // split_stride: tiled.wgsl only
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<vec4<f32>>;  // f32 scales, 16-byte padded
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

fn scale_at(i: u32) -> f32 { return scales[i >> 2u][i & 3u]; }

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

// (workgroup_id and num_workgroups are separate parameters, not members of Invocation:
// a struct holding per-invocation values is non-uniform as a whole, and the WGSL
// uniformity analysis of browsers then rejects the barriers after the early return.)
@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let m = tile % params.m;
  let n0 = (tile / params.m) * FEATURES;
  let words = params.k / 32u;          // vec4<u32> per weight row
  let owns_k = inv.lid < words;
  let c = min(inv.lid, words - 1u);

  // x[m, 32c .. 32c+31] as eight vec4: x(2i) and x(2i+1) are k = 8i .. 8i+7 (word i).
  // (Staging x through workgroup memory for coalesced loads was tried: 2x slower, as the
  // 16 KiB per workgroup cut residency; see docs/kernels-decode.md.)
  let xb = (m * params.k) / 4u + 8u * c;
  let x0 = x[xb];      let x1 = x[xb + 1u]; let x2 = x[xb + 2u]; let x3 = x[xb + 3u];
  let x4 = x[xb + 4u]; let x5 = x[xb + 5u]; let x6 = x[xb + 6u]; let x7 = x[xb + 7u];
  let xs = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
  let x_sum = select(0.0, xs.x + xs.y + xs.z + xs.w, owns_k);
  let scale_base = ((32u * c) / params.group_size) * params.scale_stride;
  let last_row = params.n - 1u;
  clear_partials(inv);

  // Step r covers rows n0 + r .. n0 + r + 3 (clamped to the last row; extra rows unwritten).
  var w_a = weights[min(n0, last_row) * words + c];
  var w_b = weights[min(n0 + 1u, last_row) * words + c];
  var w_c = weights[min(n0 + 2u, last_row) * words + c];
  var w_d = weights[min(n0 + 3u, last_row) * words + c];
  for (var r = 0u; r < FEATURES; r += RB) {
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
    let r_next = min(r + RB, FEATURES - RB);
    let next_a = weights[min(n0 + r_next, last_row) * words + c];
    let next_b = weights[min(n0 + r_next + 1u, last_row) * words + c];
    let next_c = weights[min(n0 + r_next + 2u, last_row) * words + c];
    let next_d = weights[min(n0 + r_next + 3u, last_row) * words + c];
    let d = vec4<f32>(dot32(w_a, x0, x1, x2, x3, x4, x5, x6, x7),
                      dot32(w_b, x0, x1, x2, x3, x4, x5, x6, x7),
                      dot32(w_c, x0, x1, x2, x3, x4, x5, x6, x7),
                      dot32(w_d, x0, x1, x2, x3, x4, x5, x6, x7));
    store_partials(select(vec4<f32>(0.0), s * (16.0 * d - 24.0 * x_sum), owns_k), r, inv);
    w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < FEATURES) {
    let n = n0 + inv.lid;
    if (n < params.n) {
      var total = row_total(inv.lid, inv);
      if (HAS_BIAS) { total += bias[params.out_offset + n]; }
      out[m * params.out_stride + params.out_offset + n] = total;
    }
  }
}
