// store4 for the tiled GEMMs (tiled.wgsl, tiled_int8.wgsl, bcast_int8.wgsl), composed after the
// entry file, which declares out, bias, params, HAS_BIAS and SPLIT: row `row`, features col ..
// col + 3 of v into out (slice `split` with SPLIT > 1, where reduce_splits adds the bias later;
// else with the bias), rows past M and features past N not written.

fn store4(split: u32, row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  let o = row * params.out_stride + params.out_offset + split * params.split_stride;
  var r = v;
  if (HAS_BIAS && SPLIT == 1u) {  // with a split, reduce_splits adds the bias
    let last = params.n - 1u;
    r += vec4<f32>(bias[params.out_offset + min(col, last)], bias[params.out_offset + min(col + 1u, last)],
                   bias[params.out_offset + min(col + 2u, last)], bias[params.out_offset + min(col + 3u, last)]);
  }
  if (col < params.n) { out[o + col] = r.x; }
  if (col + 1u < params.n) { out[o + col + 1u] = r.y; }
  if (col + 2u < params.n) { out[o + col + 2u] = r.z; }
  if (col + 3u < params.n) { out[o + col + 3u] = r.w; }
}
