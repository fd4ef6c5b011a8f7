"""export_web: write a self-contained static bundle that runs linear_q4gsw layers in a browser.

A bundle (see README "In a browser"; export_model.py writes the "model" kind):
    manifest.json          format, version, kind, the kernels' files, the cost model's
                           constants, the data files (size, sha256) and where each tensor lies
    q4gsw.js + modules     the ES module runtime, index.html, generate.html, embeddings.html (web/static/)
    kernels/<file>.wgsl    every file of q4gsw/kernels, byte for byte
    data/<NNN>.bin         the tensors, packed in order (16-byte aligned) into files of at
                           most chunk_bytes; a weight larger than chunk_bytes is split along N
                           into chunks of at most chunk_bytes each (runtime/weights.py's rule
                           with chunk_bytes as the binding limit), each chunk its own buffers
q4gsw.js computes kernel keys, tiles and params from the problem as the Python specs do
(kernels.js), compiles the keys' files with their override constants, and checks every file
it fetches against the manifest's size and sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

import numpy as np

from ..checks import as_array, describe
from ..errors import DTypeError, ShapeError
from ..format import PackedWeight
from ..kernels import KERNELS, cost
from ..runtime.pipelines import KernelKey, load_wgsl
from ..runtime.weights import features_per_chunk, fits_one_binding

FORMAT = "q4gsw-web"
VERSION = 2
#: Bytes of a data file and of a weight chunk (a chunk is bound whole): Chrome's default
#: maxStorageBufferBindingSize, which every WebGPU device offers at least.
DEFAULT_CHUNK_BYTES = 128 << 20
#: Files copied from web/static into every bundle (the ES modules and the pages).
STATIC_FILES = ("q4gsw.js", "errors.js", "kernels.js", "tensor.js", "runtime.js", "chain.js", "bundle.js", "ops.js",
                "model.js", "tokenizer.js", "index.html", "generate.html",
                "encoder_ops.js", "dense.js", "minilm.js", "wordpiece.js", "embeddings.html", "page.js")
_LAYER_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_RESERVED = {"kernels", "data", "manifest.json", "tokenizer.json", *STATIC_FILES}


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
    """The WGSL text PipelineCache compiles for key (its files joined by a newline), as
    q4gsw.js joins the bundle's kernels/<file>.wgsl."""
    return "\n".join(load_wgsl(f) for f in key.sources)


def routing() -> dict:
    """The cost model's constants (kernels/cost.py) and the decode kernels' workgroup-memory
    capacities, as q4gsw.js's Router reads them."""
    return {
        "seconds_fixed": cost.SECONDS_FIXED,
        "decode_seconds_per_mac": cost.DECODE_SECONDS_PER_MAC,
        "decode_int8_seconds_per_mac": cost.DECODE_INT8_SECONDS_PER_MAC,
        "x2_seconds_per_block_mac": cost.X2_SECONDS_PER_BLOCK_MAC,
        "tiled_seconds_per_k_per_wave": cost.TILED_SECONDS_PER_K_PER_WAVE,
        "tiled64_seconds_per_k_per_wave": cost.TILED64_SECONDS_PER_K_PER_WAVE,
        "tiled_tiles_per_wave": cost.TILED_TILES_PER_WAVE,
        "split_seconds_per_partial": cost.SPLIT_SECONDS_PER_PARTIAL,
        "split_seconds_fixed": cost.SPLIT_SECONDS_FIXED,
        "batch_seconds_per_block_mac": {str(k): v for k, v in cost.BATCH_SECONDS_PER_BLOCK_MAC.items()},
        "long_grid_feature_blocks": cost.LONG_GRID_FEATURE_BLOCKS,
        "narrow_max_weights": cost.NARROW_MAX_WEIGHTS,
        "narrow_speedup": cost.NARROW_SPEEDUP,
        "narrow_slowdown": cost.NARROW_SLOWDOWN,
        "decode_partial_capacity": {spec.reduction: spec.partial_capacity for spec in KERNELS.values()
                                    if hasattr(spec, "reduction")},
    }


