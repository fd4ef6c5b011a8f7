// encoder/encoder_attention: bidirectional multi-head attention with a padding mask (BERT's
// self-attention), over a batch of B sequences of T tokens, rows r = b * T + t:
//   out[r, h, :] = sum_j p_j v[b * T + j, h, :],  p = softmax_j(q[r, h, :] . k[b * T + j, h, :] * scale)
// over the keys j < T with mask[b, j] != 0 (transformers adds the float32 minimum to the
// others' scores: their probability is exactly 0 there too). A row whose keys are all masked
// gets zeros. q, k, v, out are (B * T, HEADS * D) row-major: the linears' outputs as they
// are, and out is the attention output linear's input.
// One workgroup per (row r, head h): q's head in workgroup memory; invocation i scores keys
// i, i + WG, ... into workgroup memory (up to MAX_KEYS); a tree gives the max, then the sum
// of exp; then invocation i takes the vec4 column c = i % (D / 4) of every KL-th key (KL =
// WG / (D / 4) key lanes), and the lanes are added in workgroup memory.
// Needs D % 4 == 0, D / 4 <= WG, T <= MAX_KEYS.
//
// Bindings (group 0): 0 out (read_write vec4<f32>, B * T x HEADS * D), 1 q, 2 k, 3 v
//                     (vec4<f32>, B * T x HEADS * D), 4 mask (f32, B x T: 1 token, 0 padding),
//                     5 params (uniform Params: rows = B * T, seq = T, scale)
// Overrides: WG (a power of two <= 256), HEADS, D, MAX_KEYS.

override WG: u32 = 64u;
override HEADS: u32 = 12u;
override D: u32 = 32u;
override MAX_KEYS: u32 = 512u;
const NEG: f32 = -3.0e38;  // below every score

struct Params { rows: u32, seq: u32, scale: f32, pad0: u32, }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> qs: array<vec4<f32>, D / 4u>;
var<workgroup> p: array<f32, MAX_KEYS>;      // scores, then exp(score - max)
var<workgroup> red: array<f32, WG>;          // tree reductions
var<workgroup> lanes: array<vec4<f32>, WG>;  // [key lane][D / 4]: value sums of the lanes

// max (is_max) or sum of red[0 .. WG), returned to every invocation
fn tree(lid: u32, mine: f32, is_max: bool) -> f32 {
  red[lid] = mine;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let a = red[lid];
      let b = red[lid + s];
      red[lid] = select(a + b, max(a, b), is_max);
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let h = tile % HEADS;
  let r = tile / HEADS;
  if (r >= params.rows) { return; }  // uniform per workgroup
  let seq = params.seq;
  let first = (r / seq) * seq;  // the sequence's first row
  let d4 = D / 4u;
  let width = HEADS * d4;  // vec4s a row
  if (lid < d4) { qs[lid] = q[r * width + h * d4 + lid]; }
  workgroupBarrier();
  var m = NEG;
  for (var j = lid; j < seq; j += WG) {
    var s = NEG;
    if (mask[first + j] != 0.0) {
      let kb = (first + j) * width + h * d4;
      var acc = 0.0;
      for (var c = 0u; c < d4; c++) { acc += dot(qs[c], k[kb + c]); }
      s = acc * params.scale;
    }
    p[j] = s;
    m = max(m, s);
  }
  m = tree(lid, m, true);
  var l = 0.0;
  for (var j = lid; j < seq; j += WG) {
    let e = select(exp(p[j] - m), 0.0, p[j] == NEG);
    p[j] = e;
    l += e;
  }
  l = tree(lid, l, false);  // its barriers also publish p
  let key_lanes = WG / d4;
  let col = lid % d4;
  let lane = lid / d4;
  var a = vec4<f32>(0.0);
  if (lane < key_lanes) {
    for (var j = lane; j < seq; j += key_lanes) {
      a = fma(vec4<f32>(p[j]), v[(first + j) * width + h * d4 + col], a);
    }
    lanes[lane * d4 + col] = a;
  }
  workgroupBarrier();
  if (lid < d4) {
    var sum = vec4<f32>(0.0);
    for (var e = 0u; e < key_lanes; e++) { sum += lanes[e * d4 + lid]; }
    out[r * width + h * d4 + lid] = select(sum / l, vec4<f32>(0.0), l == 0.0);
  }
}
