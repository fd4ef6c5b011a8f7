"""Load a decoder checkpoint (Hugging Face safetensors, q4gsw model directory, GGUF) as DecoderWeights; save one.

Every loader reads the config and every tensor header first and checks names and shapes
against the config, so a wrong file fails before any tensor is read or quantized.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable

import numpy as np

from ..checks import describe, positive_int
from ..errors import FormatError, ShapeError
from ..format import PackedWeight
from ..io import native
from ..io._deps import require
from .config import DecoderConfig
from .tensorfile import FLOAT_DTYPES, SafetensorsFile
from .weights import (DOWN, FINAL_NORM, LM_HEAD, O_PROJ, DecoderWeights, LayerWeights, Linear, Progress,
                      build_weights, check_names, hf_shapes)

log = logging.getLogger("q4gsw")

__all__ = ["DecoderWeights", "LayerWeights", "load_checkpoint", "save_checkpoint", "read_config"]

#: Files of a q4gsw model directory (save_checkpoint): the int4 linears as a q4gsw.io.native
#: file, and the float tensors (norms, biases, linears kept dense) as plain safetensors.
Q4GSW_FILE, FLOAT_FILE = "model.q4gsw.safetensors", "model.float.safetensors"
INDEX_FILE, SINGLE_FILE = "model.safetensors.index.json", "model.safetensors"
#: Header metadata that marks a q4gsw model directory's files.
MODEL_FORMAT = {"llm.format": "q4gsw-decoder", "llm.format_version": "1"}


def load_checkpoint(path: str | os.PathLike, *, group_size: int = 128,
                    keep_dense: Callable[[str], bool] | None = None, progress: Progress = None) -> DecoderWeights:
    """Load a decoder's weights, quantizing float linears to int4.

    Accepts:
      - a Hugging Face directory: config.json, then model.safetensors or shards listed in
        model.safetensors.index.json (F32, F16, BF16 or F64); every linear and the token
        embedding are quantized with q4gsw.quantize(group_size);
      - a q4gsw model directory written by save_checkpoint (loaded as saved);
      - a GGUF file of a llama-architecture model (see q4gsw.llm.from_gguf.load_gguf).
    A tokenizer.json next to the weights is recorded in tokenizer_path.

    Args:
        path: the directory or .gguf file.
        group_size: group size of the linears quantized here (Q4_0 tensors keep 32).
        keep_dense: Hugging Face weight name -> True to keep that linear float32 (mixed precision).
        progress: None, True (tqdm if installed, else lines on stderr) or progress(items, total).
    Raises:
        FormatError / ShapeError naming the file and tensor: no such path, unsupported
        architecture or RoPE, a missing, unexpected or mis-shaped tensor, a truncated file,
        an index that names a missing shard.
    """
    fn = "load_checkpoint"
    gs = positive_int(fn, "group_size", group_size)
    if not isinstance(path, (str, os.PathLike)):
        raise FormatError(fn, "path", "a path (str or os.PathLike)", describe(path))
    p = os.fspath(path)
    if os.path.isdir(p):
        if os.path.isfile(os.path.join(p, FLOAT_FILE)):
            return _load_q4gsw(p)
        return _load_hf(p, gs, keep_dense, progress)
    if os.path.isfile(p):
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            from .from_gguf import load_gguf

            return load_gguf(p, group_size=gs, keep_dense=keep_dense, progress=progress)
        raise FormatError(fn, "path", "a checkpoint directory or a GGUF file", f"{p!r} (first bytes {magic!r})")
    raise FormatError(fn, "path", "an existing checkpoint directory or GGUF file", f"{p!r}: no such file or directory")


def read_config(directory: str) -> DecoderConfig:
    """The DecoderConfig of directory/config.json."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FormatError("read_config", "path", "a directory with config.json", f"{directory!r} without it")
    try:
        with open(path, encoding="utf-8") as f:
            return DecoderConfig.from_hf(json.load(f), source=path)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError("read_config", "path", "a JSON config.json", f"{path!r} ({exc})") from exc


