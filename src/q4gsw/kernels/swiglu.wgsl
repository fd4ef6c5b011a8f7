// llm/swiglu: SwiGLU's glue on a concatenated gate/up projection, per row r:
//   out[r, j] = silu(gate_up[r, j]) * gate_up[r, F + j],  silu(g) = g / (1 + exp(-g)),  j < F.
// One invocation per output element; workgroups linearized, ids past the count return.
//
// Bindings (group 0): 0 out (read_write f32, rows x F), 1 gate_up (f32, rows x 2F),
//                     2 params (uniform Params: count = rows * F, F)
// Overrides: WG.

override WG: u32 = 256u;

struct Params { count: u32, width: u32, pad0: u32, pad1: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= params.count) { return; }
  let r = i / params.width;
  let j = i % params.width;
  let g = gate_up[2u * r * params.width + j];
  out[i] = g / (1.0 + exp(-g)) * gate_up[(2u * r + 1u) * params.width + j];
}
