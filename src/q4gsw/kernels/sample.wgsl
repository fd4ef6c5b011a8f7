// llm/sample: the next token drawn from softmax(logits / temperature), restricted as
// transformers' TopK then TopP logits warpers restrict it, written to ids[0] and
// generated[state.step]. One workgroup of WG invocations walks the row `offset` of logits:
//   1. m = max logit;
//   2. top_k < vocab: the k-th largest logit's order key Kk (bit by bit, 32 counting passes:
//      the largest key with at least k logits at or above it); tokens below it drop (ties at
//      the k-th value stay, as in TopKLogitsWarper);
//   3. top_p < 1: of those, the largest key Kp whose tokens at or above it hold at least
//      top_p of their probability (32 summing passes): the set TopPLogitsWarper keeps (it
//      drops the least likely tokens while they hold at most 1 - top_p);
//   4. Gumbel-max over the survivors: argmax of logit / temperature - log(-log(u_i)), u_i a
//      hash of (seed, step, i) in (0, 1): an exact draw from the restricted softmax.
// Order keys map float bits to u32 monotonically (negatives complemented, positives with the
// sign bit set), so "key >= K" is "logit >= the float of K".
//
// Bindings (group 0): 0 ids (read_write u32), 1 generated (read_write u32), 2 logits (f32),
//                     3 state (uniform State), 4 sampling (uniform Sampling), 5 params (uniform Params)
// Overrides: WG (a power of two <= 256).

override WG: u32 = 256u;

struct State { pos: u32, step: u32, pad0: u32, pad1: u32, }
struct Sampling { temperature: f32, top_k: u32, top_p: f32, seed: u32, }
struct Params { vocab: u32, offset: u32, capacity: u32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> ids: array<u32>;
@group(0) @binding(1) var<storage, read_write> generated: array<u32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<uniform> state: State;
@group(0) @binding(4) var<uniform> sampling: Sampling;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;

fn order_key(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(~b, b | 0x80000000u, (b >> 31u) == 0u);
}

// a well-mixed 32-bit hash (the murmur3 finalizer)
fn mix(h0: u32) -> u32 {
  var h = h0;
  h ^= h >> 16u; h *= 0x85ebca6bu;
  h ^= h >> 13u; h *= 0xc2b2ae35u;
  h ^= h >> 16u;
  return h;
}

fn sum_f(v: f32, lid: u32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] += red_f[lid + s]; }
    workgroupBarrier();
  }
  let total = red_f[0];
  workgroupBarrier();
  return total;
}

fn sum_u(v: u32, lid: u32) -> u32 {
  red_u[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] += red_u[lid + s]; }
    workgroupBarrier();
  }
  let total = red_u[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = params.vocab;
  let row = params.offset;
  let inv_t = 1.0 / sampling.temperature;
  // 1. the largest logit (its order key)
  var best = 0u;
  for (var i = lid; i < n; i += WG) { best = max(best, order_key(logits[row + i])); }
  red_u[lid] = best;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] = max(red_u[lid], red_u[lid + s]); }
    workgroupBarrier();
  }
  let max_key = red_u[0];
  workgroupBarrier();
  let m = bitcast<f32>(select(~max_key, max_key & 0x7FFFFFFFu, (max_key >> 31u) == 1u));
  // 2. top-k: the largest key K with count(key >= K) >= k
  var k_key = 0u;
  if (sampling.top_k < n) {
    for (var bit = 31i; bit >= 0i; bit--) {
      let cand = k_key | (1u << u32(bit));
      var count = 0u;
      for (var i = lid; i < n; i += WG) { count += select(0u, 1u, order_key(logits[row + i]) >= cand); }
      if (sum_u(count, lid) >= sampling.top_k) { k_key = cand; }
    }
  }
  // 3. top-p over the survivors of top-k: the largest K with mass(key >= K) >= top_p
  var p_key = k_key;
  if (sampling.top_p < 1.0) {
    p_key = 0u;  // the search ends at or above k_key: mass(key >= k_key) is the whole total
    var z = 0.0;
    for (var i = lid; i < n; i += WG) {
      let v = logits[row + i];
      if (order_key(v) >= k_key) { z += exp((v - m) * inv_t); }
    }
    let total = sum_f(z, lid);
    for (var bit = 31i; bit >= 0i; bit--) {
      let cand = p_key | (1u << u32(bit));
      let floor = max(cand, k_key);
      var mass = 0.0;
      for (var i = lid; i < n; i += WG) {
        let v = logits[row + i];
        if (order_key(v) >= floor) { mass += exp((v - m) * inv_t); }
      }
      if (sum_f(mass, lid) >= sampling.top_p * total) { p_key = cand; }
    }
  }
  // 4. Gumbel-max among the survivors
  let stream = mix(sampling.seed ^ mix(state.step * 0x9E3779B9u + 0x7F4A7C15u));
  var g_best = -3.0e38;
  var g_index = 0xFFFFFFFFu;
  for (var i = lid; i < n; i += WG) {
    let v = logits[row + i];
    if (order_key(v) >= p_key) {
      let u = (f32(mix(stream ^ mix(i + 0x632BE5ABu)) >> 8u) + 0.5) * (1.0 / 16777216.0);
      let g = (v - m) * inv_t - log(-log(u));
      if (g > g_best) { g_best = g; g_index = i; }
    }
  }
  red_f[lid] = g_best;
  red_u[lid] = g_index;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s && (red_f[lid + s] > red_f[lid] || (red_f[lid + s] == red_f[lid] && red_u[lid + s] < red_u[lid]))) {
      red_f[lid] = red_f[lid + s];
      red_u[lid] = red_u[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let token = select(red_u[0], 0u, red_u[0] == 0xFFFFFFFFu);
    ids[0] = token;
    if (state.step < params.capacity) { generated[state.step] = token; }
  }
}
