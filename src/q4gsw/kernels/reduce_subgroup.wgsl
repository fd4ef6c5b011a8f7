// Row reduction for decode.wgsl through subgroup operations (needs the `subgroup` feature).
// Composed after decode.wgsl (the op concatenates the two files): it supplies the entry
// point's inputs and the three functions the body calls.
//   clear_partials(inv):        first, before any store_partials.
//   store_partials(p, r, inv): adds p[i], this invocation's share of row r + i (i < 4).
//   reduce_partials(inv):       between the two barriers (nothing to do here).
//   row_total(row, inv) -> f32: after them, the workgroup's sum for `row`.
// Each subgroup adds its invocations' shares by shuffles that leave each lane one row after two
// levels (a transposed reduction), and one invocation per row adds the row's value into the
// subgroup's own slot (no other invocation touches it, so
// no barrier is needed before the final one); a row's total is the sum over subgroups.

struct Invocation {
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
}

// [FEATURES][subgroups]; a subgroup has at least 4 invocations.
var<workgroup> partial: array<f32, FEATURES * WG / 4u>;

fn clear_partials(inv: Invocation) {
  if (inv.lane == 0u) {
    let groups = (WG + inv.lanes - 1u) / inv.lanes;
    for (var r = 0u; r < FEATURES; r++) { partial[r * groups + inv.lid / inv.lanes] = 0.0; }
  }
}

fn store_partials(p: vec4<f32>, r: u32, inv: Invocation) {
  // Transposed: the first two exchange levels halve the values a lane carries (vec4 -> vec2 ->
  // one), so the four rows cost 2 + 1 + log2(lanes / 4) shuffles where subgroupAdd(vec4) takes
  // 4 log2(lanes). Then lane q * lanes / 4 (q < 4) holds row r + q's sum over the subgroup.
  let groups = (WG + inv.lanes - 1u) / inv.lanes;
  let sg = inv.lid / inv.lanes;
  let half = inv.lanes / 2u;
  let quarter = inv.lanes / 4u;
  let upper = (inv.lane & half) != 0u;   // keeps rows 2, 3 (else 0, 1)
  let pair = select(p.xy, p.zw, upper) + subgroupShuffleXor(select(p.zw, p.xy, upper), half);
  let odd = (inv.lane & quarter) != 0u;  // keeps the second of its pair
  var s = select(pair.x, pair.y, odd) + subgroupShuffleXor(select(pair.y, pair.x, odd), quarter);
  for (var d = quarter / 2u; d > 0u; d >>= 1u) { s += subgroupShuffleXor(s, d); }
  if ((inv.lane & (quarter - 1u)) == 0u) {
    partial[(r + select(0u, 2u, upper) + select(0u, 1u, odd)) * groups + sg] += s;
  }
}

fn reduce_partials(inv: Invocation) {}

fn row_total(row: u32, inv: Invocation) -> f32 {
  let groups = (WG + inv.lanes - 1u) / inv.lanes;
  var s = 0.0;
  for (var i = 0u; i < groups; i++) { s += partial[row * groups + i]; }
  return s;
}
