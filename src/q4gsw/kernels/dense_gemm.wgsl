// dense_linear/gemm: out[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for large M, with fp32 or
// fp16 weights (wload() comes from dense_weight_f32.wgsl / dense_weight_f16.wgsl): the tile
// design of linear_q4gsw/tiled.wgsl with the weight tile loaded from the dense weight instead of
// dequantized from nibbles. A workgroup of 256 invocations computes a 128 (rows of x) x 128
// (output features) tile. Per step of 32 k:
//   x tile:      128 x 32 floats, stored k-major (As[kk][m], m in vec4) in workgroup memory;
//   weight tile: 128 rows x 32 k, stored k-major (Bs[kk][n], n in vec4), loaded exactly as
//                the x tile (four rows at one k-vec4 per invocation, transposed).
// Each invocation accumulates an 8 x 8 register tile: rows {4ty..4ty+3, 64+4ty..64+4ty+3},
// features {4tx..4tx+3, 64+4tx..64+4tx+3}, in 16 named vec4 (no arrays: local memory is
// slow on this stack), reading 4 vec4 from workgroup memory per 64 FMAs; the next step's
// global loads are issued before this step's FMAs, as in tiled.wgsl.
// Edges: rows of x past M and features past N are clamped on load and not written; with
// K_TAIL (set when K % 32 != 0), k past K loads zeros (the test costs 2-4% on the H100, so
// it is compiled out otherwise, as tiled.wgsl has none). Loop trips per invocation:
// ceil(K/32) steps x 32. Needs K % 4 == 0 (x is read as vec4).
//
// Bindings (group 0): 0 out (read_write f32, row stride params.out_stride), 1 x (vec4<f32>, M x K),
//                     2 w (see the weight file), 3 bias (f32, N; a placeholder without HAS_BIAS),
//                     4 params (uniform Params)
// Overrides: HAS_BIAS, K_TAIL (K % 32 != 0).

override HAS_BIAS: bool = false;
override K_TAIL: bool = true;
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 32u;

struct Params {
  m: u32, n: u32, k: u32, row: u32,            // row: vec4 per weight row, ceil(K / 4) = K / 4 here
  out_stride: u32, out_offset: u32, n_tiles: u32, tiles: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> As: array<vec4<f32>, 1024>;  // [BK][BM / 4]
var<workgroup> Bs: array<vec4<f32>, 1024>;  // [BK][BN / 4]

fn store1(o: u32, col: u32, v: f32) {
  if (col >= params.n) { return; }
  var r = v;
  if (HAS_BIAS) { r += bias[params.out_offset + col]; }
  out[o + col] = r;
}

fn store4(row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  let o = row * params.out_stride + params.out_offset;
  store1(o, col, v.x);
  store1(o, col + 1u, v.y);
  store1(o, col + 2u, v.z);
  store1(o, col + 3u, v.w);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= params.tiles) { return; }
  let n0 = (tile % params.n_tiles) * BN;
  let m0 = (tile / params.n_tiles) * BM;
  let ty = lid / 16u;
  let tx = lid % 16u;
  // loaders: x rows 4q..4q+3 and weight rows 4q..4q+3, both at k-vec4 kv of the step
  let q = lid % 32u;
  let kv = lid / 32u;
  let row = params.k / 4u;  // vec4 per row of x
  let wrow = params.row;    // vec4 per row of w
  let last_m = params.m - 1u;
  let xa = min(m0 + 4u * q, last_m) * row + kv;
  let xb = min(m0 + 4u * q + 1u, last_m) * row + kv;
  let xc = min(m0 + 4u * q + 2u, last_m) * row + kv;
  let xd = min(m0 + 4u * q + 3u, last_m) * row + kv;
  let last_n = params.n - 1u;
  let wa = min(n0 + 4u * q, last_n) * wrow + kv;
  let wb = min(n0 + 4u * q + 1u, last_n) * wrow + kv;
  let wc = min(n0 + 4u * q + 2u, last_n) * wrow + kv;
  let wd = min(n0 + 4u * q + 3u, last_n) * wrow + kv;

  var acc00 = vec4<f32>(0.0); var acc01 = acc00; var acc10 = acc00; var acc11 = acc00;
  var acc20 = acc00; var acc21 = acc00; var acc30 = acc00; var acc31 = acc00;
  var acc40 = acc00; var acc41 = acc00; var acc50 = acc00; var acc51 = acc00;
  var acc60 = acc00; var acc61 = acc00; var acc70 = acc00; var acc71 = acc00;

