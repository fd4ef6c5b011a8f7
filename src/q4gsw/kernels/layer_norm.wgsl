// encoder/layer_norm: LayerNorm of each row, with the residual add before it fused in (BERT's
// post-LayerNorm: LayerNorm(sublayer(x) + x)), as torch.nn.LayerNorm computes it in float32:
//   v = x[r, :] + delta[r, :]   (ADD; else v = x[r, :])
//   out[r, j] = (v[j] - mean(v)) / sqrt(var(v) + eps) * weight[j] + bias[j],  var = mean((v - mean)^2)
// One workgroup per row (linearized as wid.x + wid.y * num_workgroups.x); invocation i owns
// the vec4s i, i + WG, ... of the row (dim % 4 == 0). Two tree reductions in workgroup
// memory: the sum (the mean), then the sum of squared deviations from it (two passes, as
// torch does: no cancellation from E[v^2] - E[v]^2). x is not written: out is the new
// residual stream.
//
// Bindings (group 0): 0 out (read_write vec4<f32>, rows x dim), 1 x (vec4<f32>, rows x dim),
//                     2 delta (vec4<f32>, rows x dim; unused without ADD), 3 weight (vec4<f32>, dim),
//                     4 bias (vec4<f32>, dim), 5 params (uniform Params: rows, dim, eps)
// Overrides: WG (a power of two <= 256), ADD.

override WG: u32 = 128u;
override ADD: bool = true;

struct Params { rows: u32, dim: u32, eps: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> delta: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> partial: array<f32, 256>;

fn value(i: u32) -> vec4<f32> {
  if (ADD) { return x[i] + delta[i]; }
  return x[i];
}

// the sum of partial[0 .. WG) (every invocation returns it)
fn workgroup_sum(lid: u32, mine: f32) -> f32 {
  partial[lid] = mine;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();  // partial is reused by the next reduction
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= params.rows) { return; }  // uniform per workgroup
  let width = params.dim / 4u;
  let base = row * width;
  var sum = 0.0;
  for (var j = lid; j < width; j += WG) {
    let v = value(base + j);
    sum += (v.x + v.y) + (v.z + v.w);
  }
  let mean = workgroup_sum(lid, sum) / f32(params.dim);
  var squares = 0.0;
  for (var j = lid; j < width; j += WG) {
    let c = value(base + j) - vec4<f32>(mean);
    squares += dot(c, c);
  }
  let inv = inverseSqrt(workgroup_sum(lid, squares) / f32(params.dim) + params.eps);
  for (var j = lid; j < width; j += WG) {
    out[base + j] = (value(base + j) - vec4<f32>(mean)) * inv * weight[j] + bias[j];
  }
}
