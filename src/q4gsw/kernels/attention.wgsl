// llm/attention: softmax(q k^T * scale) v over the KV cache, causal, with grouped-query heads:
// query head kh * G + h reads kv head kh (transformers' repeat_kv). Query row t is at
// position p = state.pos + t and sees keys [lo, p] with lo = max(0, p + 1 - WINDOW) when a
// sliding window is set (WINDOW > 0), else 0.
// One workgroup per (row t, kv head kh, split s): its G query heads share every key and value
// it loads. Keys are walked in tiles of WG (one key an invocation: G scores each), with the
// online softmax (running max m, sum l and accumulator rescaled when m grows). With SPLITS = 1
// a workgroup covers all of [lo, p] and writes the normalized output; with SPLITS > 1 (decode)
// split s covers keys [s * SPLIT_KEYS, (s + 1) * SPLIT_KEYS) and writes its unnormalized
// accumulator and (m, l), which attention_combine.wgsl merges (l = 0: an empty split).
// Needs D % 4 == 0, G * D <= 4096, SPLIT_KEYS % WG == 0.
//
// Bindings (group 0): 0 out (read_write f32: T x Q_HEADS x D, or partial sums T x KV_HEADS x
//                     SPLITS x G x D), 1 stats (read_write vec2<f32>, T x KV_HEADS x SPLITS x G:
//                     (m, l); written only with SPLITS > 1), 2 q (vec4<f32>, T x Q_HEADS x D),
//                     3 k_cache, 4 v_cache (f32, KV_HEADS x max_positions x D),
//                     5 state (uniform State), 6 params (uniform Params)
// Overrides: WG (keys per tile), G, D, KV_HEADS, SPLITS, SPLIT_KEYS, WINDOW.

override WG: u32 = 64u;
override G: u32 = 4u;
override D: u32 = 128u;
override KV_HEADS: u32 = 8u;
override SPLITS: u32 = 1u;
override SPLIT_KEYS: u32 = 64u;
override WINDOW: u32 = 0u;
const NEG: f32 = -3.0e38;  // below every score, and exp(NEG - m) = 0 without infinities

struct State { pos: u32, step: u32, pad0: u32, pad1: u32, }
struct Params { rows: u32, max_positions: u32, scale: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<uniform> state: State;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, G * D / 4u>;   // [G][D / 4]
var<workgroup> p: array<f32, G * WG>;              // [G][WG]: scores, then probabilities
var<workgroup> acc: array<f32, G * D>;             // [G][D]
var<workgroup> m_run: array<f32, G>;
var<workgroup> l_run: array<f32, G>;
var<workgroup> rescale: array<f32, G>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let split = tile % SPLITS;
  let kh = (tile / SPLITS) % KV_HEADS;
  let t = tile / (SPLITS * KV_HEADS);
  if (t >= params.rows) { return; }
  let limit = state.pos + t + 1u;                     // keys < limit are visible
  var lo = 0u;
  if (WINDOW > 0u && limit > WINDOW) { lo = limit - WINDOW; }
  var start = lo;
  var end = limit;
  if (SPLITS > 1u) {
    start = max(lo, split * SPLIT_KEYS);
    end = min(limit, (split + 1u) * SPLIT_KEYS);
  }
  let q_heads = KV_HEADS * G;
  let d4 = D / 4u;
  let q_base = (t * q_heads + kh * G) * d4;
  for (var i = lid; i < G * d4; i += WG) { qs[i] = q[q_base + i]; }
  for (var i = lid; i < G * D; i += WG) { acc[i] = 0.0; }
  if (lid < G) { m_run[lid] = NEG; l_run[lid] = 0.0; }
  workgroupBarrier();
  let kv_base = kh * params.max_positions;
  for (var k0 = start; k0 < end; k0 += WG) {
    let j = k0 + lid;
    let valid = j < end;
    let key = (kv_base + min(j, end - 1u)) * d4;
    for (var h = 0u; h < G; h++) {
      var s = vec4<f32>(0.0);
      for (var c = 0u; c < d4; c++) { s = fma(qs[h * d4 + c], k_cache[key + c], s); }
      p[h * WG + lid] = select(NEG, (s.x + s.y + s.z + s.w) * params.scale, valid);
    }
    workgroupBarrier();
    let count = min(WG, end - k0);
    if (lid < G) {
      let h = lid;
      var m_tile = NEG;
      for (var i = 0u; i < count; i++) { m_tile = max(m_tile, p[h * WG + i]); }
      let m_new = max(m_run[h], m_tile);
      var sum = 0.0;
      for (var i = 0u; i < count; i++) {
        let e = exp(p[h * WG + i] - m_new);
        p[h * WG + i] = e;
        sum += e;
      }
      let r = exp(m_run[h] - m_new);
      rescale[h] = r;
      l_run[h] = l_run[h] * r + sum;
      m_run[h] = m_new;
    }
    workgroupBarrier();
    for (var i = lid; i < G * D; i += WG) {
      let h = i / D;
      let d = i % D;
      var a = acc[i] * rescale[h];
      for (var e = 0u; e < count; e++) {
        a = fma(p[h * WG + e], v_cache[(kv_base + k0 + e) * D + d], a);
      }
      acc[i] = a;
    }
    workgroupBarrier();
  }
  if (SPLITS == 1u) {
    for (var i = lid; i < G * D; i += WG) {
      out[(t * q_heads + kh * G) * D + i] = acc[i] / l_run[i / D];
    }
    return;
  }
  let slot = (t * KV_HEADS + kh) * SPLITS + split;
  if (lid < G) { stats[slot * G + lid] = vec2<f32>(m_run[lid], l_run[lid]); }
  if (start < end) {
    for (var i = lid; i < G * D; i += WG) { out[slot * G * D + i] = acc[i]; }
  }
}
