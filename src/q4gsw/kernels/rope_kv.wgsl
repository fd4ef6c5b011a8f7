// llm/rope_kv: rotary position embedding of q and k, and the KV-cache write, for T rows of a
// concatenated q/k/v projection (transformers' rotate_half convention: element i < D/2 pairs
// with i + D/2). Row t is at position pos = state.pos + t:
//   q_out[t, h, :]        = rope(qkv[t, h, :], pos)                  h < Q_HEADS
//   k_cache[kh, pos, :]   = rope(qkv[t, Q_HEADS + kh, :], pos)       kh < KV_HEADS
//   v_cache[kh, pos, :]   = qkv[t, Q_HEADS + KV_HEADS + kh, :]
// with rope(x)[i] = x[i] cos - x[i + D/2] sin, rope(x)[i + D/2] = x[i + D/2] cos + x[i] sin,
// (cos, sin) = cos_sin[pos, i] (a table the host computes as transformers does, in float32).
// One workgroup per (row t, head of the Q_HEADS + 2 KV_HEADS); invocations walk i.
//
// The cache's element type KvScalar and the rounding to it, to_kv, come from kv_f32.wgsl or
// kv_f16.wgsl, joined before this file (KernelKey.files).
//
// Bindings (group 0): 0 q_out (read_write f32, T x Q_HEADS x D), 1 k_cache, 2 v_cache
//                     (read_write KvScalar, KV_HEADS x max_positions x D), 3 qkv (f32, T x heads x D),
//                     4 cos_sin (vec2<f32>, max_positions x D/2), 5 state (uniform State),
//                     6 params (uniform Params: rows, max_positions)
// Overrides: WG, Q_HEADS, KV_HEADS, D (head dim, even).

override WG: u32 = 64u;
override Q_HEADS: u32 = 32u;
override KV_HEADS: u32 = 8u;
override D: u32 = 128u;

struct State { pos: u32, step: u32, pad0: u32, pad1: u32, }
struct Params { rows: u32, max_positions: u32, pad0: u32, pad1: u32, }

@group(0) @binding(0) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(1) var<storage, read_write> k_cache: array<KvScalar>;
@group(0) @binding(2) var<storage, read_write> v_cache: array<KvScalar>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> cos_sin: array<vec2<f32>>;
@group(0) @binding(5) var<uniform> state: State;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let heads = Q_HEADS + 2u * KV_HEADS;
  let tile = wid.x + wid.y * nwg.x;
  let t = tile / heads;
  let head = tile % heads;
  let pos = state.pos + t;
  if (t >= params.rows || pos >= params.max_positions) { return; }
  let src = (t * heads + head) * D;
  let half = D / 2u;
  if (head >= Q_HEADS + KV_HEADS) {  // v: copied into the cache
    let dst = ((head - Q_HEADS - KV_HEADS) * params.max_positions + pos) * D;
    for (var i = lid; i < D; i += WG) { v_cache[dst + i] = to_kv(qkv[src + i]); }
    return;
  }
  for (var i = lid; i < half; i += WG) {
    let cs = cos_sin[pos * half + i];
    let a = qkv[src + i];
    let b = qkv[src + i + half];
    let lo = a * cs.x - b * cs.y;
    let hi = b * cs.x + a * cs.y;
    if (head < Q_HEADS) {
      let dst = (t * Q_HEADS + head) * D;
      q_out[dst + i] = lo;
      q_out[dst + i + half] = hi;
    } else {
      let dst = ((head - Q_HEADS) * params.max_positions + pos) * D;
      k_cache[dst + i] = to_kv(lo);
      k_cache[dst + i + half] = to_kv(hi);
    }
  }
}
