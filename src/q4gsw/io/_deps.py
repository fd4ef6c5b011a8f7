"""Import an optional dependency of q4gsw.io, or raise DependencyError naming the extra."""

from __future__ import annotations

import importlib

from ..errors import DependencyError

_EXTRA = {"safetensors": "io", "gguf": "io", "onnx": "io", "torch": "torch", "torchao": "torch", "tqdm": "torch", "ml_dtypes": "io"}


def require(module: str, function: str):
    """Return the imported module, or raise DependencyError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA.get(module.split(".")[0], "io")
        raise DependencyError(
            f"{function}: needs the '{module}' package, which is not installed "
            f"(pip install 'q4gsw[{extra}]'): {exc}"
        ) from exc
