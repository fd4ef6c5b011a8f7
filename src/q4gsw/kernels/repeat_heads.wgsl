// chain/repeat_heads: grouped-query attention's key/value expansion. x is rows of
// kv_heads * head_dim; out is rows of kv_heads * repeats * head_dim, where head h of out
// is head h / repeats of x: out[r, h * head_dim + d] = x[r, (h / repeats) * head_dim + d].
// One invocation per output element; workgroups linearized as wid.x + wid.y * num_workgroups.x.
//
// Bindings (group 0): 0 out (read_write f32), 1 x (f32),
//                     2 params (uniform Params: count = out elements, head_dim, repeats,
//                     out_row = out elements per row)
// Overrides: WG (invocations per workgroup).

override WG: u32 = 256u;

struct Params { count: u32, head_dim: u32, repeats: u32, out_row: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.count) { return; }
  let r = i / params.out_row;
  let c = i % params.out_row;
  let h = c / params.head_dim;
  let d = c % params.head_dim;
  let in_row = params.out_row / params.repeats;
  out[i] = x[r * in_row + (h / params.repeats) * params.head_dim + d];
}
