"""The cost model: each routed kernel's predicted time for a Problem (seconds).

Constants are fitted to the H100 runs bench/results/2026-11-25-h100-s2b-llama.md (tiled,
tiled_split, the fixed cost) and 2026-11-25-h100-s3-llama.md (decode, decode_batch). Decode
time grows with M * N * K; tiled time with the waves of tiles (one resident workgroup per
SM, 132 SMs) times the k each tile covers; split-K adds a pass over the partial sums. Every
kernel also pays SECONDS_FIXED (a pass's launch and a short grid's ramp, fitted on the decode
runs at M=1 4096^2 and the LM head alike), so that term never decides between kernels.
"""

from __future__ import annotations

from ..arith import ceil_div
from .problem import Problem

SECONDS_FIXED = 1.0e-5
DECODE_SECONDS_PER_MAC = 2.5e-13
TILED_SECONDS_PER_K_PER_WAVE = 1.53e-7  # 128-row tiles (4.9 µs a step of 32 k)
TILED64_SECONDS_PER_K_PER_WAVE = 1.35e-7  # 64-row tiles: half the FMAs, the same latency-bound steps
TILED_TILES_PER_WAVE = 132  # one resident workgroup per SM (measured: 2 x 132 workgroups take 2 waves)
SPLIT_SECONDS_PER_PARTIAL = 5.0e-12  # the reduction: write + read of one partial float
SPLIT_SECONDS_FIXED = 3.0e-6  # the second dispatch
#: decode_batch, per block of 2, 4 or 8 rows of x, per weight element
BATCH_SECONDS_PER_BLOCK_MAC = {2: 0.45e-12, 4: 0.7e-12, 8: 1.0e-12}
#: A decode grid of at least this many blocks of 16 output features (the LM head: 8016) is
#: throughput-bound: decode runs 32 features a workgroup and the multiply-add unpack there.
LONG_GRID_FEATURE_BLOCKS = 2048


def long_grid(p: Problem) -> bool:
    """At least LONG_GRID_FEATURE_BLOCKS blocks of 16 output features: many waves of
    workgroups, so a decode kernel is throughput-bound (the LM head). Measured on the H100
    (docs/kernels-decode.md, session 3): the multiply-add unpack 12-14 % and 32 features a
    workgroup 3-4 % faster there; on the mid shapes both were slower."""
    return ceil_div(p.n, 16) >= LONG_GRID_FEATURE_BLOCKS


def decode_seconds(p: Problem) -> float:
    return SECONDS_FIXED + DECODE_SECONDS_PER_MAC * p.m * p.n * p.k


#: decode with two rows of x a workgroup (decode_x2_subgroup), per block of 2 rows per weight
#: element, fitted to the H200 probe of session 6 (bench/results/2026-11-29-h200-s6-decode-x2-probe.md):
#: 3.0-3.4e-13 past the fixed cost at M = 2 / 4 / 8 on the 31 MB shapes and the LM head.
X2_SECONDS_PER_BLOCK_MAC = 3.2e-13


def decode_x2_seconds(p: Problem) -> float:
    return SECONDS_FIXED + X2_SECONDS_PER_BLOCK_MAC * ceil_div(p.m, 2) * p.n * p.k


#: decode_narrow (8 rows a workgroup, one trip to memory an invocation) against decode on the
#: H200 (bench/results/2026-11-29-h200-s5-decode-probe.md): 0.90x on the 8-9 MB M = 1 shapes
#: (N * K = 2^24: 4096 warps, one wave), 1.07-1.42x on 31 MB and 1.31x on the LM head.
NARROW_MAX_WEIGHTS = 1 << 24
NARROW_SPEEDUP, NARROW_SLOWDOWN = 0.9, 1.3


#: bcast_int8_k64 against tiled_int8 on the H200 (bench/results/2026-11-29-h200-s5-prefill-bcast.md):
#: 0.74-0.82 of its time at M = 128 and 512 on the three Llama shapes.
BCAST_INT8_OVER_TILED_INT8 = 0.8


