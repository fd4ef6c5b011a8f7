// Experiment (bench/explore_f16.py), opt-in f16 ACCUMULATION: tiled_f16smem.wgsl (x and
// dequantized weight tiles as f16 in workgroup memory, BK = 32 or 64 k per step) with the
// products summed by packed f16 FMAs (vec4<f16> fma: two HFMA2 on NVIDIA) into 16 named
// vec4<f16> accumulators for FLUSH k, then added into the 16 f32 accumulators (vec4<f32>
// conversion + add) and reset. Rounding: x, the weights, every product-sum over FLUSH k in
// f16; the sum over K in f32.
// Needs K % BK == 0, group_size % BK == 0, BK % FLUSH == 0.
//
// Bindings (group 0): 0 out, 1 x (vec4<XTYPE>), 2 weights (u32), 3 scales, 4 bias,
//                     5 params: as tiled.wgsl.
// Overrides: HAS_BIAS, BK (32 or 64), FLUSH (k per f16 run: 4, 8, 16, ... up to BK).
// Template: {{XTYPE}} (f32 or f16), x's element type.
enable f16;

override HAS_BIAS: bool = false;
override BK: u32 = 64u;
override FLUSH: u32 = 16u;
const BM: u32 = 128u;
const BN: u32 = 128u;

