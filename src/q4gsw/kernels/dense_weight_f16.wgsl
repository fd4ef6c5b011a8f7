// dense_linear's fp16 weight storage, appended to a dense_* kernel (KernelKey.files): binding 2
// and wload(i), the i-th 4 weights as vec4<f32> (rows of ceil(K/4) x 4 halves, zero-padded past
// K). Halves are read as u32 pairs and widened with unpack2x16float (core WGSL): no `shader-f16`
// needed, arithmetic stays fp32. Element 2j of a word is its low half (little-endian numpy float16).
//
// Bindings (group 0): 2 w (vec2<u32>, N x ceil(K/4): 4 halves each)

@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;

fn wload(i: u32) -> vec4<f32> {
  let p = w[i];
  return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}
