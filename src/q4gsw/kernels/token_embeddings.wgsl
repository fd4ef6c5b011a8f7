// encoder/token_embeddings: BERT's embedding sum (before its LayerNorm), for a batch of
// sequences of T tokens, rows r = b * T + t:
//   out[r, :] = (word[ids[r]] + token_type[type_ids[r]]) + position[r % T]   (transformers' order)
// from float32 tables. A word table larger than one storage binding is split along its rows:
// each chunk [n0, n0 + n) is its own dispatch and writes only the rows whose id lies in it.
// One workgroup per row; invocation i takes the vec4s i, i + WG, ... (dim % 4 == 0).
//
// Bindings (group 0): 0 out (read_write vec4<f32>, rows x dim), 1 ids (u32, rows),
//                     2 type_ids (u32, rows), 3 word (vec4<f32>, the chunk's n x dim),
//                     4 position (vec4<f32>, >= T x dim), 5 token_type (vec4<f32>, types x dim),
//                     6 params (uniform Params: rows, dim, seq = T, n0, n)
// Overrides: WG.

override WG: u32 = 128u;

struct Params { rows: u32, dim: u32, seq: u32, n0: u32, n: u32, pad0: u32, pad1: u32, pad2: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> type_ids: array<u32>;
@group(0) @binding(3) var<storage, read> word: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> position: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> token_type: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= params.rows) { return; }
  let id = ids[r];
  if (id < params.n0 || id - params.n0 >= params.n) { return; }  // another chunk's row
  let width = params.dim / 4u;
  let w = (id - params.n0) * width;
  let pos = (r % params.seq) * width;
  let typ = type_ids[r] * width;
  for (var j = lid; j < width; j += WG) {
    out[r * width + j] = (word[w + j] + token_type[typ + j]) + position[pos + j];
  }
}
