// linear_q4gsw/rowwise: the original ExecuTorch design, kept only as the benchmark baseline.
// One workgroup per row m of x; its 64 invocations stride the N outputs; every k re-reads
// and integer-divides its scale. Loop trips per invocation: ceil(N / 64) * K, which exceeds
// Mesa 22 lavapipe's silent loop budget (65 535) from modest shapes on.
//
// Bindings (group 0): 0 out, 1 x, 2 weights, 3 scales, 4 bias, 5 params: as general.wgsl.
// Overrides: HAS_BIAS.

override HAS_BIAS: bool = false;
const WG: u32 = 64u;

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

fn weight_q(row_start: u32, k: u32) -> f32 {
  let b = row_start + (k >> 1u);
  let shift = ((b & 3u) << 3u) + ((k & 1u) << 2u);
  return f32((weights[b >> 2u] >> shift) & 15u) - 8.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let m = wid.x + wid.y * nwg.x;
  if (m >= params.m) { return; }
  for (var n = lid; n < params.n; n += WG) {
    var acc = 0.0;
    for (var k = 0u; k < params.k; k++) {
      let s = scales[(k / params.group_size) * params.scale_stride + n];
      acc += x[m * params.k + k] * weight_q(n * params.row_bytes, k) * s;
    }
    if (HAS_BIAS) { acc += bias[params.out_offset + n]; }
    out[m * params.out_stride + params.out_offset + n] = acc;
  }
}