class DataWriter:
    """Packs tensors' bytes into data/<NNN>.bin files of at most file_bytes each (a tensor
    larger than that gets a file of its own), each tensor at a 16-byte aligned offset."""

    def __init__(self, out: Path, file_bytes: int):
        self.out = out
        self.file_bytes = file_bytes
        self.files: dict[str, dict] = {}
        self._current: tuple[str, object, int] | None = None  # (name, handle, bytes written)
        (out / "data").mkdir(parents=True, exist_ok=True)

    def add(self, array: np.ndarray) -> dict:
        """Write array's little-endian bytes; returns its reference {file, offset, nbytes, dtype, shape}."""
        arr = np.ascontiguousarray(array)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        padded = -len(data) % 16
        if self._current is None or self._current[2] + len(data) > self.file_bytes:
            self._next()
        name, handle, offset = self._current
        handle.write(data + bytes(padded))
        self._current = (name, handle, offset + len(data) + padded)
        return {"file": name, "offset": offset, "nbytes": len(data), "dtype": arr.dtype.name, "shape": list(arr.shape)}

    def _next(self) -> None:
        self._close()
        name = f"data/{len(self.files):03d}.bin"
        self.files[name] = {}
        self._current = (name, open(self.out / name, "wb"), 0)

    def _close(self) -> None:
        if self._current is not None:
            name, handle, _ = self._current
            handle.close()
            data = (self.out / name).read_bytes()
            self.files[name] = {"nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            self._current = None

    def finish(self) -> dict:
        """Close the last file; returns {file: {nbytes, sha256}}."""
        self._close()
        return self.files


def weight_entry(writer: DataWriter, weight: PackedWeight, chunk_bytes: int) -> dict:
    """A weight's manifest entry, its chunks written: split along N exactly as the Python
    runtime splits it for a binding limit of chunk_bytes (runtime/weights.py): one chunk
    keeps ExecuTorch's scales as they are (the used rows, padded_N wide); several chunks
    hold their own rows and compact scale columns. Rows padded past ceil(K/2) bytes (as
    ExecuTorch's exporter writes them) are written without the padding."""
    weight = weight.compact()
    as_is = fits_one_binding(weight, chunk_bytes)
    step = features_per_chunk(weight, chunk_bytes)
    chunks = []
    for n0 in range(0, weight.out_features, step):
        n = min(step, weight.out_features - n0)
        if as_is:
            scales, stride = weight.scales[: weight.num_groups], int(weight.scales.shape[1])
        else:
            scales, stride = weight.scales[: weight.num_groups, n0 : n0 + n], n
        chunks.append({"n0": n0, "n": n, "scale_stride": stride, "weights": writer.add(weight.weights[n0 : n0 + n]),
                       "scales": writer.add(scales.astype(np.float32))})
    return {"N": weight.out_features, "K": weight.in_features, "group_size": weight.group_size,
            "padded_N": int(weight.scales.shape[1]), "num_groups": weight.num_groups, "chunks": chunks}


def write_common(out: Path, kind: str) -> dict:
    """Copy the static files and every kernel file; returns the manifest's common entries."""
    from .. import __version__

    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels").mkdir(exist_ok=True)
    static = importlib.resources.files("q4gsw.web").joinpath("static")
    for name in STATIC_FILES:
        (out / name).write_bytes(static.joinpath(name).read_bytes())
    kernels = {}
    for path in sorted(importlib.resources.files("q4gsw.kernels").iterdir(), key=lambda p: p.name):
        if path.name.endswith(".wgsl"):
            data = path.read_bytes()
            (out / "kernels" / path.name).write_bytes(data)
            kernels[path.name.removesuffix(".wgsl")] = {"file": f"kernels/{path.name}", "nbytes": len(data),
                                                         "sha256": hashlib.sha256(data).hexdigest()}
    return {"format": FORMAT, "version": VERSION, "kind": kind, "q4gsw_version": __version__,
            "kernels": kernels, "routing": routing()}


def check_chunk_bytes(fn: str, chunk_bytes) -> int:
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 16:
        raise ShapeError(fn, "chunk_bytes", "an int >= 16 (bytes of a data file and a weight chunk)",
                         describe(chunk_bytes))
    return chunk_bytes


def export_web(out_dir: str | Path, layers: list[WebLayer], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Path:
    """Write a static bundle running `layers` in a browser; returns the manifest's path.

    Args:
        out_dir: the bundle folder (created; files of an earlier bundle are overwritten).
        layers: one or more WebLayer, with distinct names.
        chunk_bytes: the largest data file and weight chunk (see weight_entry).
    """
    fn = "export_web"
    if not layers:
        raise ShapeError(fn, "layers", "at least one WebLayer", "[]")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ShapeError(fn, "layers", "distinct layer names", repr(names))
    check_chunk_bytes(fn, chunk_bytes)
    out = Path(out_dir)
    manifest = write_common(out, "layers")
    writer = DataWriter(out, chunk_bytes)
    weights, tensors = {}, {}
    for layer in layers:
        weights[layer.name] = weight_entry(writer, layer.weight, chunk_bytes)
        if layer.bias is not None:
            tensors[f"{layer.name}.bias"] = writer.add(layer.bias)
    manifest.update(layers=[{"name": layer.name} for layer in layers], weights=weights, tensors=tensors,
                    files=writer.finish(), chunk_bytes=chunk_bytes)
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path
