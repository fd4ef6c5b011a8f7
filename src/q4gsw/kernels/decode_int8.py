"""DecodeInt8 (decode_int8.wgsl): small M with 8-bit activations (activations="int8") in one
dispatch, on decode's layout (kernels/decode.py)."""

from __future__ import annotations

from ..runtime.pipelines import KernelKey
from . import cost
from .decode import TUNED_FEATURES, Decode, decode_settings
from .problem import Problem


class DecodeInt8(Decode):
    """Small M with 8-bit activations (activations="int8"), in one dispatch (decode_int8.wgsl):
    decode's layout (32 k an invocation, 16-byte weight loads, 4 rows a step), each invocation
    quantizing its own 32 k of x in registers (one int8 scale per row of x and 32 k: the
    `x_group=32` of the int8 GEMMs) and summing int4 x int8 products with dot4I8Packed: 5 ops
    per 8 weights where decode's f32 unpack takes 24. Names: decode_int8_subgroup (routed where
    the device has subgroups), decode_int8_workgroup. Setting: features_per_workgroup."""

    activations = "int8"
    file = "decode_int8"
    max_m = 8  # measured up to 8 rows of x (one workgroup each); the int8 GEMMs take more
    x_group = 32  # k per activation scale, fixed by the kernel (one invocation's share)
    separate_quantize = False  # the plan adds no quantize dispatch
    declares_x_stage = False

    def __init__(self, reduction: str, partial_capacity: int, features_per_workgroup: int | None = None):
        super().__init__(reduction, partial_capacity, features_per_workgroup)

    def features(self, p: Problem) -> int:
        """As Decode's, with defaults from the H200 (session 6 probe): 32 rows for M >= 2 and on a
        long grid (LM head 84.0 µs; M = 2 / 4 / 8 at 4096 x 14336: 22.8 / 35.6 / 59.4 against
        26.6 / 42.6 / 75.3 with 16), 8 for M = 1 on a GPU up to 2^24 weights (one wave: 11.6-12.1
        against 12.5-13.1 µs), else 16."""
        if self.features_per_workgroup is None:
            small = p.n * p.k <= cost.NARROW_MAX_WEIGHTS and not self.on_cpu
            wanted = 32 if p.m >= 2 or cost.long_grid(p) else 8 if small else 16
            return self.with_settings({"features_per_workgroup": wanted}).features(p)
        return super().features(p)

    def variants(self, p):
        return [self.with_settings({"features_per_workgroup": f}) for f in TUNED_FEATURES
                if f * self.workgroup_size(p) <= self.partial_capacity or f == 8]

    def settings(self):
        return {"features_per_workgroup": self.features_per_workgroup}

    def with_settings(self, settings):
        tuned = decode_settings({"features_per_workgroup": settings.get("features_per_workgroup",
                                                                          self.features_per_workgroup)},
                                self.features_per_workgroup, "auto")
        if tuned is None:
            return self
        bound = type(self)(self.reduction, self.partial_capacity, tuned[0])
        bound.on_cpu = self.on_cpu
        return bound

    def x_group_size(self, p: Problem) -> int:
        """k per activation scale: 32."""
        return self.x_group

    def constants(self, p):
        return (("FEATURES", self.features(p)), ("WG", self.workgroup_size(p)))

    def key(self, p):
        return KernelKey(self.name, (("HAS_BIAS", p.has_bias), *self.constants(p)),
                         files=(self.file, f"reduce_{self.reduction}"))

    def predicted_seconds(self, p):
        return cost.decode_int8_seconds(p)
