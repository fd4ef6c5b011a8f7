// dense_f32/gemv: y[m, n] = sum_k x[m, k] * w[n, k] with fp32 weights. A yardstick only
// (benchmarks compare the int4 kernels with it): it reads 8x the bytes of an int4 weight.
// A workgroup computes 4 output rows for one row of x; its WG invocations stride K with
// 16-byte loads of the 4 weight rows (4 loads in flight each) and add up through workgroup
// memory. Loop trips per invocation: K / (4 WG) + log2(WG).
//
// Bindings (group 0): 0 out (read_write f32, M x N), 1 x (vec4<f32>, M x K),
//                     2 w (vec4<f32>, N x K), 3 params (uniform Params)
// Overrides: WG (a power of two <= 256). Needs K % 4 == 0.

override WG: u32 = 256u;

struct Params { m: u32, n: u32, k: u32, tiles: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

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
  let r0 = min(n0, last) * vk;
  let r1 = min(n0 + 1u, last) * vk;
  let r2 = min(n0 + 2u, last) * vk;
  let r3 = min(n0 + 3u, last) * vk;
  var acc = vec4<f32>(0.0);
  for (var i = lid; i < vk; i += WG) {
    let xv = x[m * vk + i];
    acc += vec4<f32>(dot(w[r0 + i], xv), dot(w[r1 + i], xv), dot(w[r2 + i], xv), dot(w[r3 + i], xv));
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let r = partial[0];
    let o = m * params.n + n0;
    out[o] = r.x;
    if (n0 + 1u < params.n) { out[o + 1u] = r.y; }
    if (n0 + 2u < params.n) { out[o + 2u] = r.z; }
    if (n0 + 3u < params.n) { out[o + 3u] = r.w; }
  }
}