def _tokenizer(directory: str) -> str | None:
    path = os.path.join(directory, "tokenizer.json")
    return path if os.path.isfile(path) else None


def _load_hf(directory: str, group_size: int, keep_dense, progress) -> DecoderWeights:
    fn = "load_checkpoint"
    config = read_config(directory)
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            shard_names = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(fn, index_path, "a JSON index with a 'weight_map'", f"{exc!r}") from exc
        shards = {}
        for shard in shard_names:
            if not os.path.isfile(os.path.join(directory, shard)):
                raise FormatError(fn, index_path, "shards that exist", f"{shard!r} missing from {directory!r}")
            shards[shard] = SafetensorsFile(os.path.join(directory, shard))
        where = {}
        for name, shard in weight_map.items():
            if name not in shards[shard].tensors:
                raise FormatError(fn, index_path, f"tensor {name!r} in {shard!r}", "not in that shard's header")
            where[name] = shards[shard]
    elif os.path.isfile(os.path.join(directory, SINGLE_FILE)):
        single = SafetensorsFile(os.path.join(directory, SINGLE_FILE))
        where = dict.fromkeys(single.tensors, single)
    else:
        raise FormatError(fn, "path", f"{SINGLE_FILE} or {INDEX_FILE}", f"{directory!r} with neither")
    expected = hf_shapes(config)
    ignored = [n for n in where if n.endswith("rotary_emb.inv_freq") or (n == LM_HEAD and config.tie_word_embeddings)]
    check_names(fn, directory, expected, [n for n in where if n not in ignored])
    for name, shape in expected.items():
        info = where[name].tensors[name]
        if info.shape != shape:
            raise ShapeError(fn, f"{where[name].path}: tensor {name!r}", f"shape {shape} (from config.json)",
                             str(info.shape))
        if info.dtype not in FLOAT_DTYPES:
            raise FormatError(fn, f"{where[name].path}: tensor {name!r}", f"one of {FLOAT_DTYPES}", info.dtype)
    if ignored:
        log.info("load_checkpoint: ignoring %s", ", ".join(ignored))
    return build_weights(config, lambda name: where[name].read_float(name), group_size=group_size,
                         keep_dense=keep_dense, progress=progress, tokenizer_path=_tokenizer(directory),
                         source=directory)


# --- q4gsw model directory ----------------------------------------------------------------------


def _layout(config: DecoderConfig) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int]]]:
    """({fused linear name: (N, K)}, {float vector name: (n,)}) of a q4gsw model directory."""
    c = config
    linears, vectors = {"model.embed_tokens": (c.vocab_size, c.hidden_size)}, {}
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        linears[p + "self_attn.qkv_proj"] = (c.q_size + 2 * c.kv_size, c.hidden_size)
        linears[p + O_PROJ] = (c.hidden_size, c.q_size)
        linears[p + "mlp.gate_up_proj"] = (2 * c.intermediate_size, c.hidden_size)
        linears[p + DOWN] = (c.hidden_size, c.intermediate_size)
        if c.qkv_bias:
            vectors[p + "self_attn.qkv_proj.bias"] = (c.q_size + 2 * c.kv_size,)
        if c.o_bias:
            vectors[p + O_PROJ + ".bias"] = (c.hidden_size,)
        vectors[p + "input_layernorm.weight"] = vectors[p + "post_attention_layernorm.weight"] = (c.hidden_size,)
    vectors[FINAL_NORM] = (c.hidden_size,)
    if not c.tie_word_embeddings:
        linears["lm_head"] = (c.vocab_size, c.hidden_size)
    return linears, vectors


def _tensors(weights: DecoderWeights) -> dict[str, Linear]:
    """Every tensor of weights under its q4gsw model directory name (see _layout)."""
    out = {"model.embed_tokens": weights.embed}
    for i, layer in enumerate(weights.layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.qkv_proj": layer.qkv, p + O_PROJ: layer.o, p + "mlp.gate_up_proj": layer.gate_up,
                    p + DOWN: layer.down, p + "self_attn.qkv_proj.bias": layer.qkv_bias,
                    p + O_PROJ + ".bias": layer.o_bias, p + "input_layernorm.weight": layer.attn_norm,
                    p + "post_attention_layernorm.weight": layer.mlp_norm})
    out[FINAL_NORM] = weights.final_norm
    if weights.lm_head is not weights.embed:
        out["lm_head"] = weights.lm_head
    return {name: t for name, t in out.items() if t is not None}


