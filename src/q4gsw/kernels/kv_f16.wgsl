enable f16;
// The KV cache's element type, float16 (kv_cache="f16"; needs the device feature shader-f16):
// joined first, before rope_kv.wgsl or attention.wgsl (KernelKey.files), because WGSL wants
// `enable f16;` before every declaration. to_kv rounds a value to f16 as it is written, clamped
// to the largest finite half (65504) so that a K or V beyond f16's range stays finite; the
// kernels widen what they read to f32 (all arithmetic stays f32). kv_f32.wgsl is the default.

alias KvScalar = f16;

const KV_MAX: f32 = 65504.0;

fn to_kv(x: f32) -> KvScalar { return KvScalar(clamp(x, -KV_MAX, KV_MAX)); }
