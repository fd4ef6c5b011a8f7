// linear_dq8ca_q4gsw/decode_int8_*: small M (decode) with 8-bit activations, in one dispatch.
//
// The layout of decode.wgsl: invocation c of a workgroup owns 32 consecutive k (one vec4<u32>
// of every weight row: c < K/32), the workgroup walks FEATURES consecutive output features
// (weight rows), RB = 4 per step, with the next step's loads issued before the current step is
// computed; M rows of x are separate workgroups, m varying fastest.
// What differs: each invocation quantizes its own 32 k of x once, in registers (no quantize
// dispatch, no scratch buffer), exactly as quantize_int8.wgsl quantizes a group of 32 k:
//   amax = max |x| over the 32 k (on the bits); scale = amax * (1 / 127);
//   q = clamp(round(x * (127 / amax)), -127, 127)  (round: half to even);
//   amax = 0 or below 2^-100: scale 0, q 0; a NaN or Inf among the 32: scale NaN (so the
//   output row becomes NaN), q 0.
// The q of octet i (k = 8i .. 8i+7) are packed as weight word i gives its nibbles as bytes:
// even k in xe[i] (w & 0x0F0F0F0F), odd k in xo[i] ((w >> 4) & 0x0F0F0F0F). A weight word then
// costs three integer ops and two dot4I8Packed for 8 products (decode.wgsl: 24 ops), and
//   sum_k q_k (u_k - 8) = sum_k q_k u_k - 8 sum_k q_k
// is summed in i32 (|.| <= 32 * 127 * 15: exact), converted once per row and step, and scaled
// by the x chunk's scale times the weight group's scale (group_size % 32 == 0: the 32 k lie in
// one group). Row sums across invocations: reduce_subgroup.wgsl or reduce_workgroup.wgsl,
// composed after this file, as for decode.wgsl.
// Needs K % 32 == 0, K / 32 <= WG, group_size % 32 == 0, RB | FEATURES, FEATURES <= 2 WG
// (FEATURES <= WG with reduce_workgroup.wgsl).
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (vec4<u32>), 3 scales, 4 bias,
//                     5 params: as decode.wgsl.
// Overrides: WG (>= K/32, multiple of 32), FEATURES (output features per workgroup), HAS_BIAS.

override WG: u32 = 128u;
override FEATURES: u32 = 16u;
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

fn scale_at(i: u32) -> f32 { return scales[i >> 2u][i & 3u]; }

fn abs_max(a: vec4<f32>, b: vec4<f32>) -> u32 {
  let m = max(bitcast<vec4<u32>>(a) & vec4<u32>(0x7FFFFFFFu), bitcast<vec4<u32>>(b) & vec4<u32>(0x7FFFFFFFu));
  return max(max(m.x, m.y), max(m.z, m.w));
}

// q of 4 x (0 unless `ok`).
fn quantize4(v: vec4<f32>, inv: f32, ok: bool) -> vec4<i32> {
  return select(vec4<i32>(0), vec4<i32>(clamp(round(v * inv), vec4<f32>(-127.0), vec4<f32>(127.0))), vec4<bool>(ok));
}

// sum over the 32 k of word w of q_k * u_k: word i of w holds k = 8i .. 8i+7.
fn dot32(w: vec4<u32>, xe: vec4<u32>, xo: vec4<u32>, acc: i32) -> i32 {
  var s = acc + dot4I8Packed(w.x & LOW_NIBBLES, xe.x) + dot4I8Packed((w.x >> 4u) & LOW_NIBBLES, xo.x);
  s += dot4I8Packed(w.y & LOW_NIBBLES, xe.y) + dot4I8Packed((w.y >> 4u) & LOW_NIBBLES, xo.y);
  s += dot4I8Packed(w.z & LOW_NIBBLES, xe.z) + dot4I8Packed((w.z >> 4u) & LOW_NIBBLES, xo.z);
  s += dot4I8Packed(w.w & LOW_NIBBLES, xe.w) + dot4I8Packed((w.w >> 4u) & LOW_NIBBLES, xo.w);
  return s;
}

