"""GGUF Q4_0 tensors to PackedWeight: a lossless repack of llama.cpp's blocks."""

from __future__ import annotations

import os

import numpy as np

from ..checks import as_array, describe, existing_file, positive_int
from ..errors import FormatError, ShapeError
from ..format import PackedWeight, pack_nibbles
from ._deps import require
from .report import ConvertedTensor, Imported, note_skipped

#: Elements per Q4_0 block (ggml's QK4_0) and bytes per block: fp16 d, then 16 bytes of nibbles.
Q4_0_BLOCK = 32
Q4_0_BLOCK_BYTES = 2 + Q4_0_BLOCK // 2


def from_gguf_q4_0(blocks: np.ndarray, *, in_features: int) -> PackedWeight:
    """Repack GGUF Q4_0 rows into a PackedWeight (group size 32), losslessly.

    A Q4_0 block (ggml's block_q4_0) is an fp16 scale d followed by 16 bytes; byte j holds
    element j in its low nibble and element j + 16 in its high nibble, and the value is
    (nibble - 8) * d. Our stored u is q + 8, which is the nibble itself, so only the nibble
    order changes; d becomes the fp32 scale (exact, and it may be negative). The result's
    dequantize() equals gguf.quants.dequantize exactly.

    Args:
        blocks: (N, K/32 * 18) uint8, one row of Q4_0 blocks per output feature (as
            gguf.GGUFReader gives a Q4_0 tensor's `.data`).
        in_features: K, a multiple of 32.
    Returns:
        PackedWeight with weights (N, K/2) and scales (K/32, N) float32, group_size 32.
    """
    fn = "from_gguf_q4_0"
    blocks = as_array(fn, "blocks", blocks, np.uint8, ndim=2)
    k = positive_int(fn, "in_features", in_features, ShapeError)
    if k % Q4_0_BLOCK:
        raise ShapeError(fn, "in_features", f"a multiple of {Q4_0_BLOCK} (Q4_0 blocks are whole)", repr(k))
    n, row_bytes = blocks.shape
    nb = k // Q4_0_BLOCK
    if n == 0 or row_bytes != nb * Q4_0_BLOCK_BYTES:
        raise ShapeError(fn, "blocks", f"(N >= 1, {nb * Q4_0_BLOCK_BYTES}) bytes for K={k}", describe(blocks))
    b = blocks.reshape(n, nb, Q4_0_BLOCK_BYTES)
    d = np.ascontiguousarray(b[:, :, :2]).view(np.float16)[:, :, 0]  # (N, nb)
    qs = b[:, :, 2:]  # (N, nb, 16)
    u = np.concatenate([qs & 0x0F, qs >> 4], axis=2)  # (N, nb, 32): element j then j + 16
    weights = pack_nibbles(u.reshape(n, k))
    scales = np.ascontiguousarray(d.T.astype(np.float32))
    return PackedWeight(weights, scales, Q4_0_BLOCK, in_features=k)


def read_gguf(path: str | os.PathLike, *, names=None) -> Imported:
    """Read the Q4_0 tensors of a GGUF file as PackedWeights (gguf.GGUFReader, no copy of
    the file into memory beyond the tensors read).

    Args:
        path: the .gguf file.
        names: tensor names to read; each must be a 2-D Q4_0 tensor. None reads every Q4_0
            tensor and leaves out the rest (float norms and embeddings, other quant types:
            not weights this format holds unchanged; see q4gsw.io.quantize_file to quantize
            float tensors), listing each in the result's `.skipped` with the reason and
            logging one warning that names them.
    Returns:
        Imported: {name: PackedWeight} in file order, with `.skipped` (ConvertedTensor list).
    """
    fn = "read_gguf"
    gguf = require("gguf", fn)
    reader = _open(fn, path, gguf)
    by_name = {t.name: t for t in reader.tensors}
    skipped = []
    if names is None:
        chosen = [t for t in reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q4_0]
        skipped = [ConvertedTensor(t.name, "skipped", _skip_reason(gguf, t)) for t in reader.tensors
                   if t.tensor_type != gguf.GGMLQuantizationType.Q4_0]
        if not chosen:
            types = sorted({t.tensor_type.name for t in reader.tensors})
            raise FormatError(fn, "path", "a GGUF file with Q4_0 tensors", f"{os.fspath(path)!r} with types {types}")
    else:
        if isinstance(names, str):
            names = [names]
        missing = [name for name in names if name not in by_name]
        if missing:
            raise FormatError(fn, "names", f"tensor names in {os.fspath(path)!r}", f"unknown {missing[:5]}")
        chosen = [by_name[name] for name in names]
    result = Imported(((t.name, gguf_tensor_to_packed(t, function=fn)) for t in chosen), skipped)
    return note_skipped(fn, repr(os.fspath(path)), result, len(reader.tensors))


def _skip_reason(gguf, tensor) -> str:
    """Why read_gguf leaves a tensor out: its type and shape (GGUF order reversed to N x K)."""
    qtype = gguf.GGMLQuantizationType(tensor.tensor_type).name
    shape = "x".join(str(int(s)) for s in reversed(list(tensor.shape)))
    if qtype in ("F32", "F16", "BF16", "F64"):
        return f"{qtype} {shape}: a float tensor (keep it dense, or quantize it: q4gsw.io.quantize_file)"
    return f"{qtype} {shape}: not Q4_0, the one GGUF type that repacks losslessly"


def gguf_tensor_to_packed(tensor, *, function: str = "gguf_tensor_to_packed") -> PackedWeight:
    """One gguf.ReaderTensor (2-D, Q4_0) to a PackedWeight; FormatError for any other type."""
    gguf = require("gguf", function)
    qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
    if qtype != gguf.GGMLQuantizationType.Q4_0:
        raise FormatError(
            function, "tensor", f"a Q4_0 tensor ({tensor.name!r})",
            f"type {qtype.name}: only Q4_0 is a symmetric int4 layout that repacks losslessly; "
            "dequantize it and use q4gsw.quantize instead",
        )
    shape = [int(s) for s in tensor.shape]  # ggml order: ne[0] = K (fastest), ne[1] = N
    if len(shape) != 2 and not (len(shape) > 2 and all(s == 1 for s in shape[2:])):
        raise FormatError(function, "tensor", f"a 2-D tensor ({tensor.name!r})", f"shape (ne order) {shape}")
    k, n = shape[0], shape[1]
    data = np.asarray(tensor.data).reshape(n, -1)
    return from_gguf_q4_0(data, in_features=k)


def _open(function: str, path, gguf):
    """gguf.GGUFReader(path), with a FormatError for a file that is not GGUF."""
    path = existing_file(function, "path", path)
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise FormatError(function, "path", "a GGUF file", f"{os.fspath(path)!r} ({exc})") from exc
