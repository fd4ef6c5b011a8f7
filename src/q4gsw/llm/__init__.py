"""A Llama-family decoder's weights for q4gsw: config, checkpoint loading (safetensors, GGUF), random models, and a float64 reference forward.

Importing this package imports none of safetensors, gguf, tokenizers, torch or transformers;
each function imports what it needs when called (DependencyError if it is missing).
"""

from .config import ARCHITECTURES, PRESETS, DecoderConfig, Llama3RopeScaling

__all__ = ["ARCHITECTURES", "PRESETS", "DecoderConfig", "Llama3RopeScaling"]