// (workgroup_id and num_workgroups are separate parameters: see decode.wgsl.)
@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let m = tile % params.m;
  let n0 = (tile / params.m) * FEATURES;
  let words = params.k / 32u;  // vec4<u32> per weight row
  let owns_k = inv.lid < words;
  let c = min(inv.lid, words - 1u);
  let last_row = params.n - 1u;

  // the first step's weight words load while x is quantized
  var w_a = weights[min(n0, last_row) * words + c];
  var w_b = weights[min(n0 + 1u, last_row) * words + c];
  var w_c = weights[min(n0 + 2u, last_row) * words + c];
  var w_d = weights[min(n0 + 3u, last_row) * words + c];

  // x[m, 32c .. 32c+31]: v(2i), v(2i+1) are k = 8i .. 8i+3 and 8i+4 .. 8i+7
  let xb = (m * params.k) / 4u + 8u * c;
  let v0 = x[xb];      let v1 = x[xb + 1u]; let v2 = x[xb + 2u]; let v3 = x[xb + 3u];
  let v4 = x[xb + 4u]; let v5 = x[xb + 5u]; let v6 = x[xb + 6u]; let v7 = x[xb + 7u];
  let top = max(max(abs_max(v0, v1), abs_max(v2, v3)), max(abs_max(v4, v5), abs_max(v6, v7)));
  let amax = bitcast<f32>(top);
  let finite = top < NONFINITE;
  let usable = finite && top >= TINY;
  let inv127 = select(0.0, 127.0 / amax, usable);
  // a NaN made at run time (Tint refuses a NaN constant)
  let x_scale = select(select(0.0, amax * (1.0 / 127.0), usable), bitcast<f32>(top | 0x7FC00000u), !finite);
  let a0 = quantize4(v0, inv127, usable); let b0 = quantize4(v1, inv127, usable);
  let a1 = quantize4(v2, inv127, usable); let b1 = quantize4(v3, inv127, usable);
  let a2 = quantize4(v4, inv127, usable); let b2 = quantize4(v5, inv127, usable);
  let a3 = quantize4(v6, inv127, usable); let b3 = quantize4(v7, inv127, usable);
  let xe = vec4<u32>(pack4xI8(vec4<i32>(a0.x, a0.z, b0.x, b0.z)), pack4xI8(vec4<i32>(a1.x, a1.z, b1.x, b1.z)),
                     pack4xI8(vec4<i32>(a2.x, a2.z, b2.x, b2.z)), pack4xI8(vec4<i32>(a3.x, a3.z, b3.x, b3.z)));
  let xo = vec4<u32>(pack4xI8(vec4<i32>(a0.y, a0.w, b0.y, b0.w)), pack4xI8(vec4<i32>(a1.y, a1.w, b1.y, b1.w)),
                     pack4xI8(vec4<i32>(a2.y, a2.w, b2.y, b2.w)), pack4xI8(vec4<i32>(a3.y, a3.w, b3.y, b3.w)));
  let qs = (a0 + b0) + (a1 + b1) + (a2 + b2) + (a3 + b3);
  let offset = -8 * ((qs.x + qs.y) + (qs.z + qs.w));  // sum q (u - 8) = sum q u - 8 sum q

  let scale_base = ((32u * c) / params.group_size) * params.scale_stride;
  clear_partials(inv);

  for (var r = 0u; r < FEATURES; r += RB) {
    var s: vec4<f32>;
    if ((params.scale_stride & 3u) == 0u) {
      // rows n0 + r .. +3 in one 16-byte load (rows past N read padding: never written)
      s = scales[(scale_base + n0 + r) >> 2u];
    } else {
      s = vec4<f32>(scale_at(scale_base + min(n0 + r, last_row)), scale_at(scale_base + min(n0 + r + 1u, last_row)),
                    scale_at(scale_base + min(n0 + r + 2u, last_row)), scale_at(scale_base + min(n0 + r + 3u, last_row)));
    }
    // the next step's rows (the last step re-reads its own rows: cache hits)
    let r_next = min(r + RB, FEATURES - RB);
    let next_a = weights[min(n0 + r_next, last_row) * words + c];
    let next_b = weights[min(n0 + r_next + 1u, last_row) * words + c];
    let next_c = weights[min(n0 + r_next + 2u, last_row) * words + c];
    let next_d = weights[min(n0 + r_next + 3u, last_row) * words + c];
    let d = vec4<i32>(dot32(w_a, xe, xo, offset), dot32(w_b, xe, xo, offset),
                      dot32(w_c, xe, xo, offset), dot32(w_d, xe, xo, offset));
    store_partials(select(vec4<f32>(0.0), vec4<f32>(d) * (s * x_scale), owns_k), r, inv);
    w_a = next_a; w_b = next_b; w_c = next_c; w_d = next_d;
  }
  workgroupBarrier();
  reduce_partials(inv);
  workgroupBarrier();
  if (inv.lid < FEATURES) { store_row(inv.lid, n0, m, inv); }
  if (FEATURES > WG && inv.lid + WG < FEATURES) { store_row(inv.lid + WG, n0, m, inv); }
}

// The workgroup's total for its output feature f (row n0 + f), into out.
fn store_row(f: u32, n0: u32, m: u32, inv: Invocation) {
  let n = n0 + f;
  if (n < params.n) {
    var total = row_total(f, inv);
    if (HAS_BIAS) { total += bias[params.out_offset + n]; }
    out[m * params.out_stride + params.out_offset + n] = total;
  }
}