struct Params {
  m: u32, n: u32, k: u32, row_bytes: u32,
  group_size: u32, num_groups: u32, scale_stride: u32, out_stride: u32,
  out_offset: u32, n_tiles: u32, tiles: u32, pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<{{XTYPE}}>>;
@group(0) @binding(2) var<storage, read> weights: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> As: array<vec4<f16>, 2048>;  // [BK][BM / 4], BK <= 64
var<workgroup> Bs: array<vec4<f16>, 2048>;  // [BK][BN / 4]

// (u - 8) for nibbles 4h .. 4h+3 of word w, exactly (2^23 + u - (2^23 + 8)).
fn nibbles(w: u32, h: u32) -> vec4<f32> {
  let s = 16u * h;
  let u = (vec4<u32>(w >> s, w >> (s + 4u), w >> (s + 8u), w >> (s + 12u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
  return bitcast<vec4<f32>>(u) - vec4<f32>(8388616.0);
}

fn store4(row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  let o = row * params.out_stride + params.out_offset;
  var r = v;
  if (HAS_BIAS) {
    let last = params.n - 1u;
    r += vec4<f32>(bias[params.out_offset + min(col, last)], bias[params.out_offset + min(col + 1u, last)],
                   bias[params.out_offset + min(col + 2u, last)], bias[params.out_offset + min(col + 3u, last)]);
  }
  if (col < params.n) { out[o + col] = r.x; }
  if (col + 1u < params.n) { out[o + col + 1u] = r.y; }
  if (col + 2u < params.n) { out[o + col + 2u] = r.z; }
  if (col + 3u < params.n) { out[o + col + 3u] = r.w; }
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
  // loaders: x rows 4q..4q+3 at k-vec4 kv (+ 8j); weight rows 4q..4q+3, nibbles 4h..4h+3
  // of word wd (+ 4j)
  let q = lid % 32u;
  let kv = lid / 32u;
  let wd = kv / 2u;
  let h = kv % 2u;
  let xrow = params.k / 4u;
  let last_m = params.m - 1u;
  let xa = min(m0 + 4u * q, last_m) * xrow + kv;
  let xb = min(m0 + 4u * q + 1u, last_m) * xrow + kv;
  let xc = min(m0 + 4u * q + 2u, last_m) * xrow + kv;
  let xd = min(m0 + 4u * q + 3u, last_m) * xrow + kv;
  let last_n = params.n - 1u;
  let na = min(n0 + 4u * q, last_n);
  let nb = min(n0 + 4u * q + 1u, last_n);
  let nc = min(n0 + 4u * q + 2u, last_n);
  let nd = min(n0 + 4u * q + 3u, last_n);
  let words = params.k / 8u;  // u32 per weight row

  var acc00 = vec4<f32>(0.0); var acc01 = acc00; var acc10 = acc00; var acc11 = acc00;
  var acc20 = acc00; var acc21 = acc00; var acc30 = acc00; var acc31 = acc00;
  var acc40 = acc00; var acc41 = acc00; var acc50 = acc00; var acc51 = acc00;
  var acc60 = acc00; var acc61 = acc00; var acc70 = acc00; var acc71 = acc00;
  let hz = vec4<f16>(0.0h);
  var h00 = hz; var h01 = hz; var h10 = hz; var h11 = hz; var h20 = hz; var h21 = hz; var h30 = hz; var h31 = hz;
  var h40 = hz; var h41 = hz; var h50 = hz; var h51 = hz; var h60 = hz; var h61 = hz; var h70 = hz; var h71 = hz;

  var g = 0u;
  var group_end = params.group_size;
  for (var k0 = 0u; k0 < params.k; k0 += BK) {
    if (k0 >= group_end) { g += 1u; group_end += params.group_size; }
    let s = vec4<f32>(scales[g * params.scale_stride + na], scales[g * params.scale_stride + nb],
                      scales[g * params.scale_stride + nc], scales[g * params.scale_stride + nd]);
    for (var j = 0u; j < BK / 32u; j++) {
      // x tile: four rows at one k-vec4, transposed to k-major vec4 over m.
      let k4 = k0 / 4u + 8u * j;
      let ra = vec4<f16>(x[xa + k4]); let rb = vec4<f16>(x[xb + k4]);
      let rc = vec4<f16>(x[xc + k4]); let rd = vec4<f16>(x[xd + k4]);
      let ka = 4u * kv + 32u * j;  // k of this loader's first column within the step
      As[ka * 32u + q] = vec4<f16>(ra.x, rb.x, rc.x, rd.x);
      As[(ka + 1u) * 32u + q] = vec4<f16>(ra.y, rb.y, rc.y, rd.y);
      As[(ka + 2u) * 32u + q] = vec4<f16>(ra.z, rb.z, rc.z, rd.z);
      As[(ka + 3u) * 32u + q] = vec4<f16>(ra.w, rb.w, rc.w, rd.w);
      // weight tile: four rows x four nibbles, dequantized in f32, rounded once to f16.
      let w = k0 / 8u + wd + 4u * j;
      let qa = vec4<f16>(nibbles(weights[na * words + w], h) * s.x);
      let qb = vec4<f16>(nibbles(weights[nb * words + w], h) * s.y);
      let qc = vec4<f16>(nibbles(weights[nc * words + w], h) * s.z);
      let qd = vec4<f16>(nibbles(weights[nd * words + w], h) * s.w);
      Bs[ka * 32u + q] = vec4<f16>(qa.x, qb.x, qc.x, qd.x);
      Bs[(ka + 1u) * 32u + q] = vec4<f16>(qa.y, qb.y, qc.y, qd.y);
      Bs[(ka + 2u) * 32u + q] = vec4<f16>(qa.z, qb.z, qc.z, qd.z);
      Bs[(ka + 3u) * 32u + q] = vec4<f16>(qa.w, qb.w, qc.w, qd.w);
    }
    workgroupBarrier();

    for (var c = 0u; c < BK; c += FLUSH) {
      for (var i = 0u; i < FLUSH; i++) {
        let kk2 = c + i;
        let a0 = As[kk2 * 32u + ty];
        let a1 = As[kk2 * 32u + 16u + ty];
        let b0 = Bs[kk2 * 32u + tx];
        let b1 = Bs[kk2 * 32u + 16u + tx];
        h00 = fma(vec4<f16>(a0.x), b0, h00); h01 = fma(vec4<f16>(a0.x), b1, h01);
        h10 = fma(vec4<f16>(a0.y), b0, h10); h11 = fma(vec4<f16>(a0.y), b1, h11);
        h20 = fma(vec4<f16>(a0.z), b0, h20); h21 = fma(vec4<f16>(a0.z), b1, h21);
        h30 = fma(vec4<f16>(a0.w), b0, h30); h31 = fma(vec4<f16>(a0.w), b1, h31);
        h40 = fma(vec4<f16>(a1.x), b0, h40); h41 = fma(vec4<f16>(a1.x), b1, h41);
        h50 = fma(vec4<f16>(a1.y), b0, h50); h51 = fma(vec4<f16>(a1.y), b1, h51);
        h60 = fma(vec4<f16>(a1.z), b0, h60); h61 = fma(vec4<f16>(a1.z), b1, h61);
        h70 = fma(vec4<f16>(a1.w), b0, h70); h71 = fma(vec4<f16>(a1.w), b1, h71);
      }
      // flush the f16 run into f32
      acc00 += vec4<f32>(h00); acc01 += vec4<f32>(h01); acc10 += vec4<f32>(h10); acc11 += vec4<f32>(h11);
      acc20 += vec4<f32>(h20); acc21 += vec4<f32>(h21); acc30 += vec4<f32>(h30); acc31 += vec4<f32>(h31);
      acc40 += vec4<f32>(h40); acc41 += vec4<f32>(h41); acc50 += vec4<f32>(h50); acc51 += vec4<f32>(h51);
      acc60 += vec4<f32>(h60); acc61 += vec4<f32>(h61); acc70 += vec4<f32>(h70); acc71 += vec4<f32>(h71);
      h00 = hz; h01 = hz; h10 = hz; h11 = hz; h20 = hz; h21 = hz; h30 = hz; h31 = hz;
      h40 = hz; h41 = hz; h50 = hz; h51 = hz; h60 = hz; h61 = hz; h70 = hz; h71 = hz;
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
