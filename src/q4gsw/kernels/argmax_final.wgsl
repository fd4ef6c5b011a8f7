// llm/argmax_final: the second stage of the greedy choice: the best of argmax_partial's
// `parts` candidates (largest value, then smallest index) is the next token, written where
// the next step's embedding reads it (ids[0]) and into the list of generated tokens at
// state.step.
//
// Bindings (group 0): 0 ids (read_write u32), 1 generated (read_write u32), 2 best (vec2<u32>),
//                     3 state (uniform State), 4 params (uniform Params: parts)
// Overrides: WG (a power of two <= 256).

override WG: u32 = 256u;

struct State { pos: u32, step: u32, pad0: u32, pad1: u32, }
struct Params { parts: u32, capacity: u32, pad0: u32, pad1: u32, }

@group(0) @binding(0) var<storage, read_write> ids: array<u32>;
@group(0) @binding(1) var<storage, read_write> generated: array<u32>;
@group(0) @binding(2) var<storage, read> best: array<vec2<u32>>;
@group(0) @binding(3) var<uniform> state: State;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> values: array<f32, 256>;
var<workgroup> indices: array<u32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var value = -3.0e38;
  var index = 0xFFFFFFFFu;
  for (var i = lid; i < params.parts; i += WG) {
    let v = bitcast<f32>(best[i].x);
    let j = best[i].y;
    if (v > value || (v == value && j < index)) { value = v; index = j; }
  }
  values[lid] = value;
  indices[lid] = index;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let v = values[lid + s];
      let j = indices[lid + s];
      if (v > values[lid] || (v == values[lid] && j < indices[lid])) { values[lid] = v; indices[lid] = j; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let token = select(indices[0], 0u, indices[0] == 0xFFFFFFFFu);  // all NaN: token 0
    ids[0] = token;
    if (state.step < params.capacity) { generated[state.step] = token; }
  }
}
