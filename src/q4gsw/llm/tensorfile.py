"""Read a safetensors file with numpy alone: its header checked against the file size, then float tensors on demand.

numpy has no bfloat16, and the safetensors package's numpy loader cannot return one, so
the bytes are read here: a BF16 value is the top half of a float32. Reading the header
first also lets a loader check every name, dtype and shape, and that every tensor lies
inside the file, before any tensor is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from ..errors import FormatError

#: Bytes per element of each safetensors dtype.
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
            "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
#: The dtypes read_float converts to float32.
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_NUMPY = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}  # safetensors is little-endian


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One header entry: dtype (safetensors name), shape, and the byte offset in the file."""

    dtype: str
    shape: tuple[int, ...]
    offset: int


class SafetensorsFile:
    """The header of one safetensors file.

    Attributes:
        path: the file.
        tensors: {name: TensorInfo}, in header order.
        metadata: the header's "__metadata__" (str -> str), {} when absent.
    Raises:
        FormatError: the file is shorter than its header says, the header is not JSON, or an
            entry is malformed or points outside the file (each names the file and tensor).
    """

    def __init__(self, path: str | os.PathLike):
        fn = "SafetensorsFile"
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FormatError(fn, "path", "an existing safetensors file", repr(self.path))
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise FormatError(fn, "path", "a safetensors file (u64 header length, JSON header, data)",
                                  f"{self.path!r}: header length {n} past the end of the {size}-byte file "
                                  "(truncated or not safetensors)")
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(fn, "path", "a JSON safetensors header", f"{self.path!r} ({exc})") from exc
        if not isinstance(header, dict):
            raise FormatError(fn, "path", "a JSON object as header", f"{self.path!r}: {type(header).__name__}")
        self.metadata = header.pop("__metadata__", None) or {}
        data_start, data_size = 8 + n, size - 8 - n
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            try:
                dtype, shape = entry["dtype"], tuple(int(s) for s in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
                nbytes = math.prod(shape) * ITEMSIZE[dtype]
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(fn, f"{self.path}: tensor {name!r}", "dtype, shape and data_offsets",
                                  repr(entry)[:120]) from exc
            if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != nbytes:
                raise FormatError(fn, f"{self.path}: tensor {name!r}", f"{nbytes} bytes for {dtype} {list(shape)}",
                                  f"data_offsets [{begin}, {end}]")
            if end > data_size:
                raise FormatError(fn, f"{self.path}: tensor {name!r}", f"data inside the {data_size} data bytes",
                                  f"bytes [{begin}, {end}): the file is truncated")
            self.tensors[name] = TensorInfo(dtype, shape, data_start + begin)

    def read_float(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 (F32, F16, BF16 or F64 in the file), read from disk now.

        Returns:
            ndarray float32 of the tensor's shape.
        """
        info = self.tensors[name]
        if info.dtype not in FLOAT_DTYPES:
            raise FormatError("SafetensorsFile.read_float", f"{self.path}: tensor {name!r}",
                              f"a float tensor ({', '.join(FLOAT_DTYPES)})", info.dtype)
        count = math.prod(info.shape)
        data = np.fromfile(self.path, dtype=_NUMPY[info.dtype], count=count, offset=info.offset)
        if info.dtype == "BF16":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        return data.astype(np.float32, copy=False).reshape(info.shape)
