"""Mixed precision: which linears stay dense (fp16 or fp32) beside the int4 ones under a byte
budget, from measured per-layer sensitivities (pure: no GPU, no torch)."""

from __future__ import annotations

from collections.abc import Mapping

from .arith import ceil_div
from .errors import ArgumentError

#: Bytes per element of a dense weight, by storage type (q4gsw.DenseWeight).
DENSE_ELEMENT_BYTES = {"float32": 4, "float16": 2}


def int4_bytes(n: int, k: int, group_size: int) -> int:
    """Bytes of an (N, K) weight in the q4gsw format: ceil(K/2) a row plus the used fp32 scales
    (PackedWeight.nbytes)."""
    return n * ((k + 1) // 2) + 4 * ceil_div(k, group_size) * n


def dense_bytes(n: int, k: int, dtype: str = "float16") -> int:
    """Bytes of an (N, K) weight kept dense as `dtype` (DenseWeight.nbytes)."""
    return n * k * DENSE_ELEMENT_BYTES[dtype]


def choose_dense(gains: Mapping[str, float], extra_bytes: Mapping[str, int], budget: int) -> list[str]:
    """The linears to keep dense: the set with the largest total gain whose extra bytes (dense
    minus int4) sum to at most `budget`, gains taken as additive (a 0/1 knapsack, solved
    exactly over the Pareto front of (bytes, gain); linears share few shapes, so the front
    stays small).

    Args:
        gains: name -> what keeping it dense is worth (e.g. the output error it causes when
            it alone is quantized, measured on calibration data); only positive gains count.
        extra_bytes: name -> bytes it adds when kept dense (every name of gains).
        budget: the extra bytes allowed, >= 0.
    Returns:
        the chosen names, in the order of `gains`.
    """
    if budget < 0:
        raise ArgumentError("choose_dense", "budget", "extra bytes >= 0", repr(budget))
    missing = [name for name in gains if name not in extra_bytes]
    if missing:
        raise ArgumentError("choose_dense", "extra_bytes", "an entry for every name of gains", f"none for {missing[:3]}")
    front: list[tuple[int, float, tuple[str, ...]]] = [(0, 0.0, ())]  # (bytes, gain, names): bytes up, gain up
    for name, gain in gains.items():
        cost = int(extra_bytes[name])
        if gain <= 0 or cost > budget:
            continue
        grown = [(b + cost, g + gain, names + (name,)) for b, g, names in front if b + cost <= budget]
        merged = sorted(front + grown, key=lambda s: (s[0], -s[1]))
        front = []
        for state in merged:  # keep a state only if it gains more than every cheaper one
            if not front or state[1] > front[-1][1]:
                front.append(state)
    best = front[-1][2]
    return [name for name in gains if name in best]
