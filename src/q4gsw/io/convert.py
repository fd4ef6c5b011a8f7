"""Whole-file conversion: a safetensors or GGUF checkpoint to a q4gsw safetensors file."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable

import numpy as np

from ..checks import existing_file, positive_int
from ..errors import FormatError
from ..quantize import quantize
from ._deps import require
from .from_gguf import gguf_tensor_to_packed
from .native import save
from .report import ConvertedTensor

log = logging.getLogger("q4gsw")

#: Which tensors are quantized: 2-D float tensors whose name ends with "weight" (linear and
#: embedding weights in Hugging Face, ExecuTorch and GGUF naming). 1-D weights (norms),
#: biases and every other tensor are skipped, with the reason recorded.
FLOAT_TYPES_SAFETENSORS = ("F32", "F16", "BF16", "F64")


@dataclasses.dataclass
class ConvertReport:
    """The outcome of quantize_file: one entry per input tensor, in file order."""

    source: str
    tensors: list[ConvertedTensor]

    def count(self, action: str) -> int:
        return sum(t.action == action for t in self.tensors)


def detect_format(path: str | os.PathLike) -> str:
    """'gguf' or 'safetensors', from the file's first bytes (not its name)."""
    fn = "detect_format"
    path = existing_file(fn, "path", path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        return "safetensors"
    raise FormatError(fn, "path", "a safetensors or GGUF file", f"{os.fspath(path)!r} (first bytes {head[:8]!r})")


def quantize_file(src: str | os.PathLike, dst: str | os.PathLike, *, group_size: int = 128,
                  progress: Callable[[Iterable, int], Iterable] | None = None) -> ConvertReport:
    """Convert a checkpoint to a q4gsw file (see q4gsw.io.save).

    safetensors input: every 2-D float tensor (F32, F16, BF16, F64) whose name ends with
    "weight" is quantized with q4gsw.quantize(group_size); other tensors are skipped.
    GGUF input: Q4_0 tensors are imported losslessly (group size 32, whatever group_size
    says); 2-D F32/F16/BF16 "weight" tensors are quantized; other types are skipped.
    Tensors are read one at a time. Skipped tensors are not written (the file holds only
    PackedWeights); the report says why each was skipped.

    Args:
        src: a safetensors or GGUF file (told apart by its first bytes).
        dst: the q4gsw safetensors file to write.
        group_size: group size for the float tensors that are quantized.
        progress: optional wrapper `progress(iterable, total)` yielding the same items
            (e.g. tqdm); called once over the input's tensor names.
    Returns:
        ConvertReport, one entry per input tensor.
    """
    fn = "quantize_file"
    gs = positive_int(fn, "group_size", group_size)
    kind = detect_format(src)
    wrap = progress or (lambda items, total: items)
    weights, entries = {}, []
    if kind == "gguf":
        gguf = require("gguf", fn)
        try:
            reader = gguf.GGUFReader(src)
        except (ValueError, OSError, KeyError, IndexError) as exc:
            raise FormatError(fn, "src", "a GGUF file", f"{os.fspath(src)!r} ({exc})") from exc
        q4_0 = gguf.GGMLQuantizationType.Q4_0
        floats = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
        for t in wrap(reader.tensors, len(reader.tensors)):
            qtype = gguf.GGMLQuantizationType(t.tensor_type)
            ne = [int(s) for s in t.shape]
            if qtype == q4_0 and len(ne) == 2:
                weights[t.name] = gguf_tensor_to_packed(t, function=fn)
                entries.append(ConvertedTensor(t.name, "imported", f"Q4_0 {ne[1]}x{ne[0]}, lossless"))
            elif qtype in floats and len(ne) == 2 and t.name.endswith("weight"):
                w = gguf.quants.dequantize(t.data, qtype).reshape(ne[1], ne[0]).astype(np.float32)
                weights[t.name] = quantize(w, group_size=gs)
                entries.append(ConvertedTensor(t.name, "quantized", f"{qtype.name} {ne[1]}x{ne[0]}"))
            else:
                entries.append(ConvertedTensor(t.name, "skipped", _skip_reason(t.name, qtype.name, ne[::-1], qtype in floats or qtype == q4_0)))
    else:
        safetensors = require("safetensors", fn)
        try:
            f = safetensors.safe_open(os.fspath(src), framework="np")
        except (safetensors.SafetensorError, OSError) as exc:
            raise FormatError(fn, "src", "a safetensors file", f"{os.fspath(src)!r} ({exc})") from exc
        with f:
            keys = list(f.keys())
            for name in wrap(keys, len(keys)):
                sl = f.get_slice(name)
                dtype, shape = sl.get_dtype(), list(sl.get_shape())
                if dtype in FLOAT_TYPES_SAFETENSORS and len(shape) == 2 and name.endswith("weight") and 0 not in shape:
                    if dtype == "BF16":
                        require("ml_dtypes", fn)  # registers numpy's bfloat16 for safetensors
                    w = f.get_tensor(name).astype(np.float32)
                    weights[name] = quantize(w, group_size=gs)
                    entries.append(ConvertedTensor(name, "quantized", f"{dtype} {shape[0]}x{shape[1]}"))
                else:
                    entries.append(ConvertedTensor(name, "skipped", _skip_reason(name, dtype, shape, dtype in FLOAT_TYPES_SAFETENSORS)))
    for e in entries:
        log.info("%s %s: %s", e.action, e.name, e.detail)
    if not weights:
        raise FormatError(fn, "src", "at least one tensor to quantize or import",
                          f"none in {os.fspath(src)!r} ({len(entries)} tensors, all skipped)")
    save(dst, weights, {"source": kind, "source_file": os.path.basename(os.fspath(src)),
                        "float_group_size": str(gs)})
    return ConvertReport(os.fspath(src), entries)


def _skip_reason(name: str, dtype: str, shape: list[int], is_float_or_q4_0: bool) -> str:
    if not is_float_or_q4_0:
        return f"type {dtype}: neither a float type nor Q4_0"
    if len(shape) != 2:
        return f"{len(shape)}-D {dtype} {shape}: only 2-D weights are quantized"
    if not name.endswith("weight"):
        return f"{dtype} {shape}: name does not end with 'weight'"
    return f"{dtype} {shape}: empty"