def save_checkpoint(weights: DecoderWeights, out_dir: str | os.PathLike) -> None:
    """Write a q4gsw model directory that load_checkpoint reads back unchanged.

    Files: config.json (DecoderConfig.to_hf), model.q4gsw.safetensors (the int4 linears, as
    q4gsw.io.save writes them: q4gsw's versioned header, readable by q4gsw.io.load),
    model.float.safetensors (norms, biases and dense linears, float32; a dense linear NAME is
    stored as NAME.weight), and a copy of the tokenizer.json when there is one.

    Args:
        weights: the DecoderWeights.
        out_dir: the directory (created if needed; these files are replaced).
    """
    fn = "save_checkpoint"
    if not isinstance(weights, DecoderWeights):
        raise FormatError(fn, "weights", "DecoderWeights", describe(weights))
    st_numpy = require("safetensors.numpy", fn)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    tensors = _tensors(weights)
    packed = {n: t for n, t in tensors.items() if isinstance(t, PackedWeight)}
    floats = {n if t.ndim == 1 else n + ".weight": np.ascontiguousarray(t, np.float32)
              for n, t in tensors.items() if not isinstance(t, PackedWeight)}
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(weights.config.to_hf(), f, indent=2)
    if packed:
        native.save(os.path.join(out, Q4GSW_FILE), packed, dict(MODEL_FORMAT))
    st_numpy.save_file(floats, os.path.join(out, FLOAT_FILE), metadata=dict(MODEL_FORMAT))
    if weights.tokenizer_path:
        shutil.copyfile(weights.tokenizer_path, os.path.join(out, "tokenizer.json"))
    log.info("save_checkpoint: wrote %s (%d int4 tensors, %d float tensors)", out, len(packed), len(floats))


def _load_q4gsw(directory: str) -> DecoderWeights:
    fn = "load_checkpoint"
    config = read_config(directory)
    floats = SafetensorsFile(os.path.join(directory, FLOAT_FILE))
    qpath = os.path.join(directory, Q4GSW_FILE)
    index = json.loads(native.read_header(qpath)[native.KEY_TENSORS]) if os.path.isfile(qpath) else {}
    linears, vectors = _layout(config)
    stored = {name: ((e.get("out_features"), e.get("in_features")), qpath) for name, e in index.items()}
    for key, info in floats.tensors.items():  # a linear kept dense is stored as NAME.weight
        name = key.removesuffix(".weight") if key.removesuffix(".weight") in linears else key
        stored[name] = (info.shape, floats.path)
    expected = {**linears, **vectors}
    check_names(fn, directory, expected, list(stored))
    for name, shape in expected.items():
        got, where = stored[name]
        if tuple(got) != shape:
            raise ShapeError(fn, f"{where}: tensor {name!r}", f"shape {shape} (from config.json)", str(tuple(got)))
    packed = native.load(qpath) if index else {}

    def get(name):
        return packed[name] if name in packed else floats.read_float(name + ".weight" if name in linears else name)

    layers = []
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        layers.append(LayerWeights(
            qkv=get(p + "self_attn.qkv_proj"), o=get(p + O_PROJ), gate_up=get(p + "mlp.gate_up_proj"),
            down=get(p + DOWN),
            qkv_bias=get(p + "self_attn.qkv_proj.bias") if config.qkv_bias else None,
            o_bias=get(p + O_PROJ + ".bias") if config.o_bias else None,
            attn_norm=get(p + "input_layernorm.weight"), mlp_norm=get(p + "post_attention_layernorm.weight")))
    embed = get("model.embed_tokens")
    lm_head = embed if config.tie_word_embeddings else get("lm_head")
    return DecoderWeights(config, embed, layers, get(FINAL_NORM), lm_head, tokenizer_path=_tokenizer(directory),
                          source=directory)

