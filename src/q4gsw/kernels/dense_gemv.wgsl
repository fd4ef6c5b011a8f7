// dense_linear/gemv: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for small M, with fp32 or
// fp16 weights (wload() comes from dense_weight_f32.wgsl / dense_weight_f16.wgsl). A workgroup
// computes 4 output features for one row of x; its WG invocations stride K with 16-byte x loads
// and one wload per weight row (4 rows in flight each), then add up through workgroup memory.
// Features past N are clamped on load and not written. Loop trips per invocation:
// K / (4 WG) + log2(WG). Needs K % 4 == 0 (x is read as vec4).
//
// Bindings (group 0): 0 out (read_write f32, row stride params.out_stride), 1 x (vec4<f32>, M x K),
//                     2 w (see the weight file), 3 bias (f32, N; a placeholder without HAS_BIAS),
//                     4 params (uniform Params)
// Overrides: HAS_BIAS, WG (a power of two <= 256).

override HAS_BIAS: bool = false;
override WG: u32 = 256u;

struct Params {
  m: u32, n: u32, k: u32, row: u32,            // row: vec4 per weight row, ceil(K / 4)
  out_stride: u32, out_offset: u32, n_tiles: u32, tiles: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> partial: array<vec4<f32>, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let m = tile % params.m;
  let n0 = (tile / params.m) * 4u;
  let vk = params.k / 4u;
  let last = params.n - 1u;
  let r0 = min(n0, last) * params.row;
  let r1 = min(n0 + 1u, last) * params.row;
  let r2 = min(n0 + 2u, last) * params.row;
  let r3 = min(n0 + 3u, last) * params.row;
  var acc = vec4<f32>(0.0);
  for (var i = lid; i < vk; i += WG) {
    let xv = x[m * vk + i];
    acc += vec4<f32>(dot(wload(r0 + i), xv), dot(wload(r1 + i), xv), dot(wload(r2 + i), xv), dot(wload(r3 + i), xv));
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid < 4u && n0 + lid < params.n) {
    let n = n0 + lid;
    var r = partial[0][lid];
    if (HAS_BIAS) { r += bias[params.out_offset + n]; }
    out[m * params.out_stride + params.out_offset + n] = r;
  }
}
