"""Problem: one linear_q4gsw call's sizes, as the kernel specs and the cost model see it."""

from __future__ import annotations

import dataclasses

from ..arith import ceil_div


@dataclasses.dataclass(frozen=True)
class Problem:
    """x (M, K) against a (N, K) weight: M rows of x, N output features, K input features."""

    m: int
    n: int
    k: int
    group_size: int
    has_bias: bool = False

    @property
    def row_bytes(self) -> int:
        """Bytes of one packed weight row: ceil(K / 2)."""
        return (self.k + 1) // 2

    @property
    def num_groups(self) -> int:
        """Scale rows a kernel reads: ceil(K / group_size)."""
        return ceil_div(self.k, self.group_size)

    def with_n(self, n: int) -> "Problem":
        """The same problem over n output features (one chunk of a weight split along N)."""
        return dataclasses.replace(self, n=n)


def tuning_bucket(p: Problem, activations: str = "f32") -> str:
    """The tuning cache's key for p: M rounded up to a power of two, exact K, N, group size
    (and "_a8" for the int8-activation kernels, which are tuned apart)."""
    m = 1 << max(0, (p.m - 1).bit_length())
    return f"m{m}_k{p.k}_n{p.n}_g{p.group_size}" + ("_a8" if activations == "int8" else "")
