"""export_minilm_web: write a browser bundle of all-MiniLM-L6-v2 (q4gsw.js's loadSentenceEncoder
runs it; embeddings.html is its page).

The bundle is export.py's, of kind "encoder": the manifest's "model" holds the BERT config and
where each piece lies; "weights" the int4 linears (split along N as the Python runtime splits
them for a binding of chunk_bytes); "tensors" everything else, each at most chunk_bytes: the
linears' biases (the recipe's: GPTQ corrects them), the LayerNorms, the position and token type
tables, the word table in row chunks, and the linears kept dense (fp32, or fp16 as u32 pairs
as dense_weight_f16.wgsl reads them) in row chunks; plus the packaged tokenizer.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..checks import describe
from ..errors import ArgumentError
from ..runtime.weights import dense_rows
from .export import DEFAULT_CHUNK_BYTES, DataWriter, check_chunk_bytes, weight_entry, write_common

#: The layer norms of the graph, in order (encoder layers: after attention, after the feed-forward).
LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


def _row_chunks(rows: int, row_bytes: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """[(n0, n)] covering `rows` rows of row_bytes each, each chunk at most chunk_bytes (>= 1 row)."""
    step = max(1, min(rows, chunk_bytes // row_bytes))
    return [(n0, min(step, rows - n0)) for n0 in range(0, rows, step)]


def _table_entry(writer: DataWriter, tensors: dict, name: str, table: np.ndarray, chunk_bytes: int) -> list[dict]:
    """Write a 2-D table in row chunks as tensors `name@n0`; returns [{tensor, n0, n}]."""
    chunks = []
    for n0, n in _row_chunks(table.shape[0], table[0].nbytes, chunk_bytes):
        tensors[f"{name}@{n0}"] = writer.add(np.ascontiguousarray(table[n0:n0 + n]))
        chunks.append({"tensor": f"{name}@{n0}", "n0": n0, "n": n})
    return chunks


def model_config(model) -> dict:
    """The manifest's "model": what q4gsw.js's SentenceEncoder reads (chunk lists added by the caller)."""
    c, t = model.config, model.tensors
    return {
        "architecture": "BertModel", "name": "all-MiniLM-L6-v2", "hidden_size": c.hidden, "num_heads": c.heads,
        "num_layers": c.layers, "intermediate_size": c.intermediate, "layer_norm_eps": c.layer_norm_eps,
        "max_seq_length": c.max_seq_length,
        "max_position_embeddings": int(t["embeddings.position_embeddings.weight"].shape[0]),
        "vocab_size": int(t["embeddings.word_embeddings.weight"].shape[0]),
        "type_vocab_size": int(t["embeddings.token_type_embeddings.weight"].shape[0]),
        "pooling": "mean", "normalize": True, "hidden_act": "gelu",
        "group_size": model.group_size, "method": model.method,
    }


def export_minilm_web(out_dir: str | Path, model=None, *, group_size: int = 128, method: str = "rtn",
                      dense_budget: float | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Path:
    """Write a browser bundle of all-MiniLM-L6-v2; returns the manifest's path.

    Args:
        out_dir: the bundle folder (created; files of an earlier bundle are overwritten).
        model: a q4gsw.models.minilm.MiniLM (as quantized, dense linears included), or None:
            the packaged model loaded with group_size, method and dense_budget (MiniLM.load).
        chunk_bytes: the largest data file, weight chunk and tensor (tables and dense weights
            are split in rows to fit); a device must bind this many bytes.
    """
    fn = "export_minilm_web"
    check_chunk_bytes(fn, chunk_bytes)
    from ..models.minilm import MiniLM, model_file

    if model is None:
        model = MiniLM.load(group_size=group_size, method=method,
                            dense_budget=None if dense_budget in (None, 1, 1.0) else dense_budget)
    elif not isinstance(model, MiniLM):
        raise ArgumentError(fn, "model", "a q4gsw.models.minilm.MiniLM or None", describe(model))
    t = model.tensors
    out = Path(out_dir)
    manifest = write_common(out, "encoder")
    writer = DataWriter(out, chunk_bytes)
    manifest["weights"] = {name: weight_entry(writer, w, chunk_bytes) for name, w in model.packed.items()}
    tensors: dict[str, dict] = {}
    config = model_config(model)
    config["word_embeddings"] = _table_entry(writer, tensors, "embeddings.word_embeddings.weight",
                                             t["embeddings.word_embeddings.weight"], chunk_bytes)
    for name in ("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight"):
        tensors[name] = writer.add(t[name])
    norms = ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{n}" for i in range(model.config.layers) for n in LAYER_NORMS]
    for name in norms:
        tensors[name + ".weight"] = writer.add(t[name + ".weight"])
        tensors[name + ".bias"] = writer.add(t[name + ".bias"])
    for name in model.linear_names:
        tensors[name + ".bias"] = writer.add(np.asarray(model.biases[name], np.float32))
    dense = {}
    for name, d in model.dense.items():
        rows = dense_rows(d)  # as the Python runtime uploads them: K padded to a multiple of 4
        stored = rows.view(np.uint32) if rows.dtype == np.float16 else rows.astype(np.float32)
        dense[name] = {"N": d.out_features, "K": d.in_features, "dtype": d.dtype,
                       "chunks": _table_entry(writer, tensors, name + ".weight", stored, chunk_bytes)}
    config["dense"] = dense
    manifest["tensors"] = tensors
    manifest["files"] = writer.finish()
    manifest["chunk_bytes"] = chunk_bytes
    manifest["model"] = config
    data = model_file("tokenizer.json").read_bytes()
    (out / "tokenizer.json").write_bytes(data)
    manifest["tokenizer"] = {"file": "tokenizer.json", "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path


