"""Test helpers: random linear_q4gsw problems and the fp32 comparison against the reference."""

from __future__ import annotations

import dataclasses

import numpy as np

import q4gsw

#: Relative tolerance of a GPU result against the float64 reference, per output element,
#: as a fraction of sum_k |x[m, k] * W[n, k]| + |bias[n]| (the sum of absolute values of
#: what is accumulated). Worst-case fp32 recursive summation is bounded by about K * u of
#: that sum (u = 2**-24; Higham's gamma_K), which for K = 4096 is 2.4e-4: as large as one
#: term's share (1 / K), so it could not catch a dropped element. Rounding errors of a sum
#: of independent terms grow like sqrt(K) * u (Higham & Mary 2019): 3.8e-6 at K = 4096.
#: 1e-5 (about 170 u) covers that bound with margin for every K in these tests and still
#: catches one wrong or missing element for K up to about 1e5 (measured worst on lavapipe:
#: 2.5e-7 for the sequential 'rowwise' kernel, 1e-7 for 'general').
RTOL = 1e-5
#: Absolute slack for outputs whose accumulated magnitude is near 0.
ATOL = 1e-6


@dataclasses.dataclass
class Case:
    """A random problem: x (..., K), ExecuTorch's weights and padded scales, bias, PackedWeight."""

    x: np.ndarray
    weights: np.ndarray
    scales: np.ndarray
    bias: np.ndarray | None
    group_size: int
    pw: q4gsw.PackedWeight


def random_weights(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(N, ceil(K/2)) uint8 random bytes; for odd K the padding nibble is garbage (never 8)."""
    weights = rng.integers(0, 256, (n, (k + 1) // 2), dtype=np.uint8)
    if k % 2:
        garbage = rng.choice([v for v in range(16) if v != 8], size=n).astype(np.uint8)
        weights[:, -1] = (weights[:, -1] & 0x0F) | (garbage << 4)
    return weights


def random_scales(rng: np.random.Generator, num_groups: int, n: int, *, extra_groups: int = 1,
                  extra_cols: int = 3, padding: float = np.nan) -> np.ndarray:
    """(num_groups + extra_groups, N + extra_cols) float32; used entries are random with random
    sign and magnitude in [0.05, 1); padding entries hold `padding` (NaN: any use shows)."""
    scales = np.full((num_groups + extra_groups, n + extra_cols), padding, np.float32)
    sign = rng.choice([-1.0, 1.0], size=(num_groups, n))
    scales[:num_groups, :n] = sign * rng.uniform(0.05, 1.0, (num_groups, n))
    return scales


def random_problem(rng: np.random.Generator, m: int, n: int, k: int, group_size: int, *,
                   batch: tuple[int, ...] | None = None, bias: bool = True, extra_groups: int = 1,
                   extra_cols: int = 3) -> Case:
    """A random problem with M = prod(batch) rows when batch is given, else x of shape (M, K)."""
    lead = (m,) if batch is None else tuple(batch)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    weights = random_weights(rng, n, k)
    num_groups = -(-k // group_size)
    scales = random_scales(rng, num_groups, n, extra_groups=extra_groups, extra_cols=extra_cols)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    pw = q4gsw.PackedWeight(weights, scales, group_size, in_features=k)
    return Case(x, weights, scales, b, group_size, pw)


def tolerance(x: np.ndarray, pw: q4gsw.PackedWeight, bias: np.ndarray | None) -> np.ndarray:
    """(..., N) allowed |error|: RTOL * (|x| @ |W|.T + |bias|) + ATOL (see RTOL)."""
    k = pw.in_features
    magnitude = np.abs(np.asarray(x, np.float64)).reshape(-1, k) @ np.abs(pw.dequantize()).T
    if bias is not None:
        magnitude += np.abs(np.asarray(bias, np.float64))
    return (RTOL * magnitude + ATOL).reshape(*np.shape(x)[:-1], pw.out_features)


def assert_matches_reference(y, x, pw: q4gsw.PackedWeight, bias=None) -> None:
    """y is (..., N) float32, every element written (finite) and within tolerance of the reference."""
    ref = q4gsw.linear_reference(x, pw, bias)
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float32
    assert y.shape == ref.shape
    assert np.isfinite(y).all(), f"{np.count_nonzero(~np.isfinite(y))} output elements not written (NaN poison)"
    err = np.abs(y.astype(np.float64) - ref)
    tol = tolerance(x, pw, bias)
    bad = err > tol
    assert not bad.any(), (
        f"{np.count_nonzero(bad)} of {err.size} elements off; worst error {err.max():.3g}, "
        f"worst error / tolerance {(err / tol).max():.3g}"
    )


def fake_capabilities(adapter_name: str = "llvmpipe (LLVM 15.0.6, 256 bits)",
                      driver: str = "Mesa 25.0.7 (LLVM 15.0.6)", **changes):
    """A Capabilities record built by hand, for pure tests (no adapter needed).

    Defaults: an llvmpipe CPU adapter of Mesa 25 with every optional feature and WebGPU's
    usual maxima for the limits q4gsw reads; pass a Mesa < 25 driver for a loop-limited one.
    """
    from q4gsw.runtime import Capabilities

    fields = dict(
        adapter_name=adapter_name, vendor="llvmpipe", backend="Vulkan", adapter_type="CPU", driver=driver,
        features=frozenset({"timestamp-query", "shader-f16", "subgroup"}),
        limits={"max-storage-buffer-binding-size": 1 << 27, "max-compute-workgroups-per-dimension": 65535,
                "max-compute-workgroup-storage-size": 32768, "max-compute-invocations-per-workgroup": 1024},
        chosen_because="built by hand for a test",
    )
    fields.update(changes)
    return Capabilities(**fields)


def executorch_pack(q: np.ndarray, inner_dim_padding: int | None = 8) -> np.ndarray:
    """ExecuTorch's exporter `pack_4bit_weight_tensor(q, inner_dim_padding=8)`, from its
    documented behaviour: (N, K) int values in [-8, 7]; when K is not a multiple of
    inner_dim_padding, each row is padded with zeros (q = 0) to the next multiple; then
    byte = (odd + 8) << 4 | (even + 8). Returns (N, padded K / 2) uint8."""
    q = np.asarray(q, np.int16)
    if inner_dim_padding is not None and q.shape[1] % inner_dim_padding:
        pad = inner_dim_padding - q.shape[1] % inner_dim_padding
        q = np.concatenate([q, np.zeros((q.shape[0], pad), np.int16)], axis=1)
    u = (q + 8).astype(np.uint8)
    return ((u[:, 1::2] << 4) | u[:, 0::2]).astype(np.uint8)
