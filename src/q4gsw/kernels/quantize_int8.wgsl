// linear_q4gsw/quantize_int8: the first dispatch of an int8-activation linear (tiled_int8):
// x (M, K) f32 -> symmetric int8, one f32 scale per (row m, group g of group_size k), the
// weight's groups. Per (m, g), with amax = max |x[m, k]| over the group:
//   scale = amax * (1 / 127);  q = clamp(round(x * (127 / amax)), -127, 127)  (round: half to even)
//   amax = 0 or below 2^-100: scale 0, q 0 (127 / amax would overflow);
//   a NaN or Inf in the group: scale NaN, q 0 (its row of the output becomes NaN).
// amax is taken on the bits (|x| as u32), which orders floats exactly and sees NaN and Inf.
// Output layouts, as tiled_int8.wgsl reads them:
//   xq[m][k / 4] (u32): the octet k = 8j .. 8j+7 as two words, (x[8j], x[8j+2], x[8j+4], x[8j+6])
//     then (x[8j+1], x[8j+3], x[8j+5], x[8j+7]), byte 0 lowest: the order in which a weight word
//     gives its nibbles as bytes (w & 0x0F0F0F0F: even k, (w >> 4) & 0x0F0F0F0F: odd k);
//   xs[g][m] (f32): group-major, so the GEMM's loads of a tile's rows coalesce.
// A team of TEAM invocations (a power of two dividing WG) handles one (row, group): its lanes
// walk the group's octets TEAM apart, once for amax, once to quantize (that read hits the cache);
// amax is combined through workgroup memory. Needs K % 8 == 0, group_size % 8 == 0.
//
// Bindings (group 0): 0 xq (u32, written), 1 x (vec4<f32>), 2 xs (f32, written), 3 params.
// Overrides: WG (invocations per workgroup), TEAM.

override WG: u32 = 256u;
override TEAM: u32 = 16u;

struct Params {
  m: u32, k: u32, group_size: u32, num_groups: u32,
  pairs: u32, pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> xq: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> xs: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> amax_bits: array<u32, WG>;

const NONFINITE: u32 = 0x7F800000u;  // |x| bits at or past this: Inf or NaN
const TINY: u32 = 0x0D800000u;       // 2^-100

fn abs_bits(v: vec4<f32>) -> vec4<u32> {
  return bitcast<vec4<u32>>(v) & vec4<u32>(0x7FFFFFFFu);
}

fn max4(v: vec4<u32>) -> u32 {
  return max(max(v.x, v.y), max(v.z, v.w));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let pair = (wid.x + wid.y * nwg.x) * (WG / TEAM) + lid / TEAM;
  let lane = lid % TEAM;
  let live = pair < params.pairs;
  let p = min(pair, params.pairs - 1u);
  let m = p / params.num_groups;
  let g = p % params.num_groups;
  let k0 = g * params.group_size;
  let octets = (min(k0 + params.group_size, params.k) - k0) / 8u;
  let base = (m * params.k + k0) / 4u;  // vec4 of x; also the u32 of xq

  var bits = 0u;
  for (var j = lane; j < octets; j += TEAM) {
    bits = max(bits, max(max4(abs_bits(x[base + 2u * j])), max4(abs_bits(x[base + 2u * j + 1u]))));
  }
  amax_bits[lid] = bits;
  workgroupBarrier();
  for (var s = TEAM / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { amax_bits[lid] = max(amax_bits[lid], amax_bits[lid + s]); }
    workgroupBarrier();
  }
  let top = amax_bits[lid - lane];
  let amax = bitcast<f32>(top);
  let finite = top < NONFINITE;
  let usable = finite && top >= TINY;
  let inv = select(0.0, 127.0 / amax, usable);
  if (!live) { return; }
  if (lane == 0u) {
    xs[g * params.m + m] = select(select(0.0, amax * (1.0 / 127.0), usable), bitcast<f32>(top | 0x7FC00000u), !finite);  // a NaN made at run time (Tint refuses a NaN constant)
  }
  for (var j = lane; j < octets; j += TEAM) {
    let lo = clamp(round(x[base + 2u * j] * inv), vec4<f32>(-127.0), vec4<f32>(127.0));
    let hi = clamp(round(x[base + 2u * j + 1u] * inv), vec4<f32>(-127.0), vec4<f32>(127.0));
    // a NaN x times inv would be NaN: write 0 for every q of a non-finite group
    let ok = vec4<bool>(usable);
    let a = select(vec4<i32>(0), vec4<i32>(lo), ok);
    let b = select(vec4<i32>(0), vec4<i32>(hi), ok);
    xq[base + 2u * j] = pack4xI8(vec4<i32>(a.x, a.z, b.x, b.z));
    xq[base + 2u * j + 1u] = pack4xI8(vec4<i32>(a.y, a.w, b.y, b.w));
  }
}
