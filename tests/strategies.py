"""Hypothesis strategies: problem shapes, group sizes, int4 values and float weights."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: The power-of-two group sizes ExecuTorch models use.
POW2_GROUP_SIZES = (8, 16, 32, 64, 128, 256)
#: Other positive sizes, most of which divide no power-of-two K.
ODD_GROUP_SIZES = (1, 2, 3, 5, 7, 12, 48, 100)

#: A group size: a usual one, an unusual one, or any in [1, 300] (often larger than K).
group_sizes = st.one_of(
    st.sampled_from(POW2_GROUP_SIZES),
    st.sampled_from(ODD_GROUP_SIZES),
    st.integers(1, 300),
)

#: A seed for np.random.default_rng: the data of a drawn shape.
seeds = st.integers(0, 2**32 - 1)


@st.composite
def shapes(draw, max_m: int = 9, max_n: int = 40, max_k: int = 160):
    """(M, N, K, group_size), M >= 1, sized for a CPU adapter.

    Odd K, odd N, N * ceil(K/2) % 4 != 0 (weights not a whole number of u32 words) and
    group sizes that do not divide K (or exceed it) all come up: N and K are drawn uniformly,
    with the extremes 1 and the maxima shrunk towards.
    """
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    return m, n, k, draw(group_sizes)


@st.composite
def int4_arrays(draw, max_n: int = 12, max_k: int = 40):
    """(N, K) int8 arrays of q values in [-8, 7], N, K >= 1."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    return draw(hnp.arrays(np.int8, (n, k), elements=st.integers(-8, 7)))


@st.composite
def float_weights(draw, max_n: int = 8, max_k: int = 96):
    """(w, group_size): a float32 (N, K) weight with finite values of assorted magnitudes."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    magnitude = draw(st.sampled_from((1e-30, 1e-6, 1.0, 1e6, 1e30)))
    elements = st.floats(-1.0, 1.0, width=32, allow_subnormal=False).map(lambda v: np.float32(v * magnitude))
    w = draw(hnp.arrays(np.float32, (n, k), elements=elements))
    return w, draw(group_sizes)


@st.composite
def aligned_shapes(draw, max_m: int = 8, max_n: int = 40, max_k_words: int = 40):
    """(M, N, K, group_size) as small-batch decode sees them: M <= 8, K and group_size
    multiples of 32 (group_size may still not divide K), any N."""
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, max_n))
    k = 32 * draw(st.integers(1, max_k_words))
    gs = 32 * draw(st.sampled_from((1, 2, 3, 4, 8)))
    return m, n, k, gs
