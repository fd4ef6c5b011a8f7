// chain/rms_norm: out[r, j] = x[r, j] / sqrt(mean_j(x[r, :]^2) + eps) * weight[j].
// One workgroup per row r (linearized as wid.x + wid.y * num_workgroups.x); invocation i
// sums the squares of j = i, i + WG, ... (ceil(dim / WG) loop trips), a tree reduction in
// workgroup memory gives the row's sum, then the same invocations write their elements.
//
// Bindings (group 0): 0 out (read_write f32, rows x dim), 1 x (f32, rows x dim),
//                     2 weight (f32, dim), 3 params (uniform Params: rows, dim, eps)
// Overrides: WG (invocations per workgroup, a power of two <= 256).

override WG: u32 = 128u;

struct Params { rows: u32, dim: u32, eps: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }  // uniform per workgroup
  let base = row * params.dim;
  var sum = 0.0;
  for (var j = lid; j < params.dim; j += WG) {
    let v = x[base + j];
    sum = fma(v, v, sum);
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(partial[0] / f32(params.dim) + params.eps);
  for (var j = lid; j < params.dim; j += WG) {
    out[base + j] = x[base + j] * inv * weight[j];
  }
}
