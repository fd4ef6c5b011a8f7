// The nibble unpack of decode.wgsl and decode_batch.wgsl, composed after the entry file
// (which declares `override UNPACK_IMAD: bool`).
//
// lo4(w), hi4(w): 1 + u/16 for nibbles 0..3 and 4..7 of the u32 w, exactly: each nibble u
// lands in the top four mantissa bits of 1.0f. Two instruction sequences give the same bits:
//   UNPACK_IMAD = false: shift the nibble to bits 19..22, then and-or 1.0f (two integer ops);
//   UNPACK_IMAD = true:  and the nibble in place, then multiply-add: * 2^(19 - 4j) + 1.0f's
//     bits (no carries: the bits do not overlap). The multiply-add can issue on the FMA
//     pipe, so a long grid leans less on the integer pipe (docs/kernels-decode.md).

const MANTISSA_TOP4: u32 = 0x00780000u;
const ONE: u32 = 0x3F800000u;
const NIBBLES_IN_PLACE = vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u);
const TO_MANTISSA_TOP4 = vec4<u32>(1u << 19u, 1u << 15u, 1u << 11u, 1u << 7u);

fn lo4(w: u32) -> vec4<f32> {
  if (UNPACK_IMAD) {
    return bitcast<vec4<f32>>((vec4<u32>(w) & NIBBLES_IN_PLACE) * TO_MANTISSA_TOP4 + vec4<u32>(ONE));
  }
  return bitcast<vec4<f32>>((vec4<u32>(w << 19u, w << 15u, w << 11u, w << 7u) & vec4<u32>(MANTISSA_TOP4)) | vec4<u32>(ONE));
}

fn hi4(w: u32) -> vec4<f32> {
  if (UNPACK_IMAD) {
    return bitcast<vec4<f32>>((vec4<u32>(w >> 16u) & NIBBLES_IN_PLACE) * TO_MANTISSA_TOP4 + vec4<u32>(ONE));
  }
  return bitcast<vec4<f32>>((vec4<u32>(w << 3u, w >> 1u, w >> 5u, w >> 9u) & vec4<u32>(MANTISSA_TOP4)) | vec4<u32>(ONE));
}
