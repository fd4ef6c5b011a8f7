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

// s plus lane (lane ^ mask)'s s where that lane is in the subgroup (mask < lanes). The shuffle runs
// in uniform control flow with a constant mask whatever the subgroup size (Tint's uniformity
// analysis sees inv.lanes as non-uniform: Invocation also holds per-invocation values).
fn add_lane(s: f32, mask: u32, lanes: u32) -> f32 {
  return s + select(0.0, subgroupShuffleXor(s, mask), mask < lanes);
}

fn store_partials(p: vec4<f32>, r: u32, inv: Invocation) {
  // Transposed: two exchange levels (masks 2, then 1) halve the values a lane carries (vec4 ->
  // vec2 -> one), so that lane L holds row r + (L & 3); the higher lane bits are then added one
  // shuffle each: 3 + 5 shuffles where subgroupAdd of the vec4 takes 4 log2(lanes).
  let upper = (inv.lane & 2u) != 0u;  // keeps rows 2, 3 (else 0, 1)
  let pair = select(p.xy, p.zw, upper) + subgroupShuffleXor(select(p.zw, p.xy, upper), 2u);
  let odd = (inv.lane & 1u) != 0u;    // keeps the second of its pair
  var s = select(pair.x, pair.y, odd) + subgroupShuffleXor(select(pair.y, pair.x, odd), 1u);
  s = add_lane(add_lane(add_lane(add_lane(add_lane(s, 4u, inv.lanes), 8u, inv.lanes), 16u, inv.lanes),
                        32u, inv.lanes), 64u, inv.lanes);
  if (inv.lane < 4u) {
    let groups = (WG + inv.lanes - 1u) / inv.lanes;
    partial[(r + inv.lane) * groups + inv.lid / inv.lanes] += s;
  }
}

fn reduce_partials(inv: Invocation) {}

fn row_total(row: u32, inv: Invocation) -> f32 {
  let groups = (WG + inv.lanes - 1u) / inv.lanes;
  var s = 0.0;
  for (var i = 0u; i < groups; i++) { s += partial[row * groups + i]; }
  return s;
}
