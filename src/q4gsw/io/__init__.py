"""Importers and files: foreign int4 weights to PackedWeight, and q4gsw's own safetensors files.

Importing this package imports none of safetensors, gguf, onnx, torch or torchao; each
function imports what it needs when called (DependencyError if it is missing).
"""

from .convert import ConvertReport, detect_format, quantize_file
from .from_gguf import from_gguf_q4_0, gguf_tensor_to_packed, read_gguf
from .from_mlc import MLC_SCHEMES, from_mlc
from .from_onnx import from_matmul_nbits, read_onnx
from .from_torchao import from_torchao, from_torchao_intx, from_torchao_plain
from .native import FORMAT_VERSION, load, read_header, save
from .report import ConvertedTensor, Imported

__all__ = [
    "ConvertReport", "ConvertedTensor", "detect_format", "quantize_file",
    "from_gguf_q4_0", "gguf_tensor_to_packed", "read_gguf",
    "MLC_SCHEMES", "from_mlc",
    "from_matmul_nbits", "read_onnx",
    "from_torchao", "from_torchao_intx", "from_torchao_plain",
    "FORMAT_VERSION", "load", "read_header", "save",
    "Imported",
]
