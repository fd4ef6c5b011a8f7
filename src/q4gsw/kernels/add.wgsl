// chain/add: out[i] = a[i] + b[i] for i < params.count (a residual connection).
// One invocation per element; workgroups linearized as wid.x + wid.y * num_workgroups.x
// (the host folds the grid past the per-dimension limit), ids past the count return.
//
// Bindings (group 0): 0 out (read_write f32), 1 a (f32), 2 b (f32),
//                     3 params (uniform Params: count)
// Overrides: WG (invocations per workgroup).

override WG: u32 = 256u;

struct Params { count: u32, pad0: u32, pad1: u32, pad2: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.count) { return; }
  out[i] = a[i] + b[i];
}
