// Row reduction for decode.wgsl through subgroup operations (needs the `subgroup` feature).
// Composed after decode.wgsl (the op concatenates the two files): it supplies the entry
// point's inputs and the three functions the body calls.
//   clear_partials(inv):        first, before any store_partials.
//   store_partials(p, r, inv): adds p[i], this invocation's share of row r + i (i < 4).
//   reduce_partials(inv):       between the two barriers (nothing to do here).
//   row_total(row, inv) -> f32: after them, the workgroup's sum for `row`.
// Each subgroup adds its invocations' shares with subgroupAdd, and its first invocation
// adds one value per row into the subgroup's own slot (no other invocation touches it, so
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
  let s = subgroupAdd(p);
  if (inv.lane == 0u) {
    let groups = (WG + inv.lanes - 1u) / inv.lanes;
    let sg = inv.lid / inv.lanes;
    partial[r * groups + sg] += s.x;
    partial[(r + 1u) * groups + sg] += s.y;
    partial[(r + 2u) * groups + sg] += s.z;
    partial[(r + 3u) * groups + sg] += s.w;
  }
}

fn reduce_partials(inv: Invocation) {}

fn row_total(row: u32, inv: Invocation) -> f32 {
  let groups = (WG + inv.lanes - 1u) / inv.lanes;
  var s = 0.0;
  for (var i = 0u; i < groups; i++) { s += partial[row * groups + i]; }
  return s;
}
