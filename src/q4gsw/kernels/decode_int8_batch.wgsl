// linear_dq8ca_q4gsw/decode_int8_batch: decode_int8.wgsl for a block of X_ROWS (2, 4 or 8) rows
// of x a workgroup, so that each weight word is loaded and turned into bytes once for the block.
//
// As decode_int8.wgsl: invocation c owns 32 consecutive k (one vec4<u32> of every weight row), the
// workgroup walks ROWS consecutive weight rows, RB = 4 a step, the next step's loads issued before
// the current step is computed; each invocation quantizes its 32 k of each of the block's rows of x
// once (one scale per row of x and 32 k, as quantize_int8.wgsl quantizes a group of 32 k) into
// private registers. A step turns its 4 weight words into bytes (lo = w & 0x0F0F0F0F: even k,
// hi = (w >> 4) & 0x0F0F0F0F: odd k) and takes 8 dot4I8Packed per weight row and row of x.
// Partial sums: FEATURES = ROWS * X_ROWS rows of reduce_subgroup.wgsl (composed after this file),
// row j * ROWS + r for row of x m0 + j and weight row n0 + r.
// Rows of x past M are clamped to the last row and not written.
// Needs K % 32 == 0, K / 32 <= WG, group_size % 32 == 0, 4 | ROWS, FEATURES <= 2 WG.
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params: as decode.wgsl.
// Overrides: WG (>= K/32, multiple of 32), ROWS (weight rows a workgroup), X_ROWS (rows of x a
// workgroup, <= 8), FEATURES (= ROWS * X_ROWS: set by the host, naga cannot derive it), HAS_BIAS.

override WG: u32 = 128u;
override ROWS: u32 = 16u;
override X_ROWS: u32 = 2u;
override FEATURES: u32 = 32u;
override HAS_BIAS: bool = false;
const RB: u32 = 4u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<vec4<f32>>;  // f32 scales, 16-byte padded
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const NONFINITE: u32 = 0x7F800000u;  // |x| bits at or past this: Inf or NaN
const TINY: u32 = 0x0D800000u;       // 2^-100
const LOW_NIBBLES: u32 = 0x0F0F0F0Fu;

// Row j of the block: its 32 k as int8 (even k of each octet in xe[j], odd k in xo[j]), its scale,
// and -8 * sum q (sum q (u - 8) = sum q u - 8 sum q).
var<private> xe: array<vec4<u32>, 8>;
var<private> xo: array<vec4<u32>, 8>;
var<private> x_scale: array<f32, 8>;
var<private> x_offset: array<i32, 8>;

fn scale_at(i: u32) -> f32 { return scales[i >> 2u][i & 3u]; }

fn abs_max(a: vec4<f32>, b: vec4<f32>) -> u32 {
  let m = max(bitcast<vec4<u32>>(a) & vec4<u32>(0x7FFFFFFFu), bitcast<vec4<u32>>(b) & vec4<u32>(0x7FFFFFFFu));
  return max(max(m.x, m.y), max(m.z, m.w));
}

fn quantize4(v: vec4<f32>, inv: f32, ok: bool) -> vec4<i32> {
  return select(vec4<i32>(0), vec4<i32>(clamp(round(v * inv), vec4<f32>(-127.0), vec4<f32>(127.0))), vec4<bool>(ok));
}

// Row j of the block from x vec4 xb .. xb + 7 (k = 32c .. 32c+31), as decode_int8.wgsl quantizes it.
fn quantize_row(j: u32, xb: u32) {
  let v0 = x[xb];      let v1 = x[xb + 1u]; let v2 = x[xb + 2u]; let v3 = x[xb + 3u];
  let v4 = x[xb + 4u]; let v5 = x[xb + 5u]; let v6 = x[xb + 6u]; let v7 = x[xb + 7u];
  let top = max(max(abs_max(v0, v1), abs_max(v2, v3)), max(abs_max(v4, v5), abs_max(v6, v7)));
  let amax = bitcast<f32>(top);
  let finite = top < NONFINITE;
  let usable = finite && top >= TINY;
  let inv127 = select(0.0, 127.0 / amax, usable);
  x_scale[j] = select(select(0.0, amax * (1.0 / 127.0), usable), bitcast<f32>(top | 0x7FC00000u), !finite);
  let a0 = quantize4(v0, inv127, usable); let b0 = quantize4(v1, inv127, usable);
  let a1 = quantize4(v2, inv127, usable); let b1 = quantize4(v3, inv127, usable);
  let a2 = quantize4(v4, inv127, usable); let b2 = quantize4(v5, inv127, usable);
  let a3 = quantize4(v6, inv127, usable); let b3 = quantize4(v7, inv127, usable);
  xe[j] = vec4<u32>(pack4xI8(vec4<i32>(a0.x, a0.z, b0.x, b0.z)), pack4xI8(vec4<i32>(a1.x, a1.z, b1.x, b1.z)),
                    pack4xI8(vec4<i32>(a2.x, a2.z, b2.x, b2.z)), pack4xI8(vec4<i32>(a3.x, a3.z, b3.x, b3.z)));
  xo[j] = vec4<u32>(pack4xI8(vec4<i32>(a0.y, a0.w, b0.y, b0.w)), pack4xI8(vec4<i32>(a1.y, a1.w, b1.y, b1.w)),
                    pack4xI8(vec4<i32>(a2.y, a2.w, b2.y, b2.w)), pack4xI8(vec4<i32>(a3.y, a3.w, b3.y, b3.w)));
  let qs = (a0 + b0) + (a1 + b1) + (a2 + b2) + (a3 + b3);
  x_offset[j] = -8 * ((qs.x + qs.y) + (qs.z + qs.w));
}

