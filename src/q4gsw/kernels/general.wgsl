// linear_q4gsw/general: out[m, n] = sum_k x[m, k] * (u[n, k] - 8) * scales[k / gs, n] (+ bias[n]).
// Correct for every shape: any K (odd too), any N, any group size, rows at any byte offset.
// One workgroup computes MT = 4 rows of x against one output feature n (rows past M are
// clamped on read and not written). Invocation i walks groups i, i + WG, ...: the group's
// scale is read once per group, the group's elements are summed in order, and no integer
// division runs inside a loop. Loop trips per invocation: ceil(G / WG) * group_size
// (about K / WG + group_size), plus log2(WG) for the reduction.
//
// Bindings (group 0): 0 out  (read_write f32, row stride params.out_stride)
//                     1 x    (f32, M x K row-major)
//                     2 weights (u32 words over the N x ceil(K/2) bytes, zero-padded to 4)
//                     3 scales  (f32, row stride params.scale_stride)
//                     4 bias    (f32, N)          5 params (uniform Params)
// Overrides: WG (invocations per workgroup, a power of two <= 256), HAS_BIAS.

override WG: u32 = 64u;
override HAS_BIAS: bool = false;
const MT: u32 = 4u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,  // split_stride: tiled.wgsl only
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> partial: array<vec4<f32>, 256>;

// q = u - 8 of element k of the row whose first byte is row_start.
fn weight_q(row_start: u32, k: u32) -> f32 {
  let b = row_start + (k >> 1u);
  let shift = ((b & 3u) << 3u) + ((k & 1u) << 2u);
  return f32((weights[b >> 2u] >> shift) & 15u) - 8.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let n = tile % params.n_tiles;
  let m0 = (tile / params.n_tiles) * MT;
  let kk = params.k;
  let last = params.m - 1u;
  let x0 = min(m0, last) * kk;
  let x1 = min(m0 + 1u, last) * kk;
  let x2 = min(m0 + 2u, last) * kk;
  let x3 = min(m0 + 3u, last) * kk;
  let row_start = n * params.row_bytes;

  var acc = vec4<f32>(0.0);
  for (var g = lid; g < params.num_groups; g += WG) {
    let k_begin = g * params.group_size;
    let k_end = min(k_begin + params.group_size, kk);
    var sum = vec4<f32>(0.0);
    for (var k = k_begin; k < k_end; k++) {
      let q = weight_q(row_start, k);
      sum += q * vec4<f32>(x[x0 + k], x[x1 + k], x[x2 + k], x[x3 + k]);
    }
    acc += scales[g * params.scale_stride + n] * sum;
  }

  partial[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    var r = partial[0];
    if (HAS_BIAS) { r += vec4<f32>(bias[params.out_offset + n]); }
    let o = m0 * params.out_stride + params.out_offset + n;
    out[o] = r.x;
    if (m0 + 1u < params.m) { out[o + params.out_stride] = r.y; }
    if (m0 + 2u < params.m) { out[o + 2u * params.out_stride] = r.z; }
    if (m0 + 3u < params.m) { out[o + 3u * params.out_stride] = r.w; }
  }
}
