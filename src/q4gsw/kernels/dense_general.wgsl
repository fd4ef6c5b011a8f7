// dense_linear/general: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for any shape (odd K
// too), with fp32 or fp16 weights (wload() comes from dense_weight_f32.wgsl /
// dense_weight_f16.wgsl). The fallback, as linear_q4gsw/general is for int4: a workgroup per
// (output feature, 4 rows of x); its WG invocations stride the weight row in vec4 (zero-padded
// past K on upload), read x as scalars (k past K reads 0; rows past M are clamped and not
// written) and add up through workgroup memory. Loop trips per invocation:
// ceil(K/4) / WG + log2(WG).
//
// Bindings (group 0): 0 out (read_write f32, row stride params.out_stride), 1 x (f32, M x K),
//                     2 w (see the weight file), 3 bias (f32, N; a placeholder without HAS_BIAS),
//                     4 params (uniform Params)
// Overrides: HAS_BIAS, WG (a power of two <= 256).

override HAS_BIAS: bool = false;
override WG: u32 = 64u;
const MT: u32 = 4u;  // rows of x per workgroup

struct Params {
  m: u32, n: u32, k: u32, row: u32,            // row: vec4 per weight row, ceil(K / 4)
  out_stride: u32, out_offset: u32, n_tiles: u32, tiles: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> partial: array<vec4<f32>, 256>;

// x[m, k0 .. k0 + 3], zeros past K.
fn xload(m: u32, k0: u32) -> vec4<f32> {
  let base = m * params.k;
  var v = vec4<f32>(0.0);
  if (k0 < params.k) { v.x = x[base + k0]; }
  if (k0 + 1u < params.k) { v.y = x[base + k0 + 1u]; }
  if (k0 + 2u < params.k) { v.z = x[base + k0 + 2u]; }
  if (k0 + 3u < params.k) { v.w = x[base + k0 + 3u]; }
  return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let n = tile % params.n_tiles;
  let m0 = (tile / params.n_tiles) * MT;
  let last = params.m - 1u;
  let m1 = min(m0 + 1u, last);
  let m2 = min(m0 + 2u, last);
  let m3 = min(m0 + 3u, last);
  let base = n * params.row;
  var acc = vec4<f32>(0.0);
  for (var c = lid; c < params.row; c += WG) {
    let wv = wload(base + c);
    let k0 = 4u * c;
    acc += vec4<f32>(dot(wv, xload(m0, k0)), dot(wv, xload(m1, k0)), dot(wv, xload(m2, k0)), dot(wv, xload(m3, k0)));
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid < MT && m0 + lid < params.m) {
    var r = partial[0][lid];
    if (HAS_BIAS) { r += bias[params.out_offset + n]; }
    out[(m0 + lid) * params.out_stride + params.out_offset + n] = r;
  }
}
