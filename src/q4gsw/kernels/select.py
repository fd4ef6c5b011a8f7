"""The kernel choice: KERNELS (f32 activations), INT8_KERNELS (int8 activations), and
select(problem, caps) -> KernelSpec (pure: no GPU calls)."""

from __future__ import annotations

from ..errors import UnsupportedShapeError
from .decode import Decode, DecodeBatch, DecodeNarrow
from .decode_int8 import DecodeInt8
from .bcast_int8 import BcastInt8
from .general import General, Rowwise
from .int8 import TiledInt8
from .problem import Problem, tuning_bucket
from .spec import KernelSpec
from .tiled import Tiled, TiledSplit

#: Fixed tiled_split settings kept for benchmarks (never chosen by default, not in `q4gsw bench`'s
#: default list; docs/kernels-prefill.md, session 5): tiled_split_2wg splits K to fill two
#: workgroups per SM, tiled_lowreg_2wg does the same without the register prefetch (light enough
#: in registers for two to share an SM?); tiled_lowreg has no prefetch and no split, tiled_m64
#: 64-row tiles (4 x 8 a thread) and no split, tiled_wg512 the 128 x 128 tile with 512 invocations
#: of 4 x 8 (twice the warps, no split). None was faster than the route on the H200 (session 5).
TILED_PRESETS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (TiledSplit(128, name="tiled_split_2wg", resident=2, baseline=True),
                 TiledSplit(128, name="tiled_lowreg_2wg", prefetch=False, resident=2, baseline=True),
                 TiledSplit(128, 1, name="tiled_lowreg", prefetch=False, baseline=True),
                 TiledSplit(64, 1, name="tiled_m64", baseline=True),
                 TiledSplit(128, 1, name="tiled_wg512", invocations_per_workgroup=512, baseline=True))
}
#: Every kernel, by name, in the order ties are broken (the presets last).
KERNELS: dict[str, KernelSpec] = {
    **{spec.name: spec
       for spec in (Decode("subgroup", 32768), Decode("workgroup", 4096), DecodeNarrow("subgroup", 32768),
                    Decode("subgroup", 32768, x_rows=2), DecodeBatch(), Tiled(), TiledSplit(), General(), Rowwise())},
    **TILED_PRESETS,
}
#: The kernels of the 8-bit-activation path (activations="int8"), by name: bcast_int8_k64 (routed
#: wherever it runs: 1.22-1.32x faster than tiled_int8 on the H200's six Llama prefill shapes,
#: session 5) and tiled_int8 (routed where bcast_int8_k64 cannot run) choose their settings per
#: problem and device; the others are fixed settings kept for benchmarks (never chosen by default),
#: so that one run can compare them. bcast_int8* (bcast_int8.wgsl) are
#: ONNX Runtime's DP4A shape (64-row tiles, 1 row x 16 features an invocation, broadcast weight
#: reads, scales every 32 k): _ort in its order (one buffer, loads at the step's start), the
#: default with loads one step ahead and two buffers, _k64 with 64-k steps, _n128 with 32 features.
#: (_k128, 128-k steps with one buffer, is a setting now, not a preset.)
INT8_KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (DecodeInt8("subgroup", 32768), DecodeInt8("workgroup", 4096), TiledInt8(),
                 TiledInt8("tiled_int8_k32", k_step=32, baseline=True),
                 TiledInt8("tiled_int8_1buf", double_buffer=False, baseline=True),
                 TiledInt8("tiled_int8_m64", x_rows_per_tile=64, baseline=True),
                 TiledInt8("tiled_int8_nosplit", split=1, baseline=True),
                 TiledInt8("tiled_int8_xg32", x_group=32, baseline=True),
                 TiledInt8("tiled_int8_n64", x_rows_per_tile=128, features_per_tile=64, baseline=True),
                 TiledInt8("tiled_int8_64x64", x_rows_per_tile=64, features_per_tile=64, baseline=True),
                 TiledInt8("tiled_int8_wg512", x_rows_per_tile=128, invocations_per_workgroup=512, baseline=True),
                 BcastInt8(),
                 BcastInt8("bcast_int8_ort", double_buffer=False),
                 BcastInt8("bcast_int8_k64", k_step=64, baseline=False),
                 BcastInt8("bcast_int8_n128", features_per_tile=128))
}
#: activations -> the registry of kernels that compute with them.
REGISTRIES = {"f32": KERNELS, "int8": INT8_KERNELS}