// sum over the 32 k of a weight row's word (lo, hi: its bytes) of q_k (u_k - 8), row j of x.
fn dot32(lo: vec4<u32>, hi: vec4<u32>, j: u32) -> i32 {
  let e = xe[j];
  let o = xo[j];
  var s = x_offset[j] + dot4I8Packed(lo.x, e.x) + dot4I8Packed(hi.x, o.x);
  s += dot4I8Packed(lo.y, e.y) + dot4I8Packed(hi.y, o.y);
  s += dot4I8Packed(lo.z, e.z) + dot4I8Packed(hi.z, o.z);
  s += dot4I8Packed(lo.w, e.w) + dot4I8Packed(hi.w, o.w);
  return s;
}

// (workgroup_id and num_workgroups are separate parameters: see decode.wgsl.)
@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let blocks = (params.m + X_ROWS - 1u) / X_ROWS;
  let m0 = (tile % blocks) * X_ROWS;
  let n0 = (tile / blocks) * ROWS;
  let words = params.k / 32u;  // vec4<u32> per weight row
  let owns_k = inv.lid < words;
  let c = min(inv.lid, words - 1u);
  let last_row = params.n - 1u;

  var w_a = weights[min(n0, last_row) * words + c];
  var w_b = weights[min(n0 + 1u, last_row) * words + c];
  var w_c = weights[min(n0 + 2u, last_row) * words + c];
  var w_d = weights[min(n0 + 3u, last_row) * words + c];
  for (var j = 0u; j < X_ROWS; j++) {
    quantize_row(j, (min(m0 + j, params.m - 1u) * params.k) / 4u + 8u * c);
  }

  let scale_base = ((32u * c) / params.group_size) * params.scale_stride;
  clear_partials(inv);

  for (var r = 0u; r < ROWS; r += RB) {
    var s: vec4<f32>;
    if ((params.scale_stride & 3u) == 0u) {
      s = scales[(scale_base + n0 + r) >> 2u];
    } else {
      s = vec4<f32>(scale_at(scale_base + min(n0 + r, last_row)), scale_at(scale_base + min(n0 + r + 1u, last_row)),
                    scale_at(scale_base + min(n0 + r + 2u, last_row)), scale_at(scale_base + min(n0 + r + 3u, last_row)));
    }
    let r_next = min(r + RB, ROWS - RB);
    let next_a = weights[min(n0 + r_next, last_row) * words + c];
    let next_b = weights[min(n0 + r_next + 1u, last_row) * words + c];
    let next_c = weights[min(n0 + r_next + 2u, last_row) * words + c];
    let next_d = weights[min(n0 + r_next + 3u, last_row) * words + c];
    let l4 = vec4<u32>(LOW_NIBBLES);
    let lo_a = w_a & l4; let hi_a = (w_a >> vec4<u32>(4u)) & l4;
    let lo_b = w_b & l4; let hi_b = (w_b >> vec4<u32>(4u)) & l4;
    let lo_c = w_c & l4; let hi_c = (w_c >> vec4<u32>(4u)) & l4;
    let lo_d = w_d & l4; let hi_d = (w_d >> vec4<u32>(4u)) & l4;
    for (var j = 0u; j < X_ROWS; j++) {
      let d = vec4<i32>(dot32(lo_a, hi_a, j), dot32(lo_b, hi_b, j), dot32(lo_c, hi_c, j), dot32(lo_d, hi_d, j));
      store_partials(select(vec4<f32>(0.0), vec4<f32>(d) * (s * x_scale[j]), owns_k), j * ROWS + r, inv);
    }
    w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < FEATURES) { store_row(inv.lid, n0, m0, inv); }
  if (FEATURES > WG && inv.lid + WG < FEATURES) { store_row(inv.lid + WG, n0, m0, inv); }
}

// The workgroup's total for partial row f: row of x m0 + f / ROWS, output feature n0 + f % ROWS.
fn store_row(f: u32, n0: u32, m0: u32, inv: Invocation) {
  let n = n0 + f % ROWS;
  let m = m0 + f / ROWS;
  if (n < params.n && m < params.m) {
    var total = row_total(f, inv);
    if (HAS_BIAS) { total += bias[params.out_offset + n]; }
    out[m * params.out_stride + params.out_offset + n] = total;
  }
}
