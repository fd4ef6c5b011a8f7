"""DecoderWeights: a decoder's weights as the GPU runtime consumes them (fused, int4), and how they are built."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable

import numpy as np

from ..checks import describe
from ..errors import FormatError, GroupSizeError, ShapeError
from ..format import PackedWeight
from ..quantize import quantize
from .config import DecoderConfig

log = logging.getLogger("q4gsw")

#: A linear layer's weight: int4 (PackedWeight, (N, K)) or kept dense, (N, K) float32.
Linear = PackedWeight | np.ndarray
#: progress(items, total) -> the same items, e.g. a tqdm bar; True picks tqdm or plain stderr lines.
Progress = Callable[[Iterable, int], Iterable] | bool | None

#: Rows of a float linear quantized at a time (a 128256-row LM head in 8 steps).
QUANTIZE_ROWS = 16384
#: Hugging Face names inside "model.layers.{i}.": the fused groups, in row order.
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
O_PROJ = "self_attn.o_proj"
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
DOWN = "mlp.down_proj"
ATTN_NORM, MLP_NORM = "input_layernorm.weight", "post_attention_layernorm.weight"
EMBED, FINAL_NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


@dataclasses.dataclass(frozen=True, eq=False)
class LayerWeights:
    """One decoder block. Linears are (N, K): N output features, K input features.

    Attributes:
        qkv: (q_size + 2 * kv_size, hidden): q, k and v projections stacked along N (rows q,
            then k, then v; a PackedWeight's scale columns in the same order).
        qkv_bias: (q_size + 2 * kv_size,) float32 or None.
        o: (hidden, q_size) output projection; o_bias: (hidden,) float32 or None.
        gate_up: (2 * intermediate, hidden): gate then up projection stacked along N.
        down: (hidden, intermediate).
        attn_norm, mlp_norm: (hidden,) float32 RMSNorm weights before attention / before the MLP.
    """

    qkv: Linear
    qkv_bias: np.ndarray | None
    o: Linear
    o_bias: np.ndarray | None
    gate_up: Linear
    down: Linear
    attn_norm: np.ndarray
    mlp_norm: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class DecoderWeights:
    """A whole decoder, ready for the GPU runtime.

    Attributes:
        config: the DecoderConfig.
        embed: (vocab, hidden) token embedding, int4 like the linears (a token's row is
            gathered and dequantized) or dense float32.
        layers: num_layers LayerWeights.
        final_norm: (hidden,) float32.
        lm_head: (vocab, hidden); the same object as embed when the embeddings are tied.
        tokenizer_path: a tokenizer.json next to the checkpoint, or None.
        source: where the weights came from (a path, or "random").
    """

    config: DecoderConfig
    embed: Linear
    layers: list[LayerWeights]
    final_norm: np.ndarray
    lm_head: Linear
    tokenizer_path: str | None = None
    source: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes of every weight (the LM head once when tied)."""
        arrays = [self.embed, self.final_norm] + ([] if self.lm_head is self.embed else [self.lm_head])
        for layer in self.layers:
            arrays += [getattr(layer, f.name) for f in dataclasses.fields(layer) if getattr(layer, f.name) is not None]
        return sum(a.weights.nbytes + a.scales.nbytes if isinstance(a, PackedWeight) else a.nbytes for a in arrays)

    def dequantized_state_dict(self) -> dict[str, np.ndarray]:
        """The weights q4gsw computes with, as a transformers state dict.

        Returns:
            {Hugging Face name: float32 ndarray}: every PackedWeight dequantized (q * scale,
            rounded to float32), fused linears split back into q/k/v and gate/up; lm_head.weight
            is included even when tied (transformers' state_dict() lists it).
        """
        c = self.config
        out = {EMBED: dense(self.embed)}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            qkv = np.split(dense(layer.qkv), [c.q_size, c.q_size + c.kv_size])
            out.update({f"{p}{name}.weight": w for name, w in zip(QKV, qkv, strict=True)})
            if layer.qkv_bias is not None:
                biases = np.split(layer.qkv_bias, [c.q_size, c.q_size + c.kv_size])
                out.update({f"{p}{name}.bias": b.copy() for name, b in zip(QKV, biases, strict=True)})
            out[f"{p}{O_PROJ}.weight"] = dense(layer.o)
            if layer.o_bias is not None:
                out[f"{p}{O_PROJ}.bias"] = layer.o_bias.copy()
            gate, up = np.split(dense(layer.gate_up), [c.intermediate_size])
            out.update({f"{p}{GATE_UP[0]}.weight": gate, f"{p}{GATE_UP[1]}.weight": up})
            out[f"{p}{DOWN}.weight"] = dense(layer.down)
            out[p + ATTN_NORM], out[p + MLP_NORM] = layer.attn_norm.copy(), layer.mlp_norm.copy()
        out[FINAL_NORM] = self.final_norm.copy()
        out[LM_HEAD] = out[EMBED] if self.lm_head is self.embed else dense(self.lm_head)
        return out


def dense(w: Linear) -> np.ndarray:
    """(N, K) float32 of a linear: PackedWeight.dequantize() rounded to float32, or the dense array."""
    return w.dequantize().astype(np.float32) if isinstance(w, PackedWeight) else np.asarray(w, np.float32)


def hf_shapes(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Hugging Face checkpoint of this config and its shape, in model order
    (lm_head.weight only when untied)."""
    c = config
    shapes = {EMBED: (c.vocab_size, c.hidden_size)}
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        for name, n in zip(QKV, (c.q_size, c.kv_size, c.kv_size), strict=True):
            shapes[f"{p}{name}.weight"] = (n, c.hidden_size)
            if c.qkv_bias:
                shapes[f"{p}{name}.bias"] = (n,)
        shapes[f"{p}{O_PROJ}.weight"] = (c.hidden_size, c.q_size)
        if c.o_bias:
            shapes[f"{p}{O_PROJ}.bias"] = (c.hidden_size,)
        for name in GATE_UP:
            shapes[f"{p}{name}.weight"] = (c.intermediate_size, c.hidden_size)
        shapes[f"{p}{DOWN}.weight"] = (c.hidden_size, c.intermediate_size)
        shapes[p + ATTN_NORM] = shapes[p + MLP_NORM] = (c.hidden_size,)
    shapes[FINAL_NORM] = (c.hidden_size,)
    if not c.tie_word_embeddings:
        shapes[LM_HEAD] = (c.vocab_size, c.hidden_size)
    return shapes


def concat_rows(parts: list[PackedWeight], *, name: str = "weights") -> PackedWeight:
    """Stack PackedWeights along N: rows of parts[0], then parts[1], ...; scale columns likewise.

    Args:
        parts: PackedWeights of one K and one group size.
        name: what they are, for the error message.
    Returns:
        PackedWeight (sum N, K) with scales (num_groups, sum N).
    """
    first = parts[0]
    for p in parts[1:]:
        if p.in_features != first.in_features:
            raise ShapeError("concat_rows", name, f"K = {first.in_features} in every part", str(p.in_features))
        if p.group_size != first.group_size:
            raise GroupSizeError("concat_rows", name, f"group size {first.group_size} in every part",
                                 f"{p.group_size} (quantize float parts with the group size of the int4 parts)")
    weights = np.concatenate([p.weights for p in parts])
    scales = np.concatenate([p.scales[:first.num_groups, :p.out_features] for p in parts], axis=1)
    return PackedWeight(weights, scales, first.group_size, in_features=first.in_features)


def check_names(function: str, where: str, expected, found) -> None:
    """FormatError (naming `where` and the tensor) for the first expected name missing from
    `found`, or the first found name not expected."""
    found_set = set(found)
    missing = [n for n in expected if n not in found_set]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FormatError(function, where, "every tensor the config implies", f"missing tensor {missing[0]!r}{more}")
    extra = [n for n in found if n not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise FormatError(function, where, "only the tensors the config implies",
                          f"unexpected tensor {extra[0]!r}{more}")


def progress_wrapper(progress: Progress) -> Callable[[Iterable, int], Iterable]:
    """progress(items, total): None/False passes items through; True shows tqdm when installed,
    else one plain line per item on stderr; a callable is used as it is."""
    if callable(progress):
        return progress
    if not progress:
        return lambda items, total: items
    try:
        from tqdm import tqdm
    except ImportError:
        def plain(items, total):
            for i, item in enumerate(items, 1):
                sys.stderr.write(f"[{i}/{total}] {item}\n")
                yield item
        return plain
    return lambda items, total: tqdm(items, total=total, unit="layer", file=sys.stderr)


def build_weights(config: DecoderConfig, get: Callable[[str], np.ndarray | PackedWeight], *, group_size: int,
                  keep_dense: Callable[[str], bool] | None = None, progress: Progress = None,
                  tokenizer_path: str | None = None, source: str = "") -> DecoderWeights:
    """Assemble DecoderWeights from tensors fetched one at a time by Hugging Face name.

    Args:
        config: the model's config; `get` is asked for each name of hf_shapes(config).
        get: name -> float32 ndarray of that shape, or (a linear already in int4) a PackedWeight.
        group_size: group size for the float linears that are quantized.
        keep_dense: HF weight name -> True to keep that linear float32; a fused group (q/k/v,
            gate/up) is dense when any of its members is.
        progress: see progress_wrapper; one step per layer plus embedding and head.
    """
    keep = keep_dense or (lambda name: False)

    def quantize_rows(w: np.ndarray) -> list[PackedWeight]:
        """Rows quantize independently: chunks of rows bound quantize()'s float temporaries."""
        return [quantize(w[r:r + QUANTIZE_ROWS], group_size) for r in range(0, len(w), QUANTIZE_ROWS)]

    def linear(names: list[str]) -> Linear:
        parts = [get(n) for n in names]
        if any(keep(n) for n in names):
            return np.concatenate([dense(p) for p in parts])
        packed = []
        for p in parts:
            packed += [p] if isinstance(p, PackedWeight) else quantize_rows(p)
        return packed[0] if len(packed) == 1 else concat_rows(packed, name=" + ".join(names))

    def vector(name: str) -> np.ndarray:
        v = get(name)
        if not isinstance(v, np.ndarray) or v.ndim != 1:
            raise FormatError("build_weights", name, "a 1-D float tensor", describe(v))
        return np.ascontiguousarray(v, np.float32)

    c = config
    steps = ["embedding"] + [f"layer {i}" for i in range(c.num_layers)] + ["final norm and LM head"]
    layers, embed, lm_head, final_norm = [], None, None, None
    for step in progress_wrapper(progress)(steps, len(steps)):
        if step == "embedding":
            embed = linear([EMBED])
        elif step.startswith("layer"):
            p = f"model.layers.{len(layers)}."
            layers.append(LayerWeights(
                qkv=linear([f"{p}{n}.weight" for n in QKV]),
                qkv_bias=np.concatenate([vector(f"{p}{n}.bias") for n in QKV]) if c.qkv_bias else None,
                o=linear([f"{p}{O_PROJ}.weight"]),
                o_bias=vector(f"{p}{O_PROJ}.bias") if c.o_bias else None,
                gate_up=linear([f"{p}{n}.weight" for n in GATE_UP]),
                down=linear([f"{p}{DOWN}.weight"]),
                attn_norm=vector(p + ATTN_NORM), mlp_norm=vector(p + MLP_NORM)))
        else:
            final_norm = vector(FINAL_NORM)
            lm_head = embed if c.tie_word_embeddings else linear([LM_HEAD])
        log.debug("built %s", step)
    return DecoderWeights(c, embed, layers, final_norm, lm_head, tokenizer_path=tokenizer_path, source=source)
