// encoder/mean_pool_normalize: sentence embeddings from the encoder's last hidden states, as
// sentence-transformers' Pooling (mean over the attention mask) and Normalize (L2) compute them:
//   mean[b, j] = sum_t h[b, t, j] * mask[b, t] / max(sum_t mask[b, t], 1e-9)
//   out[b, j]  = mean[b, j] / max(||mean[b, :]||, 1e-12)
// One workgroup per sequence b; invocation i owns the columns i, i + WG, ... (writes their
// means to out, and later rescales what it wrote itself: no barrier needed between); a tree
// in workgroup memory gives the squared norm.
//
// Bindings (group 0): 0 out (read_write f32, B x dim), 1 hidden (f32, B x T x dim),
//                     2 mask (f32, B x T), 3 params (uniform Params: batch, seq = T, dim)
// Overrides: WG (a power of two <= 256).

override WG: u32 = 128u;

struct Params { batch: u32, seq: u32, dim: u32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> hidden: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let b = wid.x + wid.y * nwg.x;
  if (b >= params.batch) { return; }  // uniform per workgroup
  let seq = params.seq;
  let dim = params.dim;
  var count = 0.0;
  for (var t = 0u; t < seq; t++) { count += mask[b * seq + t]; }
  let inv_count = 1.0 / max(count, 1e-9);
  var squares = 0.0;
  for (var j = lid; j < dim; j += WG) {
    var sum = 0.0;
    for (var t = 0u; t < seq; t++) { sum += hidden[(b * seq + t) * dim + j] * mask[b * seq + t]; }
    let mean = sum * inv_count;
    out[b * dim + j] = mean;
    squares += mean * mean;
  }
  partial[lid] = squares;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let inv_norm = 1.0 / max(sqrt(partial[0]), 1e-12);
  for (var j = lid; j < dim; j += WG) { out[b * dim + j] = out[b * dim + j] * inv_norm; }
}