def check_activations(activations) -> str:
    """activations if it names a registry ("f32" or "int8"), else ValueError saying so."""
    if not isinstance(activations, str) or activations not in REGISTRIES:
        raise ValueError(f"activations: expected one of {', '.join(map(repr, REGISTRIES))}, got {activations!r}")
    return activations


def select(p: Problem, caps, kernel: "str | KernelSpec | None" = None, tuned: dict | None = None,
           activations: str = "f32") -> KernelSpec:
    """The kernel to run p on a device with capabilities `caps` (None: shape checks only).

    Args:
        kernel: a name from the registry of `activations`, or a KernelSpec (e.g. with
            settings) computing with them: that kernel or UnsupportedShapeError saying why it
            cannot run p.
        tuned: the tuning cache's entries ({bucket: {"kernel", "settings"}}, see q4gsw tune):
            the entry of p's bucket wins when it supports p.
        activations: "f32" (KERNELS) or "int8" (INT8_KERNELS: x quantized to int8 on the GPU);
            the choice is only ever among the kernels of that registry.
    Returns:
        else the supported kernel with the least predicted_seconds (ties: KERNELS order),
        else the first supported fallback (predicted_seconds None).
    """
    kernels = REGISTRIES[check_activations(activations)]
    if kernel is not None:
        return _named(p, caps, kernel, activations)
    if tuned:
        entry = tuned.get(tuning_bucket(p, activations))
        spec = kernels.get(entry["kernel"]) if entry else None
        if spec is not None:
            spec = spec.bind(caps).with_settings(entry.get("settings", {}))
            if spec.supports(p, caps) is None:
                return spec
    reasons, best, fallback = [], None, None
    for spec in kernels.values():
        if spec.baseline:
            continue
        spec = spec.bind(caps)
        reason = spec.supports(p, caps)
        if reason is not None:
            reasons.append(f"{spec.name}: {reason}")
            continue
        seconds = spec.predicted_seconds(p)
        if seconds is None:
            fallback = fallback or spec
        elif best is None or seconds < best[0]:
            best = (seconds, spec)
    if best is not None:
        return best[1]
    if fallback is not None:
        return fallback
    raise UnsupportedShapeError(f"no kernel runs M={p.m} N={p.n} K={p.k} group_size={p.group_size}: "
                                + "; ".join(reasons))


def _named(p: Problem, caps, kernel: "str | KernelSpec", activations: str) -> KernelSpec:
    kernels = REGISTRIES[activations]
    if isinstance(kernel, KernelSpec):
        spec = kernel
    elif kernel in kernels:
        spec = kernels[kernel].bind(caps)
    else:
        other = [a for a, registry in REGISTRIES.items() if kernel in registry]
        if other:
            raise UnsupportedShapeError(f"kernel {kernel!r} computes with {other[0]} activations, not {activations} "
                                        f"(pass activations={other[0]!r})")
        raise UnsupportedShapeError(f"unknown kernel {kernel!r}; known for {activations} activations: "
                                    f"{', '.join(kernels)}")
    if spec.activations != activations:
        raise UnsupportedShapeError(f"kernel {spec.name!r} computes with {spec.activations} activations, not "
                                    f"{activations} (pass activations={spec.activations!r})")
    reason = spec.supports(p, caps)
    if reason:
        raise UnsupportedShapeError(f"kernel {spec.name!r} cannot run M={p.m} N={p.n} K={p.k} "
                                    f"group_size={p.group_size}: {reason}")
    return spec
