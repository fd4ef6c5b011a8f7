// llm/attention: softmax(q k^T * scale) v over the KV cache, causal, with grouped-query heads:
// query head kh * G + h reads kv head kh (transformers' repeat_kv). Query row t is at
// position p = state.pos + t and sees keys [lo, p] with lo = max(0, p + 1 - WINDOW) when a
// sliding window is set (WINDOW > 0), else 0.
// One workgroup per (row t, kv head kh, split s): its G query heads share every key and value
// it loads. Keys are walked in tiles of WG, with the online softmax (running max m, sum l and
// accumulator rescaled when m grows). With SPLITS = 1 a workgroup covers all of [lo, p] and
// writes the normalized output; with SPLITS > 1 (decode) split s covers keys
// [s * SPLIT_KEYS, (s + 1) * SPLIT_KEYS) and writes its unnormalized accumulator and (m, l),
// which attention_combine.wgsl merges (l = 0: an empty split).
// Per tile:
//   scores: invocation i takes key k0 + i: one pass over its row of k (D / 4 vec4 loads, 8 in
//     flight), G dot products in named registers against q in workgroup memory;
//   softmax: a tree over the tile per head (max, then sum of exp);
//   values: invocation i takes the vec4 column c = i % (D / 4) of every KL-th key (KL = WG /
//     (D / 4) key lanes; 4 loads in flight), G vec4 accumulators in registers, the lanes added
//     in workgroup memory.
// Needs D % 4 == 0, D / 4 <= WG, G <= 8, SPLIT_KEYS % WG == 0.
//
// Bindings (group 0): 0 out (read_write f32: T x Q_HEADS x D, or partial sums T x KV_HEADS x
//                     SPLITS x G x D), 1 stats (read_write vec2<f32>, T x KV_HEADS x SPLITS x G:
//                     (m, l); written only with SPLITS > 1), 2 q (vec4<f32>, T x Q_HEADS x D),
//                     3 k_cache, 4 v_cache (vec4<KvScalar>, KV_HEADS x max_positions x D; read
//                     as vec4<f32>), 5 state (uniform State), 6 params (uniform Params)
// KvScalar (f32, or f16 for a half-precision cache) comes from kv_f32.wgsl or kv_f16.wgsl,
// joined before this file (KernelKey.files); scores, softmax and sums are f32 either way.
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
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<KvScalar>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<KvScalar>>;
@group(0) @binding(5) var<uniform> state: State;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, G * D / 4u>;   // [G][D / 4]
var<workgroup> p: array<f32, G * WG>;              // [G][WG]: scores, then probabilities
var<workgroup> red: array<f32, G * WG>;            // [G][WG]: the tree reductions
var<workgroup> lanes: array<vec4<f32>, G * WG>;    // [key lane][G][D / 4]: value sums of the lanes
var<workgroup> acc: array<vec4<f32>, G * D / 4u>;  // [G][D / 4]: the running accumulator
var<workgroup> m_run: array<f32, G>;
var<workgroup> l_run: array<f32, G>;
var<workgroup> rescale: array<f32, G>;
var<workgroup> m_new: array<f32, G>;

fn dot_row(h: u32, c: u32, k: vec4<f32>) -> f32 { return dot(qs[h * (D / 4u) + c], k); }

fn dot8(h: u32, c: u32, k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>,
        k4: vec4<f32>, k5: vec4<f32>, k6: vec4<f32>, k7: vec4<f32>) -> f32 {
  let b = h * (D / 4u) + c;
  return (dot(qs[b], k0) + dot(qs[b + 1u], k1) + dot(qs[b + 2u], k2) + dot(qs[b + 3u], k3))
       + (dot(qs[b + 4u], k4) + dot(qs[b + 5u], k5) + dot(qs[b + 6u], k6) + dot(qs[b + 7u], k7));
}

// acc + p[h][e] * v for the G heads, in the named accumulators of main (through a struct)
struct Acc { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
             a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>, }

