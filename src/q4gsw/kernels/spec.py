"""KernelSpec: a linear_q4gsw kernel and its decisions for a Problem (pure: no GPU calls)."""

from __future__ import annotations

from ..arith import ceil_div
from ..runtime.pipelines import KernelKey
from .problem import Problem

#: llvmpipe before Mesa 25 silently cuts loops past this many iterations per invocation.
LLVMPIPE_LOOP_BUDGET = 65_535
#: Invocations per workgroup of reduce_splits.wgsl (the second dispatch of a split-K run).
REDUCE_WG = 256


class KernelSpec:
    """A kernel and its decisions for a problem; the planner computes the grid from them.

    Subclasses set `name` and implement tiles(), loop_trips(), constants() and, when the
    kernel has preconditions, _shape_reason().
    """

    name: str = ""
    baseline: bool = False  # kept only for benchmarks; never chosen by default
    activations: str = "f32"  # what x is multiplied as: "f32", or "int8" (quantized on the GPU)
    separate_quantize: bool = False  # int8: a quantize dispatch (quantize_key) heads the op's pass

    def tiles(self, p: Problem) -> tuple[int, int]:
        """(tiles along N, tiles along M): workgroups = their product."""
        raise NotImplementedError

    def loop_trips(self, p: Problem) -> int:
        """What one invocation's loops cost against llvmpipe's budget: nested loops count
        outer x (inner + 2), as measured on Mesa 22 (ENVIRONMENT.md)."""
        raise NotImplementedError

    def constants(self, p: Problem) -> tuple:
        """Override constants beyond HAS_BIAS, as (name, value) pairs."""
        return ()

    def key(self, p: Problem) -> KernelKey:
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)))

    def _shape_reason(self, p: Problem) -> str | None:
        return None

    def predicted_seconds(self, p: Problem) -> float | None:
        """The cost model's time for p (kernels/cost.py); None for kernels the default
        routing never prefers (fallbacks and baselines)."""
        return None

    def split(self, p: Problem) -> int:
        """Workgroups per output tile along K; > 1 adds a reduce_splits dispatch."""
        return 1

    def reduce_key(self, p: Problem) -> KernelKey:
        """The second dispatch of a split run (split(p) > 1): reduce_splits.wgsl."""
        return KernelKey("reduce_splits", (("HAS_BIAS", p.has_bias), ("SPLIT", self.split(p)),
                                           ("WG", REDUCE_WG)))

    def partial_bytes(self, p: Problem) -> int:
        """The partial-sum buffer a split run needs (0 without a split)."""
        s = self.split(p)
        return 4 * s * p.m * p.n if s > 1 else 0

    def bind(self, caps) -> "KernelSpec":
        """This kernel configured for a device (caps None: the conservative default)."""
        return self

    def variants(self, p: Problem) -> list["KernelSpec"]:
        """The configurations `q4gsw tune` tries for p (each a KernelSpec); default: itself."""
        return [self]

    def settings(self) -> dict:
        """The tunable settings of this configuration, as stored in the tuning cache."""
        return {}

    def with_settings(self, settings: dict) -> "KernelSpec":
        """This kernel with tuned settings applied (unknown keys are ignored)."""
        return self

    def supports(self, p: Problem, caps) -> str | None:
        """None when the kernel can run p on caps, else the reason it cannot."""
        reason = self._shape_reason(p)
        if reason:
            return reason
        if caps is not None and caps.has_loop_limit and self.loop_trips(p) > LLVMPIPE_LOOP_BUDGET:
            return (f"{self.name} would loop {self.loop_trips(p)} times per invocation, past the "
                    f"{LLVMPIPE_LOOP_BUDGET} that {caps.driver} runs correctly")
        if caps is not None and self.partial_bytes(p) > caps.max_binding_size:
            return (f"{self.split(p)} partial sums of M x N need {self.partial_bytes(p)} bytes, "
                    f"past the binding limit {caps.max_binding_size}")
        if self.split(p) > 1 and self.split(p) * p.m * p.n >= 1 << 32:
            return "the partial sums need more than 2^32 elements"
        return None

    def __repr__(self) -> str:
        settings = self.settings()
        return f"<KernelSpec {self.name}{' ' + str(settings) if settings else ''}>"


def reduce_workgroups(p: Problem) -> int:
    """Workgroups of the reduce_splits dispatch: one invocation per output element."""
    return ceil_div(p.m * p.n, REDUCE_WG)
