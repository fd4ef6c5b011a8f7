// llm/attention_combine: merges the splits of attention.wgsl (SPLITS > 1) for each row t and
// query head hq = kh * G + h:
//   out[t, hq, :] = sum_s acc_s w_s / sum_s l_s w_s,  w_s = exp(m_s - M),  M = max_s m_s,
// over the splits with l_s > 0 (the others saw no key; their accumulators are not read).
// One workgroup per (t, hq): the invocations first find M and the weights w_s (a tree over
// the splits), then walk the D elements, each adding its element of every used split.
//
// Bindings (group 0): 0 out (read_write f32, T x Q_HEADS x D), 1 partial (f32, as attention's
//                     out), 2 stats (vec2<f32>, as attention's stats), 3 params (uniform Params)
// Overrides: WG (a power of two), G, D, KV_HEADS, SPLITS (as attention.wgsl).

override WG: u32 = 64u;
override G: u32 = 4u;
override D: u32 = 128u;
override KV_HEADS: u32 = 8u;
override SPLITS: u32 = 2u;

struct Params { rows: u32, max_positions: u32, scale: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> weight: array<f32, SPLITS>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let q_heads = KV_HEADS * G;
  let tile = wid.x + wid.y * nwg.x;
  let t = tile / q_heads;
  let hq = tile % q_heads;
  if (t >= params.rows) { return; }
  let kh = hq / G;
  let h = hq % G;
  let first = (t * KV_HEADS + kh) * SPLITS;
  var m = -3.0e38;
  for (var s = lid; s < SPLITS; s += WG) {
    let ml = stats[(first + s) * G + h];
    if (ml.y > 0.0) { m = max(m, ml.x); }
  }
  red[lid] = m;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step >>= 1u) {
    if (lid < step) { red[lid] = max(red[lid], red[lid + step]); }
    workgroupBarrier();
  }
  let m_all = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var s = lid; s < SPLITS; s += WG) {
    let ml = stats[(first + s) * G + h];
    let w = select(0.0, exp(ml.x - m_all), ml.y > 0.0);
    weight[s] = w;
    l += ml.y * w;
  }
  red[lid] = l;
  workgroupBarrier();
  for (var step = WG / 2u; step > 0u; step >>= 1u) {
    if (lid < step) { red[lid] += red[lid + step]; }
    workgroupBarrier();
  }
  let inv_l = 1.0 / red[0];
  for (var d = lid; d < D; d += WG) {
    var a = 0.0;
    for (var s = 0u; s < SPLITS; s++) {
      let w = weight[s];
      if (w > 0.0) { a += partial[((first + s) * G + h) * D + d] * w; }
    }
    out[(t * q_heads + hq) * D + d] = a * inv_l;
  }
}
