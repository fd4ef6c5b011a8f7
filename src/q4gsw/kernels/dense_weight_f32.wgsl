// dense_linear's fp32 weight storage, appended to a dense_* kernel (KernelKey.files): binding 2
// and wload(i), the i-th vec4 of the weight (rows of ceil(K/4) vec4, zero-padded past K).
//
// Bindings (group 0): 2 w (vec4<f32>, N x ceil(K/4))

@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;

fn wload(i: u32) -> vec4<f32> {
  return w[i];
}
