// llm/embed_rows: the token embedding, gathered from an int4 weight (the PackedWeight layout):
//   out[t, k] = (u[ids[ids_offset + t] - n0, k] - 8) * scales[k / group_size, id - n0]
// for every token t whose id lies in this chunk of rows [n0, n0 + n) (a vocabulary larger
// than one storage binding is split along N; each chunk is its own dispatch and writes only
// its own tokens). One workgroup per token; invocation i takes bytes i, i + WG, ... of the
// row (two elements a byte).
//
// Bindings (group 0): 0 out (read_write f32, tokens x K), 1 ids (u32 token ids),
//                     2 weights (u32 words over the chunk's n x ceil(K/2) bytes),
//                     3 scales (f32, row stride scale_stride), 4 params (uniform Params)
// Overrides: WG (invocations per workgroup).

override WG: u32 = 256u;

struct Params {
  tokens: u32, k: u32, row_bytes: u32, group_size: u32,
  scale_stride: u32, n0: u32, n: u32, ids_offset: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

fn byte_at(offset: u32) -> u32 {
  return (weights[offset >> 2u] >> (8u * (offset & 3u))) & 0xFFu;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= params.tokens) { return; }
  let id = ids[params.ids_offset + t];
  if (id < params.n0 || id - params.n0 >= params.n) { return; }  // another chunk's token
  let row = id - params.n0;
  let base = row * params.row_bytes;
  for (var b = lid; b < params.row_bytes; b += WG) {
    let u = byte_at(base + b);
    let k = 2u * b;
    out[t * params.k + k] = (f32(u & 15u) - 8.0) * scales[(k / params.group_size) * params.scale_stride + row];
    if (k + 1u < params.k) {
      out[t * params.k + k + 1u] = (f32(u >> 4u) - 8.0) * scales[((k + 1u) / params.group_size) * params.scale_stride + row];
    }
  }
}
