// read_bandwidth: the read ceiling. Each invocation sums vec4<u32> words of `data` at a
// grid stride (coalesced) and writes one word, so nothing can be optimized away.
// Loop trips per invocation: words / (invocations in the grid).
//
// Bindings (group 0): 0 sink (read_write u32, one per invocation), 1 data (vec4<u32>),
//                     2 params (uniform: words, invocations)
// Overrides: WG (invocations per workgroup).

override WG: u32 = 256u;

struct Params { words: u32, invocations: u32, pad0: u32, pad1: u32, }

@group(0) @binding(0) var<storage, read_write> sink: array<u32>;
@group(0) @binding(1) var<storage, read> data: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  var acc = vec4<u32>(0u);
  for (var i = gid.x; i < params.words; i += params.invocations) {
    acc ^= data[i];
  }
  sink[gid.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
