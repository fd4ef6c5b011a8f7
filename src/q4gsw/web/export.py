"""export_web: write a self-contained static bundle that runs linear_q4gsw in a browser.

The bundle (see README "In a browser"):
    manifest.json          layers (N, K, group_size, padded_N, files, kernels) and kernels
    q4gsw.js, index.html   the ES module runtime and the demo page (copied from web/static/)
    kernels/<name>.wgsl    the WGSL text exactly as PipelineCache compiles it for that key
    <layer>/weights.bin    ExecuTorch's packed bytes (N, ceil(K/2)) uint8, as they are (rows padded past ceil(K/2) are written without the padding)
    <layer>/scales.bin     the scales (scale_rows, padded_N) float32 little-endian, as they are
    <layer>/bias.bin       optional (N,) float32
Override constants are not baked into the text: each key's constants go in the manifest and
q4gsw.js passes them to createComputePipeline's `constants`, as Python does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

import numpy as np

from ..arith import ceil_div
from ..checks import as_array, describe
from ..errors import DTypeError, ShapeError
from ..format import PackedWeight
from ..kernels import KERNELS, Decode, General, Problem, Tiled, cost
from ..runtime.pipelines import KernelKey, load_wgsl

FORMAT = "q4gsw-web"
VERSION = 1
#: Static files copied into every bundle.
STATIC_FILES = ("q4gsw.js", "index.html")
#: WGSL builtins that need an `enable` directive in the browser (Tint) but that naga (wgpu-py)
#: rejects when enabled: q4gsw.js prepends `enable <ext>;` to such kernels, nothing else.
BROWSER_ENABLES = {"subgroups": re.compile(r"\bsubgroup\w*|@builtin\(subgroup_")}
#: M values at which each kernel's tiling is checked against KernelSpec.tiles().
_TILING_PROBES = (1, 2, 3, 4, 5, 63, 64, 65, 127, 128, 129, 130, 255, 256, 257, 1000, 1024, 4096)
_LAYER_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_RESERVED = {"kernels", "manifest.json", *STATIC_FILES}


@dataclasses.dataclass(frozen=True)
class WebLayer:
    """One layer of a bundle: a name, its PackedWeight and an optional (N,) float32 bias."""

    name: str
    weight: PackedWeight
    bias: np.ndarray | None = None

    def __post_init__(self):
        fn = "WebLayer"
        if not isinstance(self.name, str) or not _LAYER_NAME.match(self.name) or self.name in _RESERVED:
            raise ShapeError(fn, "name", f"letters, digits, '_', '.', '-', not one of {sorted(_RESERVED)}",
                             describe(self.name))
        if not isinstance(self.weight, PackedWeight):
            raise DTypeError(fn, "weight", "a q4gsw.PackedWeight", describe(self.weight))
        if self.bias is not None:
            bias = as_array(fn, "bias", self.bias, np.float32)
            if bias.shape != (self.weight.out_features,):
                raise ShapeError(fn, "bias", f"shape ({self.weight.out_features},)", describe(self.bias))
            object.__setattr__(self, "bias", bias)


def random_layer(name: str, n: int, k: int, *, group_size: int = 128, bias: bool = True,
                 seed: int = 0) -> WebLayer:
    """A random quantized layer (standard normal weights, torchao's rule) for demos and tests.

    Args:
        n, k: out_features N and in_features K.
    """
    from ..quantize import quantize

    rng = np.random.default_rng(seed)
    weight = quantize(rng.standard_normal((n, k)).astype(np.float32), group_size=group_size)
    return WebLayer(name, weight, rng.standard_normal(n).astype(np.float32) if bias else None)


def load_npz_layer(path: str | Path, name: str | None = None) -> WebLayer:
    """A layer from an .npz holding `weights` (N, ceil(K/2)) uint8, `weight_scales` (or
    `scales`) (num_groups, padded_N) float32, `group_size`, and optionally `in_features`
    (needed for odd K) and `bias` (N,) float32 -- ExecuTorch's tensors, used as they are."""
    path = Path(path)
    with np.load(path) as data:
        keys = set(data.files)
        scales_key = "weight_scales" if "weight_scales" in keys else "scales"
        missing = {"weights", scales_key, "group_size"} - keys
        if missing:
            raise ShapeError("export_web", "weight", f"an .npz with {sorted(missing)}", f"{path} with {sorted(keys)}")
        k = int(data["in_features"]) if "in_features" in keys else None
        weight = PackedWeight(data["weights"], data[scales_key], int(data["group_size"]), in_features=k)
        bias = data["bias"] if "bias" in keys else None
    return WebLayer(name or re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem), weight, bias)


def bundle_kernel_source(key: KernelKey) -> str:
    """The WGSL text PipelineCache compiles for key (its files joined by a newline)."""
    return "\n".join(load_wgsl(f) for f in key.sources)


def _invocations(source: str, constants: dict) -> int:
    """Invocations per workgroup, from the entry point's @workgroup_size (a literal or an override)."""
    match = re.search(r"@workgroup_size\(\s*([A-Za-z0-9_]+)\s*\)", source)
    if match is None:
        raise ValueError("kernel source has no one-dimensional @workgroup_size")
    value = match[1].rstrip("u")
    return int(value) if value.isdigit() else int(constants[value])


def _tiling(spec, n: int, k: int, group_size: int) -> tuple[int, int]:
    """(workgroups along N, rows of x per workgroup along M), checked against spec.tiles()."""
    n_tiles = spec.tiles(Problem(1, n, k, group_size))[0]
    m_per_tile = max(m for m in _TILING_PROBES if spec.tiles(Problem(m, n, k, group_size))[1] == 1)
    for m in _TILING_PROBES:
        if spec.tiles(Problem(m, n, k, group_size)) != (n_tiles, ceil_div(m, m_per_tile)):
            raise ValueError(f"{spec.name}: tiles() is not (n_tiles, ceil(M / {m_per_tile})) at M={m}")
    return n_tiles, m_per_tile


