"""Load a llama-architecture GGUF file (llama.cpp's tensor names; Q4_0 or float tensors) as DecoderWeights."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np

from ..errors import FormatError, ShapeError
from ..format import PackedWeight
from ..io._deps import require
from ..io.from_gguf import gguf_tensor_to_packed
from .config import DecoderConfig
from .weights import EMBED, FINAL_NORM, LM_HEAD, DecoderWeights, Progress, build_weights, check_names, hf_shapes

#: GGUF general.architecture values read here.
GGUF_ARCHITECTURES = ("llama",)
#: llama.cpp's tensor names for Hugging Face's, inside a block.
_BLOCK_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_TOP_NAMES = {EMBED: "token_embd.weight", FINAL_NORM: "output_norm.weight", LM_HEAD: "output.weight"}
EMBED_GGUF = _TOP_NAMES[EMBED]
#: llama.cpp's Llama 3 RoPE scaling: the inverse frequencies are divided by this tensor.
ROPE_FREQS = "rope_freqs.weight"


def gguf_name(hf_name: str) -> str:
    """llama.cpp's name of a Hugging Face tensor ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight")."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf_name)
    return f"blk.{m[1]}.{_BLOCK_NAMES[m[2]]}.{m[3]}"


def unpermute_rows(n_rows: int, heads: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation.

    convert_hf_to_gguf's LlamaModel.permute stores, per head, the rows of the two RoPE halves
    interleaved (`w.reshape(heads, 2, head_dim/2, K).swapaxes(1, 2)`): GGUF row h*hd + 2i + j
    is Hugging Face row h*hd + j*hd/2 + i. Returns the (n_rows,) index `inv` with
    hf_rows = gguf_rows[inv] (for k, heads = the kv heads).
    """
    perm = np.arange(n_rows).reshape(heads, 2, n_rows // heads // 2).swapaxes(1, 2).reshape(-1)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n_rows)
    return inv


def load_gguf(path: str | os.PathLike, *, group_size: int = 128, keep_dense: Callable[[str], bool] | None = None,
              progress: Progress = None) -> DecoderWeights:
    """Load a GGUF file written by llama.cpp's converter for a Llama-architecture model.

    The config comes from the llama.* metadata (a `rope_freqs` tensor becomes
    rope_freq_factors); an absent output.weight means tied embeddings. Q4_0 tensors are
    repacked losslessly (group size 32); F32, F16 and BF16 linears are quantized with
    group_size; every other tensor type is refused. The q and k rows are put back in
    Hugging Face order (unpermute_rows), so the weights compute exactly as transformers does.

    Args:
        path: the .gguf file.
        group_size: group size for float linears.
        keep_dense, progress: as for load_checkpoint (names are Hugging Face names).
    """
    fn = "load_gguf"
    gguf = require("gguf", fn)
    path = os.fspath(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        raise FormatError(fn, "path", "a readable GGUF file", f"{path!r} ({type(exc).__name__}: {exc})") from exc
    # not the vocabulary arrays (tokenizer.ggml.tokens, merges: 10^5 strings each)
    fields = {name: field.contents() for name, field in reader.fields.items()
              if field.types and (not name.startswith("tokenizer.") or name.endswith("_token_id"))}
    tensors = {t.name: t for t in reader.tensors}
    if EMBED_GGUF not in tensors:
        raise FormatError(fn, path, "every tensor the config implies", f"missing tensor {EMBED_GGUF!r}")
    factors = None
    if ROPE_FREQS in tensors:
        factors = tuple(float(f) for f in _float(gguf, tensors[ROPE_FREQS]).reshape(-1))
    config = config_from_gguf(fields, vocab_size=int(tensors[EMBED_GGUF].shape[1]), tied="output.weight" not in tensors,
                              qkv_bias="blk.0.attn_q.bias" in tensors, o_bias="blk.0.attn_output.bias" in tensors,
                              rope_freq_factors=factors, source=path)
    expected = {gguf_name(n): shape for n, shape in hf_shapes(config).items()}
    check_names(fn, path, expected, [n for n in tensors if n != ROPE_FREQS])
    q4_0 = gguf.GGMLQuantizationType.Q4_0
    floats = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
    for name, shape in expected.items():
        t = tensors[name]
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        got = tuple(int(s) for s in t.shape[::-1])  # ggml lists ne[0] (the fastest axis) first
        if got != shape:
            raise ShapeError(fn, f"{path}: tensor {name!r}", f"shape {shape} (from the metadata)", str(got))
        if qtype not in floats and not (qtype == q4_0 and len(shape) == 2):
            raise FormatError(fn, f"{path}: tensor {name!r}", "Q4_0 (linears), F32, F16 or BF16",
                              f"type {qtype.name}: requantizing it would add a second rounding; "
                              "convert with llama-quantize --pure Q4_0, or from the float model")

    heads = {"self_attn.q_proj": config.num_heads, "self_attn.k_proj": config.num_kv_heads}

    def get(hf_name: str) -> np.ndarray | PackedWeight:
        t = tensors[gguf_name(hf_name)]
        m = re.fullmatch(r"model\.layers\.\d+\.(self_attn\.[qk]_proj)\.(weight|bias)", hf_name)
        if gguf.GGMLQuantizationType(t.tensor_type) == q4_0:
            w = gguf_tensor_to_packed(t, function=fn)
            if m:
                inv = unpermute_rows(w.out_features, heads[m[1]])
                w = PackedWeight(w.weights[inv], w.scales[:, inv], w.group_size, in_features=w.in_features)
            return w
        w = _float(gguf, t).reshape(expected[t.name])
        return w[unpermute_rows(w.shape[0], heads[m[1]])] if m else w

    return build_weights(config, get, group_size=group_size, keep_dense=keep_dense, progress=progress, source=path)


def _float(gguf, tensor) -> np.ndarray:
    """A F32/F16/BF16 GGUF tensor as float32 (flat order as stored)."""
    qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
    return np.asarray(gguf.quants.dequantize(tensor.data, qtype), np.float32)


def config_from_gguf(fields: dict, *, vocab_size: int, tied: bool, qkv_bias: bool = False, o_bias: bool = False,
                     rope_freq_factors: tuple[float, ...] | None = None, source: str = "gguf") -> DecoderConfig:
    """A DecoderConfig from GGUF metadata ({key: value}, e.g. "llama.block_count": 16).

    Args:
        fields: the metadata values.
        vocab_size: rows of token_embd (used when llama.vocab_size is absent).
        tied: no output.weight tensor: the LM head is the embedding.
        qkv_bias, o_bias: the file has attn_q/k/v.bias, attn_output.bias.
        rope_freq_factors: the rope_freqs tensor, if any.
        source: named in error messages.
    """
    fn = "config_from_gguf"
    arch = fields.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise FormatError(fn, f"{source}: 'general.architecture'", f"one of {list(GGUF_ARCHITECTURES)}", repr(arch))

    def get(key, default=None):
        value = fields.get(f"{arch}.{key}", default)
        if value is None:
            raise FormatError(fn, f"{source}: '{arch}.{key}'", "the metadata key to be present", "missing")
        if isinstance(value, list):
            raise FormatError(fn, f"{source}: '{arch}.{key}'", "one value for every layer", f"a list {value[:4]}...")
        return value

    scaling = fields.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", ""):
        raise FormatError(fn, f"{source}: '{arch}.rope.scaling.type'", "'none' (or a rope_freqs tensor)", repr(scaling))
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise FormatError(fn, f"{source}: '{arch}.rope.dimension_count'", f"head_dim = {head_dim} (full rotary)",
                          str(fields[f"{arch}.rope.dimension_count"]))
    bos, eos = fields.get("tokenizer.ggml.bos_token_id"), fields.get("tokenizer.ggml.eos_token_id")
    return DecoderConfig(
        "LlamaForCausalLM", vocab_size=int(get("vocab_size", vocab_size)), hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")), num_layers=int(get("block_count")), num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)), head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")), rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_freq_factors=rope_freq_factors, max_position_embeddings=int(get("context_length")),
        tie_word_embeddings=tied, qkv_bias=qkv_bias, o_bias=o_bias,
        bos_token_id=None if bos is None else int(bos), eos_token_ids=() if eos is None else (int(eos),),
    )
