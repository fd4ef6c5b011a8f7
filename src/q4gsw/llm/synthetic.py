"""Random models: int4 DecoderWeights for benchmarks, and small float Hugging Face checkpoints for demos and tests."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..errors import ShapeError
from ..format import PackedWeight
from ..io._deps import require
from .config import DecoderConfig
from .weights import DecoderWeights, LayerWeights, hf_shapes

#: What the demo tokenizer is trained on.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A whole model on the GPU, four bits per weight.",
    "Once upon a time there was a small language model that ran in a browser.",
    "Grouped-query attention shares each key and value head between several query heads.",
    "Rotary position embeddings rotate pairs of features by an angle that grows with the position.",
    "Hello, world! 0123456789",
)
#: The tokenizer's special tokens, ids 0 and 1 (bos, eos).
SPECIAL_TOKENS = ("<s>", "</s>")


def random_weights(config: DecoderConfig, *, group_size: int = 128, seed: int = 0) -> DecoderWeights:
    """Random int4 weights of a config's shapes, made as bytes and scales (no float weights).

    The packed bytes are uniform, so q is uniform in [-8, 7] (root mean square 4.6, mean
    -0.5). Each scale is +-U(0.5, 1.5) / (4.6 sqrt(K)) with a random sign: the sign cancels
    the mean of q (with positive scales every output would share a drift of
    -0.5 * scale * sum(x) that grows through the layers), and 1 / (4.6 sqrt(K)) gives each
    output of a linear about the variance of its input. The embedding is made the same way,
    so its entries are of order 1/sqrt(hidden), as in trained models, and a tied LM head
    gives logits of order 1. Activations stay O(1) through the layers (measured: logits of
    standard deviation 1.05 after 8 layers). Norm weights are U(0.8, 1.2), biases
    N(0, 0.1^2). Llama-3-8B-shaped weights (4.3 GB) take about 8 s on 2 cores.

    Args:
        config: the shapes (e.g. PRESETS["llama-3-8b"]).
        group_size: elements of K per scale.
        seed: the numpy Generator seed.
    """
    rng = np.random.default_rng(seed)
    c = config

    def linear(n: int, k: int) -> PackedWeight:
        gain = 1 / np.sqrt(k)
        size = n * ((k + 1) // 2)  # raw 64-bit draws: ~6x faster than rng.bytes or rng.integers
        weights = rng.bit_generator.random_raw(-(-size // 8)).view(np.uint8)[:size].reshape(n, (k + 1) // 2)
        shape = (-(-k // group_size), n)
        scales = (rng.uniform(0.5, 1.5, shape) * rng.choice([-gain, gain], shape) / 4.6).astype(np.float32)
        return PackedWeight(weights, scales, group_size, in_features=k)


    def norm() -> np.ndarray:
        return rng.uniform(0.8, 1.2, c.hidden_size).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    qkv = c.q_size + 2 * c.kv_size
    embed = linear(c.vocab_size, c.hidden_size)
    layers = [LayerWeights(
        qkv=linear(qkv, c.hidden_size), qkv_bias=bias(qkv) if c.qkv_bias else None,
        o=linear(c.hidden_size, c.q_size), o_bias=bias(c.hidden_size) if c.o_bias else None,
        gate_up=linear(2 * c.intermediate_size, c.hidden_size), down=linear(c.hidden_size, c.intermediate_size),
        attn_norm=norm(), mlp_norm=norm()) for _ in range(c.num_layers)]
    lm_head = embed if c.tie_word_embeddings else linear(c.vocab_size, c.hidden_size)
    return DecoderWeights(c, embed, layers, norm(), lm_head, source="random")


def write_random_checkpoint(out_dir: str | os.PathLike, config: DecoderConfig, *, seed: int = 0) -> DecoderConfig:
    """Write a small random float32 Hugging Face checkpoint: config.json, model.safetensors and
    a byte-level BPE tokenizer.json (trained here on SENTENCES), with numpy, safetensors and
    tokenizers only (no torch, no transformers, nothing downloaded).

    Linears are N(0, 1/K), the embedding N(0, 1), norms U(0.8, 1.2), biases N(0, 0.1^2). The
    tokenizer has min(vocab_size, 512) tokens, "<s>" = 0 and "</s>" = 1; the config is
    written with bos_token_id 0 and eos_token_id 1.

    Args:
        out_dir: the directory (created if needed).
        config: the shapes; vocab_size >= 258 (256 bytes and the two special tokens).
        seed: the numpy Generator seed.
    Returns:
        The DecoderConfig as written (config with the tokenizer's bos and eos).
    """
    fn = "write_random_checkpoint"
    if config.vocab_size < 258:
        raise ShapeError(fn, "config.vocab_size", ">= 258 (a byte-level tokenizer's 256 bytes + <s>, </s>)",
                         str(config.vocab_size))
    st_numpy = require("safetensors.numpy", fn)
    tokenizers = require("tokenizers", fn)
    config = dataclasses.replace(config, bos_token_id=0, eos_token_ids=(1,))
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in hf_shapes(config).items():
        if name.endswith("norm.weight"):
            tensors[name] = rng.uniform(0.8, 1.2, shape)
        elif name.endswith(".bias"):
            tensors[name] = 0.1 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            tensors[name] = rng.standard_normal(shape)
        else:
            tensors[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    tensors = {name: t.astype(np.float32) for name, t in tensors.items()}
    st_numpy.save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config.to_hf(), f, indent=2)

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=min(config.vocab_size, 512), special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    return config
