// linear_q4gsw/decode_multi_*: M = 2..8 (decode of several tokens), four rows of x at once.
//
// Like decode.wgsl, but every unpacked weight is used for MT = 4 rows of x, so the unpack
// (shift, and-or per nibble) is paid once per 4 products. To keep 4 rows of x in
// registers, an invocation owns 16 consecutive k (one vec2<u32> of a weight row) and
// 4 x 4 vec4 of x. K is covered in chunks of 16 * WG k; the workgroup walks RPW weight
// rows per chunk, 4 rows a step, the next step's loads issued before the current math.
// Unpack and the -8 / scale fold as in decode.wgsl:
//   sum x (u - 8) = 16 * sum x (1 + u/16) - 24 * sum x.
// Row sums across invocations: reduce_subgroup.wgsl or reduce_workgroup.wgsl (composed
// after this file) over ROWS = MT * RPW partial rows, row index i * RPW + r for row i of
// the x tile and weight row r; sums accumulate across chunks.
// Tiles: (x tile, block of RPW weight rows), the x tile varying fastest.
// Needs K % 16 == 0, group_size % 16 == 0, 4 | RPW, ROWS = 4 * RPW.
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec2<u32>), 3 scales, 4 bias,
//                     5 params: as general.wgsl.
// Overrides: WG (multiple of 32), RPW (weight rows per workgroup), ROWS (= 4 * RPW), HAS_BIAS.

override WG: u32 = 256u;
override RPW: u32 = 8u;
override ROWS: u32 = 32u;
override HAS_BIAS: bool = false;
const MT: u32 = 4u;
const RB: u32 = 4u;
const MANTISSA_TOP4: u32 = 0x00780000u;
const ONE: u32 = 0x3F800000u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// 1 + u_j / 16 for the 16 nibbles of w (k order: q0 = k 0..3, q1 = 4..7, q2 = 8..11, q3 = 12..15).
struct Unpacked { q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>, }

fn unpack16(w: vec2<u32>) -> Unpacked {
  let m = vec4<u32>(MANTISSA_TOP4);
  let one = vec4<u32>(ONE);
  return Unpacked(
    bitcast<vec4<f32>>((vec4<u32>(w.x << 19u, w.x << 15u, w.x << 11u, w.x << 7u) & m) | one),
    bitcast<vec4<f32>>((vec4<u32>(w.x << 3u, w.x >> 1u, w.x >> 5u, w.x >> 9u) & m) | one),
    bitcast<vec4<f32>>((vec4<u32>(w.y << 19u, w.y << 15u, w.y << 11u, w.y << 7u) & m) | one),
    bitcast<vec4<f32>>((vec4<u32>(w.y << 3u, w.y >> 1u, w.y >> 5u, w.y >> 9u) & m) | one));
}

// 16 * sum_k x_k (1 + u_k / 16) - 24 * sum_k x_k over one invocation's 16 k.
fn row_dot(u: Unpacked, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, x_sum: f32) -> f32 {
  let v = fma(u.q0, a, fma(u.q1, b, fma(u.q2, c, u.q3 * d)));
  return 16.0 * ((v.x + v.y) + (v.z + v.w)) - 24.0 * x_sum;
}

