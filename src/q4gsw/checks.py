"""Argument checks shared by every public entry point; each raises a named Q4gswError."""

from __future__ import annotations

import numbers
import os
import sys

import numpy as np

from .errors import DTypeError, FormatError, GroupSizeError, ShapeError, ValueRangeError

#: The float dtypes an importer accepts (each exact in float32).
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def describe(value) -> str:
    """A short description of a value for error messages: type, dtype and shape."""
    if isinstance(value, np.ndarray):
        return f"ndarray dtype={value.dtype} shape={value.shape}"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return f"torch.Tensor dtype={value.dtype} shape={tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def is_torch_tensor(value) -> bool:
    """True when value is a torch.Tensor; never imports torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_array(function: str, argument: str, value, dtype: np.dtype, ndim: int | None = None,
             *, contiguous: bool = True) -> np.ndarray:
    """Return value as an ndarray of exactly `dtype`; never converts dtypes.

    Torch tensors are accepted (moved to the CPU); other array-likes are refused, so that
    nothing is cast silently. With contiguous=False a strided view is returned as it is, so
    that the caller can check shapes and sizes before paying for a copy (a broadcast view
    can describe far more elements than memory holds).
    """
    dtype = np.dtype(dtype)
    if is_torch_tensor(value):
        arr = value.detach().cpu()
        if str(arr.dtype) != f"torch.{dtype.name}":
            raise DTypeError(function, argument, f"{dtype.name} tensor", describe(value))
        arr = arr.numpy()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise DTypeError(function, argument, f"numpy.ndarray or torch.Tensor of {dtype.name}", describe(value))
    if arr.dtype != dtype:
        raise DTypeError(function, argument, f"dtype {dtype.name}", describe(value))
    if ndim is not None and arr.ndim != ndim:
        raise ShapeError(function, argument, f"{ndim}-D array", describe(value))
    if not contiguous or arr.flags.c_contiguous:
        return arr
    return arr.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def positive_int(function: str, argument: str, value, error=GroupSizeError) -> int:
    """Return value as an int if it is a positive integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(function, argument, "a positive int", describe(value))
    if int(value) <= 0:
        raise error(function, argument, "a positive int", repr(int(value)))
    return int(value)


def existing_file(function: str, argument: str, path) -> str:
    """path (str or os.PathLike) as a str, when it names an existing file; else FormatError."""
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(function, argument, "a path (str or os.PathLike)", describe(path))
    if not os.path.isfile(path):
        raise FormatError(function, argument, "an existing file", repr(os.fspath(path)))
    return os.fspath(path)


def foreign_array(function: str, argument: str, value, dtypes, *, ndim: int | None = None) -> np.ndarray:
    """An importer's input as a contiguous ndarray of its own dtype.

    Args:
        value: an ndarray or a torch tensor (any device; moved to the CPU).
        dtypes: the accepted dtype names (e.g. ("int8", "uint8")).
        ndim: the required rank, if any.
    """
    if is_torch_tensor(value):
        if str(value.dtype).removeprefix("torch.") not in dtypes:
            raise DTypeError(function, argument, f"a tensor of {' or '.join(dtypes)}", describe(value))
        value = value.detach().cpu()
        value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).contiguous().numpy()
    elif not isinstance(value, np.ndarray) or value.dtype.name not in dtypes:
        raise DTypeError(function, argument, f"an array of {' or '.join(dtypes)}", describe(value))
    if ndim is not None and value.ndim != ndim:
        raise ShapeError(function, argument, f"a {ndim}-D array", describe(value))
    return np.ascontiguousarray(value)


def float_array(function: str, argument: str, value, *, ndim: int | None = None) -> np.ndarray:
    """float32, float16 or bfloat16 values (ndarray or torch tensor) as float32, exactly;
    every value finite."""
    out = foreign_array(function, argument, value, FLOAT_DTYPES, ndim=ndim).astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueRangeError(function, argument, "finite values", "NaN or Inf")
    return out
