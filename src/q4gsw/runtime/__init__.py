"""WebGPU runtime: adapter and device, buffers, pipelines."""

from .device import Capabilities, Runtime, get_runtime, reset_runtime

__all__ = ["Capabilities", "Runtime", "get_runtime", "reset_runtime"]
