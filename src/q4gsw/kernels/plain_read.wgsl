// q4gsw/plain_read: one pass over a buffer's bytes, the yardstick of a memory-bound kernel
// (tools/plain_read.py). Invocation i of a grid of G invocations XORs the vec4<u32> words
// i, i + G, i + 2G, ... of `data` (a grid stride: each step is one coalesced 16-byte load
// per invocation) and writes nothing unless the XOR equals params.sentinel in all four
// lanes. The condition depends on every word loaded, so no compiler can drop a load or move
// the loop under the branch; a timed run sets a sentinel that random bytes match with
// probability 2^-128 per invocation (never, in practice), so the pass writes no memory. A
// control run sets it to one invocation's XOR; that invocation then writes its index + 1
// into sink[0], which proves it read every word of its stride.
// Loop trips per invocation: ceil(words / G).
//
// Bindings (group 0): 0 sink (read_write u32, at least 1), 1 data (vec4<u32>),
//                     2 params (uniform: words, invocations, 2 pads, sentinel: vec4<u32>)
// Overrides: WG (invocations per workgroup).

override WG: u32 = 256u;

struct Params {
  words: u32, invocations: u32, pad0: u32, pad1: u32,
  sentinel: vec4<u32>,
}

@group(0) @binding(0) var<storage, read_write> sink: array<u32>;
@group(0) @binding(1) var<storage, read> data: array<vec4<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  var acc = vec4<u32>(0u);
  for (var i = gid.x; i < params.words; i += params.invocations) {
    acc ^= data[i];
  }
  if (all(acc == params.sentinel)) {
    sink[0] = gid.x + 1u;
  }
}
