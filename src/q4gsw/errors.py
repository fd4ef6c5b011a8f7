"""The Q4gswError hierarchy: every error the library raises on purpose."""

from __future__ import annotations


class Q4gswError(Exception):
    """Base class of every error q4gsw raises on purpose."""


class ArgumentError(Q4gswError, ValueError):
    """An argument is malformed. Names the argument, what was expected and what came."""

    def __init__(self, function: str, argument: str, expected: str, got: str):
        self.function = function
        self.argument = argument
        self.expected = expected
        self.got = got
        super().__init__(f"{function}: argument '{argument}': expected {expected}, got {got}")


class DTypeError(ArgumentError, TypeError):
    """An argument has the wrong type or dtype."""


class ShapeError(ArgumentError):
    """An argument has the wrong rank or shape, or shapes disagree."""


class GroupSizeError(ArgumentError):
    """The group size is not a positive integer, or the scales have too few groups."""


class ValueRangeError(ArgumentError):
    """An argument holds values outside what it may hold (NaN in a weight to quantize,
    int4 values outside [-8, 7], float64 beyond float32 range)."""


class SizeLimitError(ArgumentError):
    """A size exceeds what the adapter or 32-bit indexing can address."""


class FeatureError(ArgumentError):
    """An option needs a WebGPU feature the device was not created with (kv_cache="f16"
    without `shader-f16`): names the option, the feature and what the adapter offers instead."""

    def __init__(self, function: str, argument: str, expected: str, got: str, feature: str):
        self.feature = feature
        super().__init__(function, argument, expected, got)


class UnsupportedShapeError(Q4gswError):
    """A kernel was asked for a problem it does not support (the reason is in the message)."""


class DeviceError(Q4gswError, RuntimeError):
    """No usable WebGPU adapter, or the device was lost."""


class ShaderError(Q4gswError):
    """A WGSL kernel failed to compile; names the kernel key and its .wgsl file."""


class ProfilerError(Q4gswError):
    """Profiling was asked for on an adapter without `timestamp-query`."""


class FormatError(ArgumentError):
    """A file or foreign tensor is not in a form q4gsw can read: another quant type, not a
    q4gsw file, a newer q4gsw format version, inconsistent metadata."""


class AsymmetricError(FormatError):
    """A foreign int4 weight has zero points that a symmetric q * scale format cannot carry
    exactly (the message says which group and why)."""


class DependencyError(Q4gswError, ImportError):
    """An optional dependency (safetensors, gguf, onnx, torch, torchao) is not installed."""
