// linear_q4gsw/reduce_splits: the second dispatch of a split-K kernel (tiled with SPLIT > 1).
// out[m, out_offset + n] = sum over s of partial[s][m][n] (+ bias[out_offset + n]), the
// slices added in order s = 0, 1, ... (deterministic). One invocation per output element.
//
// Bindings (group 0): 0 out, 1 partial (SPLIT slices of M x N, compact rows), 2 bias,
//                     3 params: m, n, out_stride, out_offset, split_stride (= M * N), count (= M * N).
// Overrides: WG, SPLIT, HAS_BIAS.

override WG: u32 = 256u;
override SPLIT: u32 = 2u;
override HAS_BIAS: bool = false;

struct Params {
  m: u32, n: u32, out_stride: u32, out_offset: u32,
  split_stride: u32, count: u32, pad0: u32, pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.count) { return; }
  var total = partial[i];
  for (var s = 1u; s < SPLIT; s++) { total += partial[s * params.split_stride + i]; }
  let m = i / params.n;
  let n = i - m * params.n;
  if (HAS_BIAS) { total += bias[params.out_offset + n]; }
  out[m * params.out_stride + params.out_offset + n] = total;
}
