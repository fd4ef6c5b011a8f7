// Row reduction for decode.wgsl through workgroup memory only (any adapter).
// Composed after decode.wgsl; supplies the same entry inputs and functions as
// reduce_subgroup.wgsl:
//   clear_partials(inv):        first, before any store_partials.
//   store_partials(p, r, inv): adds p[i], this invocation's share of row r + i (i < 4),
//                               into slots only this invocation touches.
//   reduce_partials(inv):       between the two barriers: TPR = WG / FEATURES invocations per
//                               row each add WG / TPR shares into partial2.
//   row_total(row, inv) -> f32: after them, the workgroup's sum for `row`.

struct Invocation {
  @builtin(local_invocation_index) lid: u32,
}

var<workgroup> partial: array<f32, FEATURES * WG>;   // [FEATURES][WG]
var<workgroup> partial2: array<f32, WG>;        // [FEATURES][TPR]

fn clear_partials(inv: Invocation) {
  for (var r = 0u; r < FEATURES; r++) { partial[r * WG + inv.lid] = 0.0; }
}

fn store_partials(p: vec4<f32>, r: u32, inv: Invocation) {
  partial[r * WG + inv.lid] += p.x;
  partial[(r + 1u) * WG + inv.lid] += p.y;
  partial[(r + 2u) * WG + inv.lid] += p.z;
  partial[(r + 3u) * WG + inv.lid] += p.w;
}

fn reduce_partials(inv: Invocation) {
  let TPR = WG / FEATURES;  // (an override initialized from overrides crashes naga 29)
  if (inv.lid < FEATURES * TPR) {
    let row = inv.lid / TPR;
    var s = 0.0;
    for (var i = inv.lid % TPR; i < WG; i += TPR) { s += partial[row * WG + i]; }
    partial2[inv.lid] = s;
  }
}

fn row_total(row: u32, inv: Invocation) -> f32 {
  let TPR = WG / FEATURES;
  var s = 0.0;
  for (var j = 0u; j < TPR; j++) { s += partial2[row * TPR + j]; }
  return s;
}