fn add_value(acc_in: Acc, e: u32, v: vec4<f32>) -> Acc {
  var a = acc_in;
  a.a0 = fma(vec4<f32>(p[e]), v, a.a0);
  if (G > 1u) { a.a1 = fma(vec4<f32>(p[WG + e]), v, a.a1); }
  if (G > 2u) { a.a2 = fma(vec4<f32>(p[2u * WG + e]), v, a.a2); }
  if (G > 3u) { a.a3 = fma(vec4<f32>(p[3u * WG + e]), v, a.a3); }
  if (G > 4u) { a.a4 = fma(vec4<f32>(p[4u * WG + e]), v, a.a4); }
  if (G > 5u) { a.a5 = fma(vec4<f32>(p[5u * WG + e]), v, a.a5); }
  if (G > 6u) { a.a6 = fma(vec4<f32>(p[6u * WG + e]), v, a.a6); }
  if (G > 7u) { a.a7 = fma(vec4<f32>(p[7u * WG + e]), v, a.a7); }
  return a;
}

// reduce red[h][0 .. WG) for every head to red[h][0], with max (is_max) or +
fn tree(lid: u32, is_max: bool) {
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var h = 0u; h < G; h++) {
        let a = red[h * WG + lid];
        let b = red[h * WG + lid + s];
        red[h * WG + lid] = select(a + b, max(a, b), is_max);
      }
    }
    workgroupBarrier();
  }
}

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
  let d4 = D / 4u;
  let q_heads = KV_HEADS * G;
  let q_base = (t * q_heads + kh * G) * d4;
  for (var i = lid; i < G * d4; i += WG) {
    qs[i] = q[q_base + i];
    acc[i] = vec4<f32>(0.0);
  }
  if (lid < G) { m_run[lid] = NEG; l_run[lid] = 0.0; }
  workgroupBarrier();
  let kv_base = kh * params.max_positions;
  let key_lanes = WG / d4;
  let col = lid % d4;
  let lane = lid / d4;
  for (var k0 = start; k0 < end; k0 += WG) {
    let count = min(WG, end - k0);
    // scores: key k0 + lid against the G query heads; the row's loads issued 8 at a time
    // (a loop that consumed each load at once would wait a memory latency per vec4)
    let key = (kv_base + k0 + min(lid, count - 1u)) * d4;
    var s0 = 0.0; var s1 = 0.0; var s2 = 0.0; var s3 = 0.0;
    var s4 = 0.0; var s5 = 0.0; var s6 = 0.0; var s7 = 0.0;
    var c = 0u;
    for (; c + 8u <= d4; c += 8u) {
      let k_0 = vec4<f32>(k_cache[key + c]);      let k_1 = vec4<f32>(k_cache[key + c + 1u]);
      let k_2 = vec4<f32>(k_cache[key + c + 2u]); let k_3 = vec4<f32>(k_cache[key + c + 3u]);
      let k_4 = vec4<f32>(k_cache[key + c + 4u]); let k_5 = vec4<f32>(k_cache[key + c + 5u]);
      let k_6 = vec4<f32>(k_cache[key + c + 6u]); let k_7 = vec4<f32>(k_cache[key + c + 7u]);
      s0 += dot8(0u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7);
      if (G > 1u) { s1 += dot8(1u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 2u) { s2 += dot8(2u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 3u) { s3 += dot8(3u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 4u) { s4 += dot8(4u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 5u) { s5 += dot8(5u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 6u) { s6 += dot8(6u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
      if (G > 7u) { s7 += dot8(7u, c, k_0, k_1, k_2, k_3, k_4, k_5, k_6, k_7); }
    }
    for (; c < d4; c++) {  // head dims not a multiple of 32
      let k = vec4<f32>(k_cache[key + c]);
      s0 += dot_row(0u, c, k);
      if (G > 1u) { s1 += dot_row(1u, c, k); }
      if (G > 2u) { s2 += dot_row(2u, c, k); }
      if (G > 3u) { s3 += dot_row(3u, c, k); }
      if (G > 4u) { s4 += dot_row(4u, c, k); }
      if (G > 5u) { s5 += dot_row(5u, c, k); }
      if (G > 6u) { s6 += dot_row(6u, c, k); }
      if (G > 7u) { s7 += dot_row(7u, c, k); }
    }
    let valid = lid < count;
    let sc = params.scale;
    p[lid] = select(NEG, s0 * sc, valid);
    if (G > 1u) { p[WG + lid] = select(NEG, s1 * sc, valid); }
    if (G > 2u) { p[2u * WG + lid] = select(NEG, s2 * sc, valid); }
    if (G > 3u) { p[3u * WG + lid] = select(NEG, s3 * sc, valid); }
    if (G > 4u) { p[4u * WG + lid] = select(NEG, s4 * sc, valid); }
    if (G > 5u) { p[5u * WG + lid] = select(NEG, s5 * sc, valid); }
    if (G > 6u) { p[6u * WG + lid] = select(NEG, s6 * sc, valid); }
    if (G > 7u) { p[7u * WG + lid] = select(NEG, s7 * sc, valid); }
    for (var h = 0u; h < G; h++) { red[h * WG + lid] = p[h * WG + lid]; }
    workgroupBarrier();
    // softmax of the tile, merged into the running (m, l)
    tree(lid, true);
    if (lid < G) { m_new[lid] = max(m_run[lid], red[lid * WG]); }
    workgroupBarrier();
    for (var h = 0u; h < G; h++) {
      let e = exp(p[h * WG + lid] - m_new[h]);
      p[h * WG + lid] = e;
      red[h * WG + lid] = e;
    }
    workgroupBarrier();
    tree(lid, false);
    if (lid < G) {
      let r = exp(m_run[lid] - m_new[lid]);
      rescale[lid] = r;
      l_run[lid] = l_run[lid] * r + red[lid * WG];
      m_run[lid] = m_new[lid];
    }
    // values: column col of keys lane, lane + key_lanes, ...; loads issued 4 at a time
    var a = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0),
                vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var e = select(count, lane, lane < key_lanes);  // spare invocations idle
    let vb = (kv_base + k0) * d4 + col;
    for (; e + 3u * key_lanes < count; e += 4u * key_lanes) {
      let v0 = vec4<f32>(v_cache[vb + e * d4]);
      let v1 = vec4<f32>(v_cache[vb + (e + key_lanes) * d4]);
      let v2 = vec4<f32>(v_cache[vb + (e + 2u * key_lanes) * d4]);
      let v3 = vec4<f32>(v_cache[vb + (e + 3u * key_lanes) * d4]);
      a = add_value(a, e, v0);
      a = add_value(a, e + key_lanes, v1);
      a = add_value(a, e + 2u * key_lanes, v2);
      a = add_value(a, e + 3u * key_lanes, v3);
    }
    for (; e < count; e += key_lanes) { a = add_value(a, e, vec4<f32>(v_cache[vb + e * d4])); }
    let slot = min(lane, key_lanes - 1u) * G * d4 + col;
    if (lane < key_lanes) {
      lanes[slot] = a.a0;
      if (G > 1u) { lanes[slot + d4] = a.a1; }
      if (G > 2u) { lanes[slot + 2u * d4] = a.a2; }
      if (G > 3u) { lanes[slot + 3u * d4] = a.a3; }
      if (G > 4u) { lanes[slot + 4u * d4] = a.a4; }
      if (G > 5u) { lanes[slot + 5u * d4] = a.a5; }
      if (G > 6u) { lanes[slot + 6u * d4] = a.a6; }
      if (G > 7u) { lanes[slot + 7u * d4] = a.a7; }
    }
    workgroupBarrier();
    for (var i = lid; i < G * d4; i += WG) {
      var sum = acc[i] * rescale[i / d4];
      for (var l = 0u; l < key_lanes; l++) { sum += lanes[l * G * d4 + i]; }
      acc[i] = sum;
    }
    workgroupBarrier();
  }
  if (SPLITS == 1u) {
    for (var i = lid; i < G * d4; i += WG) {
      let v = acc[i] / l_run[i / d4];
      let o = (t * q_heads + kh * G) * D + 4u * i;
      out[o] = v.x; out[o + 1u] = v.y; out[o + 2u] = v.z; out[o + 3u] = v.w;
    }
    return;
  }
  let slot = (t * KV_HEADS + kh) * SPLITS + split;
  if (lid < G) { stats[slot * G + lid] = vec2<f32>(m_run[lid], l_run[lid]); }
  if (start < end) {
    for (var i = lid; i < G * d4; i += WG) {
      let v = acc[i];
      let o = slot * G * D + 4u * i;
      out[o] = v.x; out[o + 1u] = v.y; out[o + 2u] = v.z; out[o + 3u] = v.w;
    }
  }
}
