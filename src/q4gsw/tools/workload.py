"""Benchmark inputs: shape presets, random weights, and a shape's GPU-resident workload whose
dispatches come from the same planning step as q4gsw.linear (ops/plan.py)."""

from __future__ import annotations

import numpy as np

from ..arith import ceil_div
from ..format import PackedWeight
from ..kernels import Problem
from ..ops.plan import gpu_placeholder, plan_linear

#: (M, K, N) sets. "small" finishes in well under a minute on lavapipe.
PRESETS = {
    "small": [(1, 1024, 1024), (1, 1024, 2816), (1, 2816, 1024), (4, 1024, 1024), (16, 1024, 1024)],
    "llama": [
        (1, 4096, 4096), (1, 4096, 14336), (1, 14336, 4096), (1, 2048, 8192), (1, 8192, 2048),
        (1, 4096, 128256),
        (2, 4096, 14336), (4, 4096, 14336), (8, 4096, 14336),
        (16, 4096, 4096), (32, 4096, 4096), (64, 4096, 4096), (128, 4096, 4096), (256, 4096, 4096),
        (128, 14336, 4096), (512, 4096, 4096), (512, 4096, 14336), (512, 14336, 4096), (2048, 4096, 4096),
    ],
}
#: On a GPU, timed passes rotate among copies of the weight totalling at least this much
#: (5x the H100's 50 MB L2), so each pass reads its weight from device memory.
ROTATE_BYTES = 256 << 20


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """'1x4096x4096,8x4096x14336' -> [(M, K, N), ...]; a preset name gives its list.
    Raises ValueError naming the part that is not MxKxN of positive integers."""
    if text in PRESETS:
        return PRESETS[text]
    shapes = []
    for part in text.split(","):
        try:
            m, k, n = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {part!r}: expected MxKxN (positive integers, e.g. 1x4096x4096) "
                             f"or a preset ({', '.join(PRESETS)})") from None
        if min(m, k, n) < 1:
            raise ValueError(f"shape {part!r}: M, K and N must be >= 1")
        shapes.append((m, k, n))
    return shapes


def random_weight(rng, n: int, k: int, group_size: int, *, scale: float | None = None) -> PackedWeight:
    """Random bytes (every nibble value) and scales: random-sign, LLM-like magnitude (~0.02)
    by default; with `scale`, positive scales in [0.5, 1.5] * scale (a stack of layers with
    scale ~ 1 / (4.6 sqrt(K)) keeps activations O(1))."""
    weights = rng.integers(0, 256, size=(n, (k + 1) // 2), dtype=np.uint8)
    groups = ceil_div(k, group_size)
    if scale is None:
        scales = rng.standard_normal((groups, n)) * 0.01 + 0.02
    else:
        scales = rng.uniform(0.5, 1.5, (groups, n)) * scale
    return PackedWeight(weights, scales.astype(np.float32), group_size, in_features=k)


class Workload:
    """One shape's GPU-resident inputs: `copies` uploads of the weight (for L2 rotation), x,
    the output and a bias placeholder. dispatches(spec) gives one dispatch per copy."""

    def __init__(self, rt, weight: PackedWeight, x: np.ndarray, copies: int = 1):
        usage = rt.wgpu.BufferUsage
        self.rt, self.weight, self.m = rt, weight, x.shape[0]
        # distinct PackedWeight objects over the same arrays: the runtime uploads each once
        self.copies = [weight] + [PackedWeight(weight.weights, weight.scales, weight.group_size, weight.in_features)
                                  for _ in range(copies - 1)]
        self.x = rt.buffers.upload(x, usage.STORAGE, "bench/x")
        self.out = rt.buffers.create(4 * self.m * weight.out_features, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST,
                                     "bench/out")
        self.bias = gpu_placeholder(rt)
        self._plans = []

    @classmethod
    def rotating(cls, rt, weight, x):
        """As many copies as make ROTATE_BYTES on a GPU (one on a CPU adapter)."""
        copies = 1 if rt.caps.is_cpu else max(1, ceil_div(ROTATE_BYTES, weight.nbytes))
        return cls(rt, weight, x, copies)

    def problem(self) -> Problem:
        return Problem(self.m, self.weight.out_features, self.weight.in_features, self.weight.group_size)

    def dispatches(self, spec) -> list:
        """One dispatch of spec per weight copy (each copy must fit one binding)."""
        result = []
        for copy in self.copies:
            plan = plan_linear(self.rt, "bench", copy, self.problem(), self.x, self.out, self.bias, kernel=spec,
                               activations=spec.activations)
            self._plans.append(plan)
            if len(plan.dispatches) != 1:
                raise ValueError("Workload: the weight is split into several bindings; time it through q4gsw.linear")
            result.append(plan.dispatches[0])
        return result

    def read_out(self) -> np.ndarray:
        return self.rt.buffers.read(self.out, 4 * self.m * self.weight.out_features).reshape(self.m, -1)

    def release(self) -> None:
        self.rt.buffers.destroy(self.x, self.out, self.bias)
        for plan in self._plans:
            plan.release(self.rt)
        for copy in self.copies:
            self.rt.weights.release(copy)
