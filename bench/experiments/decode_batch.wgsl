// EXPERIMENT (bench/explore_decode_batch.py): decode for 2 <= M <= 8 with the weight unpack
// shared by all rows of x. The shipped decode kernels give each row of x its own workgroups,
// so M rows cost M times the unpack, the x loads and the reductions.
//
// Invocation c owns one u32 word (8 k) of every weight row: c < K/8 = WG (one workgroup
// covers all of K; the experiment needs K = 8 * WG, WG <= 1024). It keeps x[m, 8c .. 8c+7]
// for the MB rows of x of its workgroup in 2 * MB vec4 registers. A step covers 4 weight
// rows: 4 coalesced u32 loads (the next step's issued before this step's math), 8 nibbles
// each unpacked once to 1 + u/16 (see decode.wgsl), then one 8-term dot per row of x.
// The step's 4 x MB row sums (always 32 values: rows of x past MB are zero) are added across
// the subgroup by a transpose-reduction: 5 exchange levels halve the values each lane holds
// (31 shuffles for 32 sums, where 32 subgroupAdds take 160), leaving lane j the sum of value
// j. Subgroups of another size than 32 take subgroupAdd per value (correct, slower).
// A row's total is the sum over subgroups, through workgroup memory, after the last step.
//
// Bindings (group 0): 0 out, 1 x (vec4<f32>), 2 weights (u32), 3 scales, 4 bias, 5 params
// (as general.wgsl; n_tiles = row blocks, tiles = row blocks x ceil(M / MB)).
// Overrides: WG (= K / 8), ROWS (weight rows per workgroup, multiple of 4), MB (rows of x
// per workgroup: 2, 4 or 8), MIN_LANES (the smallest subgroup size the device may use), HAS_BIAS.

override WG: u32 = 512u;
override ROWS: u32 = 16u;
override MB: u32 = 8u;
override MIN_LANES: u32 = 32u;
override HAS_BIAS: bool = false;
const MANTISSA_TOP4: u32 = 0x00780000u;
const ONE: u32 = 0x3F800000u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, split_stride: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// [ROWS][8 rows of x][subgroups]
var<workgroup> partial: array<f32, ROWS * 8u * WG / MIN_LANES>;

struct Invocation {
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
}

// 1 + u/16 for nibbles 0..3 (lo) and 4..7 (hi) of w
fn lo4(w: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>((vec4<u32>(w << 19u, w << 15u, w << 11u, w << 7u) & vec4<u32>(MANTISSA_TOP4)) | vec4<u32>(ONE));
}
fn hi4(w: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>((vec4<u32>(w << 3u, w >> 1u, w >> 5u, w >> 9u) & vec4<u32>(MANTISSA_TOP4)) | vec4<u32>(ONE));
}

// The 4 rows' sums against one row of x (lo, hi: its 8 k), scaled: s * (16 * dot - 24 * x_sum).
fn rows4(a0: vec4<f32>, b0: vec4<f32>, a1: vec4<f32>, b1: vec4<f32>, a2: vec4<f32>, b2: vec4<f32>,
         a3: vec4<f32>, b3: vec4<f32>, lo: vec4<f32>, hi: vec4<f32>, xs: f32, s16: vec4<f32>,
         s24: vec4<f32>) -> vec4<f32> {
  let d = vec4<f32>(dot(a0, lo) + dot(b0, hi), dot(a1, lo) + dot(b1, hi),
                    dot(a2, lo) + dot(b2, hi), dot(a3, lo) + dot(b3, hi));
  return fma(d, s16, -xs * s24);
}

