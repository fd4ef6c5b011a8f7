// llm/add_rms_norm: a residual add fused with the RMSNorm that follows it, per row r of x from
// first_row on (the rows before it are left alone: a prefill needs only its last row's logits):
//   ADD:  x[r, :] += delta[r, :]   (in place: x is the residual stream)
//   out[r - first_row, j] = x[r, j] / sqrt(mean_j(x[r, :]^2) + eps) * weight[j]
// as transformers' RMSNorm computes it in float32. One workgroup per row; invocation i owns
// the vec4s i, i + WG, ... of the row (dim % 4 == 0), sums their squares, and a tree
// reduction in workgroup memory gives the row's sum; the same invocation then writes the
// elements it read, so the in-place add needs no barrier of its own.
//
// Bindings (group 0): 0 out (read_write vec4<f32>, rows x dim), 1 x (read_write vec4<f32>),
//                     2 delta (vec4<f32>; unused without ADD), 3 weight (vec4<f32>, dim),
//                     4 params (uniform Params: rows, dim, eps, first_row)
// Overrides: WG (a power of two <= 256), ADD.

override WG: u32 = 256u;
override ADD: bool = true;

struct Params { rows: u32, dim: u32, eps: f32, first_row: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> delta: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = params.first_row + wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }  // uniform per workgroup
  let width = params.dim / 4u;
  let base = row * width;
  let out_base = (row - params.first_row) * width;
  var sum = 0.0;
  for (var j = lid; j < width; j += WG) {
    var v = x[base + j];
    if (ADD) {
      v += delta[base + j];
      x[base + j] = v;
    }
    sum += dot(v, v);
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(params.dim) + params.eps);
  for (var j = lid; j < width; j += WG) {
    out[out_base + j] = weight[j] * (x[base + j] * inv);
  }
}
