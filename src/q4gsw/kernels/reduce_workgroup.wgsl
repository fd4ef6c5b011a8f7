// Row reduction for decode.wgsl through workgroup memory only (any adapter).
// Composed after decode.wgsl; supplies the same entry inputs and functions as
// reduce_subgroup.wgsl:
//   store_partials(p, r, inv): p[i] is this invocation's share of row r + i (i < 4).
//   reduce_partials(inv):       between the two barriers: TPR = WG / RPW invocations per
//                               row each add WG / TPR shares into partial2.
//   row_total(row, inv) -> f32: after them, the workgroup's sum for `row`.

struct Invocation {
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
}

var<workgroup> partial: array<f32, RPW * WG>;   // [RPW][WG]
var<workgroup> partial2: array<f32, WG>;        // [RPW][TPR]

fn store_partials(p: vec4<f32>, r: u32, inv: Invocation) {
  partial[r * WG + inv.lid] = p.x;
  partial[(r + 1u) * WG + inv.lid] = p.y;
  partial[(r + 2u) * WG + inv.lid] = p.z;
  partial[(r + 3u) * WG + inv.lid] = p.w;
}

fn reduce_partials(inv: Invocation) {
  let TPR = WG / RPW;  // (an override initialized from overrides crashes naga 29)
  if (inv.lid < RPW * TPR) {
    let row = inv.lid / TPR;
    var s = 0.0;
    for (var i = inv.lid % TPR; i < WG; i += TPR) { s += partial[row * WG + i]; }
    partial2[inv.lid] = s;
  }
}

fn row_total(row: u32, inv: Invocation) -> f32 {
  let TPR = WG / RPW;
  var s = 0.0;
  for (var j = 0u; j < TPR; j++) { s += partial2[row * TPR + j]; }
  return s;
}
