// llm/attention_combine: merges the splits of attention.wgsl (SPLITS > 1) for each row t and
// query head hq = kh * G + h:
//   out[t, hq, :] = sum_s acc_s w_s / sum_s l_s w_s,  w_s = exp(m_s - M),  M = max_s m_s,
// over the splits that can hold keys of row t (s * SPLIT_KEYS <= state.pos + t) with l_s > 0
// (the others saw no key; their accumulators are not read).
// One workgroup per (t, hq): the invocations first find M and the weights w_s (a tree over
// the splits), then invocation i adds vec4 column c = i % (D / 4) of the splits i / (D / 4),
// i / (D / 4) + LANES, ... (LANES = WG / (D / 4) split lanes), and the lanes are added in
// workgroup memory.
// Needs D % 4 == 0, D / 4 <= WG.
//
// Bindings (group 0): 0 out (read_write f32, T x Q_HEADS x D), 1 partial (vec4<f32>, as
//                     attention's out), 2 stats (vec2<f32>, as attention's stats),
//                     3 state (uniform State), 4 params (uniform Params)
// Overrides: WG (a power of two), G, D, KV_HEADS, SPLITS, SPLIT_KEYS (as attention.wgsl).

override WG: u32 = 128u;
override G: u32 = 4u;
override D: u32 = 128u;
override KV_HEADS: u32 = 8u;
override SPLITS: u32 = 2u;
override SPLIT_KEYS: u32 = 64u;

struct State { pos: u32, step: u32, pad0: u32, pad1: u32, }
struct Params { rows: u32, max_positions: u32, scale: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> partial: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(3) var<uniform> state: State;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> weight: array<f32, SPLITS>;
var<workgroup> red: array<f32, WG>;
var<workgroup> lanes: array<vec4<f32>, WG>;

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
  let used = min(SPLITS, (state.pos + t) / SPLIT_KEYS + 1u);
  var m = -3.0e38;
  for (var s = lid; s < used; s += WG) {
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
  for (var s = lid; s < used; s += WG) {
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
  let d4 = D / 4u;
  let split_lanes = WG / d4;
  let col = lid % d4;
  let lane = lid / d4;
  var a = vec4<f32>(0.0);
  for (var s = select(used, lane, lane < split_lanes); s < used; s += split_lanes) {
    let w = weight[s];
    if (w > 0.0) { a = fma(vec4<f32>(w), partial[((first + s) * G + h) * d4 + col], a); }
  }
  lanes[lid] = a;
  workgroupBarrier();
  if (lid < d4) {
    var sum = vec4<f32>(0.0);
    for (var i = 0u; i < split_lanes; i++) { sum += lanes[i * d4 + lid]; }
    let v = sum * inv_l;
    let o = (t * q_heads + hq) * D + 4u * lid;
    out[o] = v.x; out[o + 1u] = v.y; out[o + 2u] = v.z; out[o + 3u] = v.w;
  }
}
