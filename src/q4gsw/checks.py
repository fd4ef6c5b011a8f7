"""Argument checks shared by every public entry point; each raises a named Q4gswError."""

from __future__ import annotations

import numbers
import sys

import numpy as np

from .errors import DTypeError, GroupSizeError, ShapeError


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