def narrow_seconds(p: Problem, on_cpu: bool) -> float:
    """decode_narrow's time: decode's, scaled by NARROW_SPEEDUP where it was measured faster
    (M = 1, N * K <= NARROW_MAX_WEIGHTS, a GPU), else by NARROW_SLOWDOWN (so it is chosen only
    where decode cannot run, e.g. K a multiple of 16 but not 32)."""
    faster = p.m == 1 and p.n * p.k <= NARROW_MAX_WEIGHTS and not on_cpu
    return decode_seconds(p) * (NARROW_SPEEDUP if faster else NARROW_SLOWDOWN)


def decode_batch_seconds(p: Problem, x_rows_per_block: int, split: int) -> float:
    blocks = ceil_div(p.m, x_rows_per_block)
    seconds = SECONDS_FIXED + BATCH_SECONDS_PER_BLOCK_MAC[x_rows_per_block] * blocks * p.n * p.k
    return seconds + split_seconds(p, split)


def tiled_seconds(p: Problem, tile_m: int = 128, split: int = 1) -> float:
    tiles = ceil_div(p.m, tile_m) * ceil_div(p.n, 128) * split
    per_k = TILED_SECONDS_PER_K_PER_WAVE if tile_m == 128 else TILED64_SECONDS_PER_K_PER_WAVE
    steps = ceil_div(p.k // 32, split)
    return SECONDS_FIXED + per_k * 32 * steps * ceil_div(tiles, TILED_TILES_PER_WAVE) + split_seconds(p, split)


def split_seconds(p: Problem, split: int) -> float:
    """The reduce_splits pass that a split-K run adds (0 without a split)."""
    if split <= 1:
        return 0.0
    return SPLIT_SECONDS_FIXED + SPLIT_SECONDS_PER_PARTIAL * split * p.m * p.n


# --- the int8-activation path (kernels/int8.py): predicted, not yet fitted -----------------------
#: tiled_int8, 128-row tiles: seconds per k per wave. A 128 x 128 tile takes 128 * 128 / 4
#: dot4I8Packed per k, 128 warp-instructions; the H200's dp4a pipe retires 2 a clock per SM (64
#: lanes; 56 measured in a pure loop, docs/kernels-prefill.md): 64 clocks per k at 1.98 GHz, taken
#: at 60 % of that rate until the H200 measures it.
INT8_SECONDS_PER_K_PER_WAVE = 64 / 1.98e9 / 0.6
#: 64-row tiles: half the products, the same per-step overheads.
INT8_64_SECONDS_PER_K_PER_WAVE = 0.6 * INT8_SECONDS_PER_K_PER_WAVE
#: the quantize dispatch: its launch in the pass, and a read of x and write of int8 x at ~3 TB/s
QUANTIZE_SECONDS_FIXED = 2.0e-6
QUANTIZE_SECONDS_PER_ELEMENT = 5.0 / 3e12


#: decode_int8 (one dispatch, x quantized in registers), fitted to the H200 probe of session 6
#: (bench/results/2026-11-29-h200-s6-decode-int8-probe.md): 1.1-1.4e-13 s a multiply-add past
#: the fixed cost at M = 1..8 (mid shapes 18.1-19.1 µs, LM head 84.0, M = 8 59.4). It decides
#: only among the int8 kernels.
DECODE_INT8_SECONDS_PER_MAC = 1.2e-13


def decode_int8_seconds(p: Problem) -> float:
    return SECONDS_FIXED + DECODE_INT8_SECONDS_PER_MAC * p.m * p.n * p.k


def tiled_int8_seconds(p: Problem, tile_m: int, k_step: int, split: int, tile_n: int = 128) -> float:
    """The quantize pass, the GEMM's waves of tiles over its steps, and the split's reduction
    (a tile of 64 features is costed as one of 128: not fitted)."""
    tiles = ceil_div(p.m, tile_m) * ceil_div(p.n, tile_n) * split
    per_k = INT8_SECONDS_PER_K_PER_WAVE if tile_m == 128 else INT8_64_SECONDS_PER_K_PER_WAVE
    k_per_split = k_step * ceil_div(ceil_div(p.k, k_step), split)
    quantize = QUANTIZE_SECONDS_FIXED + QUANTIZE_SECONDS_PER_ELEMENT * p.m * p.k
    return (SECONDS_FIXED + quantize + per_k * k_per_split * ceil_div(tiles, TILED_TILES_PER_WAVE)
            + split_seconds(p, split))