fn hsum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
  let tile = inv.wid.x + inv.wid.y * inv.nwg.x;
  if (tile >= params.tiles) { return; }
  let m_tiles = (params.m + MT - 1u) / MT;
  let m0 = (tile % m_tiles) * MT;
  let n0 = (tile / m_tiles) * RPW;
  let pairs = params.k / 16u;              // vec2<u32> per weight row
  let xrow = params.k / 4u;                // vec4<f32> per row of x
  let last_m = params.m - 1u;
  let x0b = min(m0, last_m) * xrow;
  let x1b = min(m0 + 1u, last_m) * xrow;
  let x2b = min(m0 + 2u, last_m) * xrow;
  let x3b = min(m0 + 3u, last_m) * xrow;
  let last_row = params.n - 1u;
  clear_partials(inv);

  for (var chunk = 0u; chunk < pairs; chunk += WG) {
    let owns_k = chunk + inv.lid < pairs;
    let c = min(chunk + inv.lid, pairs - 1u);
    // rows 0..3 of the x tile at k = 16c .. 16c+15
    let a0 = x[x0b + 4u * c]; let b0 = x[x0b + 4u * c + 1u]; let c0 = x[x0b + 4u * c + 2u]; let d0 = x[x0b + 4u * c + 3u];
    let a1 = x[x1b + 4u * c]; let b1 = x[x1b + 4u * c + 1u]; let c1 = x[x1b + 4u * c + 2u]; let d1 = x[x1b + 4u * c + 3u];
    let a2 = x[x2b + 4u * c]; let b2 = x[x2b + 4u * c + 1u]; let c2 = x[x2b + 4u * c + 2u]; let d2 = x[x2b + 4u * c + 3u];
    let a3 = x[x3b + 4u * c]; let b3 = x[x3b + 4u * c + 1u]; let c3 = x[x3b + 4u * c + 2u]; let d3 = x[x3b + 4u * c + 3u];
    let xs = select(vec4<f32>(0.0), vec4<f32>(hsum(a0 + b0 + c0 + d0), hsum(a1 + b1 + c1 + d1),
                                              hsum(a2 + b2 + c2 + d2), hsum(a3 + b3 + c3 + d3)), owns_k);
    let scale_base = ((16u * c) / params.group_size) * params.scale_stride;

    var w_a = weights[min(n0, last_row) * pairs + c];
    var w_b = weights[min(n0 + 1u, last_row) * pairs + c];
    var w_c = weights[min(n0 + 2u, last_row) * pairs + c];
    var w_d = weights[min(n0 + 3u, last_row) * pairs + c];
    for (var r = 0u; r < RPW; r += RB) {
      let s = vec4<f32>(scales[scale_base + min(n0 + r, last_row)], scales[scale_base + min(n0 + r + 1u, last_row)],
                        scales[scale_base + min(n0 + r + 2u, last_row)], scales[scale_base + min(n0 + r + 3u, last_row)]);
      let nn = n0 + min(r + RB, RPW - RB);
      let next_a = weights[min(nn, last_row) * pairs + c];
      let next_b = weights[min(nn + 1u, last_row) * pairs + c];
      let next_c = weights[min(nn + 2u, last_row) * pairs + c];
      let next_d = weights[min(nn + 3u, last_row) * pairs + c];
      let ua = unpack16(w_a);
      let ub = unpack16(w_b);
      let uc = unpack16(w_c);
      let ud = unpack16(w_d);
      let keep = vec4<bool>(owns_k);
      // p_i: x row i against weight rows r .. r+3
      let p0 = vec4<f32>(row_dot(ua, a0, b0, c0, d0, xs.x), row_dot(ub, a0, b0, c0, d0, xs.x),
                         row_dot(uc, a0, b0, c0, d0, xs.x), row_dot(ud, a0, b0, c0, d0, xs.x));
      let p1 = vec4<f32>(row_dot(ua, a1, b1, c1, d1, xs.y), row_dot(ub, a1, b1, c1, d1, xs.y),
                         row_dot(uc, a1, b1, c1, d1, xs.y), row_dot(ud, a1, b1, c1, d1, xs.y));
      let p2 = vec4<f32>(row_dot(ua, a2, b2, c2, d2, xs.z), row_dot(ub, a2, b2, c2, d2, xs.z),
                         row_dot(uc, a2, b2, c2, d2, xs.z), row_dot(ud, a2, b2, c2, d2, xs.z));
      let p3 = vec4<f32>(row_dot(ua, a3, b3, c3, d3, xs.w), row_dot(ub, a3, b3, c3, d3, xs.w),
                         row_dot(uc, a3, b3, c3, d3, xs.w), row_dot(ud, a3, b3, c3, d3, xs.w));
      store_partials(select(vec4<f32>(0.0), s * p0, keep), r, inv);
      store_partials(select(vec4<f32>(0.0), s * p1, keep), RPW + r, inv);
      store_partials(select(vec4<f32>(0.0), s * p2, keep), 2u * RPW + r, inv);
      store_partials(select(vec4<f32>(0.0), s * p3, keep), 3u * RPW + r, inv);
      w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;
    }
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < ROWS) {
    let i = inv.lid / RPW;
    let n = n0 + inv.lid % RPW;
    if (n < params.n && m0 + i < params.m) {
      var total = row_total(inv.lid, inv);
      if (HAS_BIAS) { total += bias[params.out_offset + n]; }
      out[(m0 + i) * params.out_stride + params.out_offset + n] = total;
    }
  }
}
