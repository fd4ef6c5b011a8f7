"""q4gsw: ExecuTorch's linear_q4gsw (4-bit groupwise-symmetric weight-only linear) on WebGPU."""

from .errors import (
    ArgumentError,
    AsymmetricError,
    DependencyError,
    FormatError,
    DeviceError,
    DTypeError,
    FeatureError,
    GroupSizeError,
    ProfilerError,
    Q4gswError,
    ShaderError,
    ShapeError,
    SizeLimitError,
    UnsupportedShapeError,
    ValueRangeError,
)
from .format import DenseWeight, PackedWeight, linear_reference, pack_int4, unpack_int4
from .ops.dense import dense_linear
from .ops.linear import linear, linear_dq8ca_q4gsw, linear_q4gsw
from .profile import profile
from .quantize import (QuantizationError, corrected_bias, quantization_error, quantize, quantize_gptq,
                       quantize_with_scales, search_scales)
from .runtime import get_runtime

__version__ = "0.1.0"


def __getattr__(name):
    """save/load (q4gsw.io) and load_model (q4gsw.llm) are imported on first use, so importing
    q4gsw imports no safetensors, tokenizers or gguf."""
    if name in ("save", "load"):
        from . import io

        return getattr(io, name)
    if name == "load_model":
        from .llm import load_model

        return load_model
    raise AttributeError(f"module 'q4gsw' has no attribute {name!r}")


__all__ = [
    "ArgumentError", "DeviceError", "DTypeError", "FeatureError", "GroupSizeError", "ProfilerError", "Q4gswError",
    "ShaderError", "ShapeError", "SizeLimitError", "UnsupportedShapeError", "ValueRangeError",
    "PackedWeight", "linear_reference", "pack_int4", "unpack_int4",
    "linear", "linear_dq8ca_q4gsw", "linear_q4gsw", "profile",
    "QuantizationError", "quantization_error", "quantize", "quantize_gptq", "search_scales",
    "quantize_with_scales", "corrected_bias", "get_runtime",
    "AsymmetricError", "DependencyError", "FormatError", "save", "load", "load_model",
    "DenseWeight", "dense_linear",
]
