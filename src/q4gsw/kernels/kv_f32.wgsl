// The KV cache's element type, float32 (the default): joined before rope_kv.wgsl and
// attention.wgsl (KernelKey.files), which store the cache as KvScalar, write it through
// to_kv and widen what they read to f32. kv_f16.wgsl is the half-precision twin.

alias KvScalar = f32;

fn to_kv(x: f32) -> KvScalar { return x; }