def _preference(spec) -> str:
    """How kernels.select() ranks spec, for q4gsw.js: 'decode' (when decode_beats_tiled),
    'tiled' (when it does not) or 'fallback' (never preferred)."""
    if isinstance(spec, Decode):
        return "decode"
    if isinstance(spec, Tiled):
        return "tiled"
    if isinstance(spec, General):
        return "fallback"
    raise ValueError(f"kernel {spec.name!r}: q4gsw.web does not know how select() ranks it")


def layer_kernels(weight: PackedWeight) -> tuple[list[dict], dict]:
    """The kernels for this weight, shape-wise (device checks are left to q4gsw.js).

    Returns:
        (per-layer entries in KERNELS order, each either runnable -- keys with and without
        bias, tiling, preference, limits -- or {"name", "unsupported": reason as select()
        gives it}; {str(key): kernel entry} for every key the runnable ones use).
    """
    n, k, gs = weight.out_features, weight.in_features, weight.group_size
    entries, kernels = [], {}
    for spec in KERNELS.values():
        if spec.baseline or not spec.web:
            continue
        reason = spec.supports(Problem(1, n, k, gs), None)
        if reason is not None:
            entries.append({"name": spec.name, "unsupported": reason})
            continue
        keys = {}
        for has_bias in (False, True):
            key = spec.key(Problem(1, n, k, gs, has_bias))
            if any(spec.key(Problem(m, n, k, gs, has_bias)) != key for m in _TILING_PROBES):
                raise ValueError(f"{spec.name}: the kernel key depends on M; a bundle cannot hold it")
            source = bundle_kernel_source(key)
            constants = {name: (int(v) if isinstance(v, bool) else v) for name, v in key.constants}
            kernels[str(key)] = {
                "name": key.name,
                "label": key.label,
                "files": [f"{f}.wgsl" for f in key.sources],
                "source": f"kernels/{key.name}.wgsl",
                "constants": constants,
                "enables": [ext for ext, pattern in BROWSER_ENABLES.items() if pattern.search(source)],
                "invocations": _invocations(source, constants),
                "text": source,
            }
            keys["bias" if has_bias else "no_bias"] = str(key)
        n_tiles, m_per_tile = _tiling(spec, n, k, gs)
        p1 = Problem(1, n, k, gs)
        entries.append({
            "name": spec.name,
            "keys": keys,
            "n_tiles": n_tiles,
            "m_per_tile": m_per_tile,
            "prefers": _preference(spec),
            "max_m": getattr(spec, "max_m", None),
            "workgroup_bytes": spec.workgroup_bytes(p1) if hasattr(spec, "workgroup_bytes") else 0,
        })
    return entries, kernels


def _write(path: Path, array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    path.write_bytes(data)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "nbytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def export_web(out_dir: str | Path, layers: list[WebLayer]) -> Path:
    """Write a static bundle running `layers` in a browser; returns the manifest's path.

    Args:
        out_dir: the bundle folder (created; files of an earlier bundle are overwritten).
        layers: one or more WebLayer, with distinct names.
    """
    if not layers:
        raise ShapeError("export_web", "layers", "at least one WebLayer", "[]")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ShapeError("export_web", "layers", "distinct layer names", repr(names))
    out = Path(out_dir)
    (out / "kernels").mkdir(parents=True, exist_ok=True)
    static = importlib.resources.files("q4gsw.web").joinpath("static")
    for name in STATIC_FILES:
        (out / name).write_bytes(static.joinpath(name).read_bytes())
    manifest_layers, manifest_kernels = [], {}
    for layer in layers:
        w = layer.weight
        entries, kernels = layer_kernels(w)
        manifest_kernels.update(kernels)
        folder = out / layer.name
        folder.mkdir(exist_ok=True)
        files = {"weights": _write(folder / "weights.bin", w.compact().weights),  # ceil(K/2) bytes a row
                 "scales": _write(folder / "scales.bin", w.scales)}
        if layer.bias is not None:
            files["bias"] = _write(folder / "bias.bin", layer.bias)
        for part, meta in files.items():
            meta["file"] = f"{layer.name}/{part}.bin"
        manifest_layers.append({
            "name": layer.name, "N": w.out_features, "K": w.in_features, "group_size": w.group_size,
            "padded_N": int(w.scales.shape[1]), "scale_rows": int(w.scales.shape[0]),
            "num_groups": w.num_groups, "files": files, "kernels": entries,
        })
    texts: dict[str, str] = {}
    for entry in manifest_kernels.values():
        text = entry.pop("text")
        if texts.setdefault(entry["source"], text) != text:
            raise ValueError(f"two keys of kernel {entry['name']!r} have different sources")
        (out / entry["source"]).write_text(text, encoding="utf-8", newline="")
    from .. import __version__

    manifest = {
        "format": FORMAT, "version": VERSION, "q4gsw_version": __version__,
        "kernel_order": [s.name for s in KERNELS.values() if not s.baseline and s.web],
        "routing": {
            "decode_seconds_per_mac": cost.DECODE_SECONDS_PER_MAC,
            "tiled_seconds_per_k_per_wave": cost.TILED_SECONDS_PER_K_PER_WAVE,
            "tiled_tiles_per_wave": cost.TILED_TILES_PER_WAVE,
            "tiled_tile": KERNELS["tiled"].tile_n,
        },
        "layers": manifest_layers,
        "kernels": manifest_kernels,
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path
