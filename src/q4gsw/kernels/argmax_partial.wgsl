// llm/argmax_partial: the first stage of the greedy choice over a row of logits. Workgroup w
// takes elements [w * CHUNK, (w + 1) * CHUNK) of row `row` (invocation i: i, i + WG, ...) and
// writes their largest value and its smallest index (ties: the first, as numpy and torch;
// NaN never wins) to best[w].
//
// Bindings (group 0): 0 best (read_write vec2<u32>: (value bits, index)), 1 logits (f32),
//                     2 params (uniform Params: count, chunk, row offset)
// Overrides: WG (a power of two <= 256).

override WG: u32 = 256u;

struct Params { count: u32, chunk: u32, offset: u32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> best: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> values: array<f32, 256>;
var<workgroup> indices: array<u32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  let first = w * params.chunk;
  if (first >= params.count) { return; }
  let last = min(first + params.chunk, params.count);
  var value = -3.0e38;
  var index = 0xFFFFFFFFu;
  for (var i = first + lid; i < last; i += WG) {
    let v = logits[params.offset + i];
    if (v > value || (v == value && i < index)) { value = v; index = i; }
  }
  values[lid] = value;
  indices[lid] = index;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let v = values[lid + s];
      let i = indices[lid + s];
      if (v > values[lid] || (v == values[lid] && i < indices[lid])) { values[lid] = v; indices[lid] = i; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { best[w] = vec2<u32>(bitcast<u32>(values[0]), indices[0]); }
}
