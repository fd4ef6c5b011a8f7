"""export_model_web: write a browser bundle of a whole decoder (q4gsw.js's loadModel runs it).

The bundle is export.py's, of kind "model": the manifest adds the model's config, every
weight (embedding, per layer qkv / o / gate_up / down, the LM head unless tied) split along
N into chunks of at most chunk_bytes, the norms and biases, the RoPE table (cos, sin) for
max_positions as the Python runtime computes it, and the checkpoint's tokenizer.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..checks import describe
from ..errors import ArgumentError, UnsupportedShapeError
from ..format import PackedWeight
from ..llm.weights import DecoderWeights
from .export import DEFAULT_CHUNK_BYTES, DataWriter, check_chunk_bytes, weight_entry, write_common

#: Positions of the RoPE table (the most a page's KV cache can hold) unless asked otherwise,
#: and never past the model's context: the Python runtime's default (llm/model.py).
DEFAULT_MAX_POSITIONS = 4096
LINEARS = ("qkv", "o", "gate_up", "down")


def model_config(weights: DecoderWeights, max_positions: int) -> dict:
    """The manifest's "model": the DecoderConfig's fields q4gsw.js reads."""
    c = weights.config
    return {
        "architecture": c.architecture, "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_layers": c.num_layers, "num_heads": c.num_heads,
        "num_kv_heads": c.num_kv_heads, "head_dim": c.head_dim, "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "max_positions": max_positions,
        "tie_word_embeddings": weights.lm_head is weights.embed, "qkv_bias": c.qkv_bias, "o_bias": c.o_bias,
        "windows": [c.window(i) or 0 for i in range(c.num_layers)], "bos_token_id": c.bos_token_id,
        "eos_token_ids": list(c.eos_token_ids),
    }


def export_model_web(out_dir: str | Path, model, *, group_size: int = 128, max_positions: int | None = None,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress=None) -> Path:
    """Write a browser bundle of a decoder; returns the manifest's path.

    Args:
        out_dir: the bundle folder (created; files of an earlier bundle are overwritten).
        model: anything q4gsw.load_model accepts (a Hugging Face or q4gsw model directory, a
            GGUF file), or DecoderWeights.
        group_size: of the linears quantized at load (as load_model).
        max_positions: rows of the RoPE table: the most positions (prompt + new tokens) a
            page can use; default min(4096, the model's max_position_embeddings).
        chunk_bytes: the largest data file and weight chunk; a device must bind this many
            bytes (WebGPU's default maxStorageBufferBindingSize is 128 MiB, the default here).
        progress: as load_checkpoint's.
    Raises:
        UnsupportedShapeError for a linear kept dense (the GPU runtime runs int4 linears only),
        before anything is written. (Shapes are checked by q4gsw.js's loadModel, as CausalLM
        checks them.)
    """
    fn = "export_model_web"
    check_chunk_bytes(fn, chunk_bytes)
    if isinstance(model, DecoderWeights):
        weights = model
    elif isinstance(model, (str, os.PathLike)):
        from ..llm.checkpoint import load_checkpoint

        weights = load_checkpoint(model, group_size=group_size, progress=progress)
    else:
        raise ArgumentError(fn, "model", "a checkpoint path or DecoderWeights", describe(model))
    c = weights.config
    limit = c.max_position_embeddings
    max_positions = min(DEFAULT_MAX_POSITIONS, limit) if max_positions is None else max_positions
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) or not 1 <= max_positions <= limit:
        raise ArgumentError(fn, "max_positions", f"an int in [1, {limit}] (the model's context)", describe(max_positions))
    named = [("embed", weights.embed)] + [(f"layers.{i}.{name}", getattr(layer, name))
                                         for i, layer in enumerate(weights.layers) for name in LINEARS]
    if weights.lm_head is not weights.embed:
        named.append(("lm_head", weights.lm_head))
    dense = [name for name, w in named if not isinstance(w, PackedWeight)]
    if dense:
        raise UnsupportedShapeError(f"{', '.join(dense)} kept dense; the browser runtime runs int4 linears only")
    out = Path(out_dir)
    manifest = write_common(out, "model")
    writer = DataWriter(out, chunk_bytes)
    manifest["weights"] = {name: weight_entry(writer, w, chunk_bytes) for name, w in named}
    tensors = {}
    for i, layer in enumerate(weights.layers):
        tensors[f"layers.{i}.attn_norm"] = writer.add(layer.attn_norm.astype(np.float32))
        tensors[f"layers.{i}.mlp_norm"] = writer.add(layer.mlp_norm.astype(np.float32))
        if layer.qkv_bias is not None:
            tensors[f"layers.{i}.qkv_bias"] = writer.add(layer.qkv_bias.astype(np.float32))
        if layer.o_bias is not None:
            tensors[f"layers.{i}.o_bias"] = writer.add(layer.o_bias.astype(np.float32))
    tensors["final_norm"] = writer.add(weights.final_norm.astype(np.float32))
    cos, sin = c.rope_cos_sin(np.arange(max_positions))
    tensors["rope.cos_sin"] = writer.add(np.stack([cos, sin], axis=-1).astype(np.float32))
    manifest["tensors"] = tensors
    manifest["files"] = writer.finish()
    manifest["chunk_bytes"] = chunk_bytes
    manifest["model"] = model_config(weights, max_positions)
    manifest["tokenizer"] = None
    if weights.tokenizer_path:
        shutil.copyfile(weights.tokenizer_path, out / "tokenizer.json")
        data = (out / "tokenizer.json").read_bytes()
        manifest["tokenizer"] = {"file": "tokenizer.json", "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path