  // global loads one step ahead, as tiled.wgsl (held in registers during the FMAs)
  var ra = vec4<f32>(0.0); var rb = ra; var rc = ra; var rd = ra;
  var qa = ra; var qb = ra; var qc = ra; var qd = ra;
  if (!K_TAIL || kv < row) {
    ra = x[xa]; rb = x[xb]; rc = x[xc]; rd = x[xd];
    qa = wload(wa); qb = wload(wb); qc = wload(wc); qd = wload(wd);
  }
  for (var k0 = 0u; k0 < params.k; k0 += BK) {
    // x tile: four rows at one k-vec4, transposed to k-major vec4 over m.
    As[(4u * kv) * 32u + q] = vec4<f32>(ra.x, rb.x, rc.x, rd.x);
    As[(4u * kv + 1u) * 32u + q] = vec4<f32>(ra.y, rb.y, rc.y, rd.y);
    As[(4u * kv + 2u) * 32u + q] = vec4<f32>(ra.z, rb.z, rc.z, rd.z);
    As[(4u * kv + 3u) * 32u + q] = vec4<f32>(ra.w, rb.w, rc.w, rd.w);
    // weight tile: four rows at one k-vec4, transposed to k-major vec4 over n.
    Bs[(4u * kv) * 32u + q] = vec4<f32>(qa.x, qb.x, qc.x, qd.x);
    Bs[(4u * kv + 1u) * 32u + q] = vec4<f32>(qa.y, qb.y, qc.y, qd.y);
    Bs[(4u * kv + 2u) * 32u + q] = vec4<f32>(qa.z, qb.z, qc.z, qd.z);
    Bs[(4u * kv + 3u) * 32u + q] = vec4<f32>(qa.w, qb.w, qc.w, qd.w);
    workgroupBarrier();

    let k4 = (k0 + BK) / 4u;
    ra = vec4<f32>(0.0); rb = ra; rc = ra; rd = ra;
    qa = ra; qb = ra; qc = ra; qd = ra;
    if (k0 + BK < params.k && (!K_TAIL || k4 + kv < row)) {
      ra = x[xa + k4]; rb = x[xb + k4]; rc = x[xc + k4]; rd = x[xd + k4];
      qa = wload(wa + k4); qb = wload(wb + k4); qc = wload(wc + k4); qd = wload(wd + k4);
    }

    for (var kk = 0u; kk < BK; kk++) {
      let a0 = As[kk * 32u + ty];
      let a1 = As[kk * 32u + 16u + ty];
      let b0 = Bs[kk * 32u + tx];
      let b1 = Bs[kk * 32u + 16u + tx];
      acc00 = fma(vec4<f32>(a0.x), b0, acc00); acc01 = fma(vec4<f32>(a0.x), b1, acc01);
      acc10 = fma(vec4<f32>(a0.y), b0, acc10); acc11 = fma(vec4<f32>(a0.y), b1, acc11);
      acc20 = fma(vec4<f32>(a0.z), b0, acc20); acc21 = fma(vec4<f32>(a0.z), b1, acc21);
      acc30 = fma(vec4<f32>(a0.w), b0, acc30); acc31 = fma(vec4<f32>(a0.w), b1, acc31);
      acc40 = fma(vec4<f32>(a1.x), b0, acc40); acc41 = fma(vec4<f32>(a1.x), b1, acc41);
      acc50 = fma(vec4<f32>(a1.y), b0, acc50); acc51 = fma(vec4<f32>(a1.y), b1, acc51);
      acc60 = fma(vec4<f32>(a1.z), b0, acc60); acc61 = fma(vec4<f32>(a1.z), b1, acc61);
      acc70 = fma(vec4<f32>(a1.w), b0, acc70); acc71 = fma(vec4<f32>(a1.w), b1, acc71);
    }
    workgroupBarrier();
  }

  let r0 = m0 + 4u * ty;
  let r1 = m0 + 64u + 4u * ty;
  let c0 = n0 + 4u * tx;
  let c1 = n0 + 64u + 4u * tx;
  store4(r0, c0, acc00); store4(r0, c1, acc01);
  store4(r0 + 1u, c0, acc10); store4(r0 + 1u, c1, acc11);
  store4(r0 + 2u, c0, acc20); store4(r0 + 2u, c1, acc21);
  store4(r0 + 3u, c0, acc30); store4(r0 + 3u, c1, acc31);
  store4(r1, c0, acc40); store4(r1, c1, acc41);
  store4(r1 + 1u, c0, acc50); store4(r1 + 1u, c1, acc51);
  store4(r1 + 2u, c0, acc60); store4(r1 + 2u, c1, acc61);
  store4(r1 + 3u, c0, acc70); store4(r1 + 3u, c1, acc71);
}
