// read_bandwidth_x4: the read ceiling with more loads in flight. As read_bandwidth.wgsl,
// but each loop trip issues 4 independent vec4<u32> loads (words i, i + G, i + 2G, i + 3G
// for a grid of G invocations, each coalesced across the grid) into 4 accumulators, then
// a grid-stride tail for the last < 4G words. Writes one word per invocation, so nothing
// can be optimized away. Loop trips per invocation: about words / (4 G) + 3.
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
  let g = params.invocations;
  var a0 = vec4<u32>(0u); var a1 = a0; var a2 = a0; var a3 = a0;
  var i = gid.x;
  for (; i + 3u * g < params.words; i += 4u * g) {
    a0 ^= data[i];
    a1 ^= data[i + g];
    a2 ^= data[i + 2u * g];
    a3 ^= data[i + 3u * g];
  }
  for (; i < params.words; i += g) {
    a0 ^= data[i];
  }
  let acc = a0 ^ a1 ^ a2 ^ a3;
  sink[gid.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
