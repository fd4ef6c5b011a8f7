"""Llama-family decoders for q4gsw: config, checkpoints (safetensors, GGUF), random models, a float64 reference.

Importing this package imports none of safetensors, gguf, tokenizers, torch or transformers;
each function imports what it needs when called (DependencyError if it is missing).
"""

from .checkpoint import load_checkpoint, read_config, save_checkpoint
from .config import ARCHITECTURES, PRESETS, DecoderConfig, Llama3RopeScaling
from .model import CausalLM, GenerateStats, load_model
from .from_gguf import config_from_gguf, load_gguf
from .reference import reference_generate, reference_logits
from .synthetic import random_weights, write_random_checkpoint
from .weights import DecoderWeights, LayerWeights, Linear, concat_rows, hf_shapes

__all__ = [
    "CausalLM", "GenerateStats", "load_model",
    "load_checkpoint", "read_config", "save_checkpoint",
    "ARCHITECTURES", "PRESETS", "DecoderConfig", "Llama3RopeScaling",
    "config_from_gguf", "load_gguf",
    "reference_generate", "reference_logits",
    "random_weights", "write_random_checkpoint",
    "DecoderWeights", "LayerWeights", "Linear", "concat_rows", "hf_shapes",
]