// One exchange level: lanes with `bit` set keep `hi` and send `lo`, the others the reverse;
// each adds what its partner (lane ^ bit) sent.
fn level4(lo: vec4<f32>, hi: vec4<f32>, upper: bool, bit: u32) -> vec4<f32> {
  let keep = select(lo, hi, upper);
  let send = select(hi, lo, upper);
  return keep + subgroupShuffleXor(send, bit);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let m0 = (tile / params.n_tiles) * MB;
  let n0 = (tile % params.n_tiles) * ROWS;
  let c = inv.lid;  // word c of every row: k = 8c .. 8c+7
  let words = params.k / 8u;
  let last_m = params.m - 1u;
  let xrow = params.k / 4u;
  // x rows m0 .. m0+7 (clamped: rows past M are computed and never written)
  let x0l = x[min(m0, last_m) * xrow + 2u * c];      let x0h = x[min(m0, last_m) * xrow + 2u * c + 1u];
  let x1l = x[min(m0 + 1u, last_m) * xrow + 2u * c]; let x1h = x[min(m0 + 1u, last_m) * xrow + 2u * c + 1u];
  var x2l = vec4<f32>(0.0); var x2h = x2l; var x3l = x2l; var x3h = x2l;
  var x4l = x2l; var x4h = x2l; var x5l = x2l; var x5h = x2l;
  var x6l = x2l; var x6h = x2l; var x7l = x2l; var x7h = x2l;
  if (MB > 2u) {
    x2l = x[min(m0 + 2u, last_m) * xrow + 2u * c]; x2h = x[min(m0 + 2u, last_m) * xrow + 2u * c + 1u];
    x3l = x[min(m0 + 3u, last_m) * xrow + 2u * c]; x3h = x[min(m0 + 3u, last_m) * xrow + 2u * c + 1u];
  }
  if (MB > 4u) {
    x4l = x[min(m0 + 4u, last_m) * xrow + 2u * c]; x4h = x[min(m0 + 4u, last_m) * xrow + 2u * c + 1u];
    x5l = x[min(m0 + 5u, last_m) * xrow + 2u * c]; x5h = x[min(m0 + 5u, last_m) * xrow + 2u * c + 1u];
    x6l = x[min(m0 + 6u, last_m) * xrow + 2u * c]; x6h = x[min(m0 + 6u, last_m) * xrow + 2u * c + 1u];
    x7l = x[min(m0 + 7u, last_m) * xrow + 2u * c]; x7h = x[min(m0 + 7u, last_m) * xrow + 2u * c + 1u];
  }
  let one = vec4<f32>(1.0);
  let xs = vec4<f32>(dot(x0l + x0h, one), dot(x1l + x1h, one), dot(x2l + x2h, one), dot(x3l + x3h, one));
  let xs2 = vec4<f32>(dot(x4l + x4h, one), dot(x5l + x5h, one), dot(x6l + x6h, one), dot(x7l + x7h, one));
  let scale_base = ((8u * c) / params.group_size) * params.scale_stride;
  let last_row = params.n - 1u;
  let groups = (WG + inv.lanes - 1u) / inv.lanes;
  let sg = inv.lid / inv.lanes;
  let full = inv.lanes == 32u;

  var w0 = weights[min(n0, last_row) * words + c];
  var w1 = weights[min(n0 + 1u, last_row) * words + c];
  var w2 = weights[min(n0 + 2u, last_row) * words + c];
  var w3 = weights[min(n0 + 3u, last_row) * words + c];
  for (var r = 0u; r < ROWS; r += 4u) {
    let s = vec4<f32>(scales[scale_base + min(n0 + r, last_row)], scales[scale_base + min(n0 + r + 1u, last_row)],
                      scales[scale_base + min(n0 + r + 2u, last_row)], scales[scale_base + min(n0 + r + 3u, last_row)]);
    let rn = min(r + 4u, ROWS - 4u);
    let v0 = weights[min(n0 + rn, last_row) * words + c];
    let v1 = weights[min(n0 + rn + 1u, last_row) * words + c];
    let v2 = weights[min(n0 + rn + 2u, last_row) * words + c];
    let v3 = weights[min(n0 + rn + 3u, last_row) * words + c];
    let a0 = lo4(w0); let b0 = hi4(w0); let a1 = lo4(w1); let b1 = hi4(w1);
    let a2 = lo4(w2); let b2 = hi4(w2); let a3 = lo4(w3); let b3 = hi4(w3);
    let s16 = 16.0 * s;
    let s24 = 24.0 * s;
    // value j = 4 * (row of x) + (weight row of the step)
    let p0 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x0l, x0h, xs.x, s16, s24);
    let p1 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x1l, x1h, xs.y, s16, s24);
    var p2 = vec4<f32>(0.0); var p3 = p2; var p4 = p2; var p5 = p2; var p6 = p2; var p7 = p2;
    if (MB > 2u) {
      p2 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x2l, x2h, xs.z, s16, s24);
      p3 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x3l, x3h, xs.w, s16, s24);
    }
    if (MB > 4u) {
      p4 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x4l, x4h, xs2.x, s16, s24);
      p5 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x5l, x5h, xs2.y, s16, s24);
      p6 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x6l, x6h, xs2.z, s16, s24);
      p7 = rows4(a0, b0, a1, b1, a2, b2, a3, b3, x7l, x7h, xs2.w, s16, s24);
    }
    if (full) {
      // values 0..31 = vec4 p_q, component e (j = 4q + e); level bits 16, 8, 4 pick q, 2 and 1 pick e
      let u16 = (inv.lane & 16u) != 0u;
      let q0 = level4(p0, p4, u16, 16u); let q1 = level4(p1, p5, u16, 16u);
      let q2 = level4(p2, p6, u16, 16u); let q3 = level4(p3, p7, u16, 16u);
      let u8 = (inv.lane & 8u) != 0u;
      let t0 = level4(q0, q2, u8, 8u); let t1 = level4(q1, q3, u8, 8u);
      let u4 = (inv.lane & 4u) != 0u;
      let f = level4(t0, t1, u4, 4u);  // j = 4 * (lane >> 2) + e
      let u2 = (inv.lane & 2u) != 0u;
      let keep2 = select(f.xy, f.zw, u2);
      let send2 = select(f.zw, f.xy, u2);
      let h = keep2 + subgroupShuffleXor(send2, 2u);
      let u1 = (inv.lane & 1u) != 0u;
      let total = select(h.x, h.y, u1) + subgroupShuffleXor(select(h.y, h.x, u1), 1u);
      // lane j holds value j: row of x j / 4, weight row r + j % 4
      partial[((r + inv.lane % 4u) * 8u + inv.lane / 4u) * groups + sg] = total;
    } else {
      let s0 = subgroupAdd(p0); let s1 = subgroupAdd(p1); let s2 = subgroupAdd(p2); let s3 = subgroupAdd(p3);
      let s4 = subgroupAdd(p4); let s5 = subgroupAdd(p5); let s6 = subgroupAdd(p6); let s7 = subgroupAdd(p7);
      if (inv.lane == 0u) {
        for (var e = 0u; e < 4u; e++) {
          let base = (r + e) * 8u;
          partial[(base + 0u) * groups + sg] = s0[e]; partial[(base + 1u) * groups + sg] = s1[e];
          partial[(base + 2u) * groups + sg] = s2[e]; partial[(base + 3u) * groups + sg] = s3[e];
          partial[(base + 4u) * groups + sg] = s4[e]; partial[(base + 5u) * groups + sg] = s5[e];
          partial[(base + 6u) * groups + sg] = s6[e]; partial[(base + 7u) * groups + sg] = s7[e];
        }
      }
    }
    w0 = v0; w1 = v1; w2 = v2; w3 = v3;
  }
  workgroupBarrier();
  for (var t = inv.lid; t < ROWS * MB; t += WG) {
    let row = t / MB;
    let mi = t % MB;
    let n = n0 + row;
    let m = m0 + mi;
    if (n < params.n && m < params.m) {
      var total = 0.0;
      for (var i = 0u; i < groups; i++) { total += partial[(row * 8u + mi) * groups + i]; }
      if (HAS_BIAS) { total += bias[params.out_offset + n]; }
      out[m * params.out_stride + params.out_offset + n] = total;
    }
  }
}
