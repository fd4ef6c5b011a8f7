"""`q4gsw generate`: tokens streamed from a decoder on the GPU, then prefill and decode tokens/s;
and `q4gsw demo --generate`: the same on a small random checkpoint written for the demo."""

from __future__ import annotations

import sys
import tempfile

import numpy as np

from ..llm import PRESETS, CausalLM, DecoderConfig, load_model, random_weights, write_random_checkpoint
from ..llm.ops import kv_cache_dtype
from ..runtime import get_runtime

#: The demo's checkpoint: a small Llama with grouped-query attention, its tokenizer trained in-process.
DEMO_CONFIG = DecoderConfig(architecture="LlamaForCausalLM", vocab_size=512, hidden_size=256, intermediate_size=704,
                            num_layers=4, num_heads=8, num_kv_heads=2, head_dim=32, max_position_embeddings=512,
                            rms_norm_eps=1e-5)


def open_model(path: str | None, random: str | None, *, group_size: int, max_positions: int | None,
               seed: int = 0, kv_cache: str = "f32", prefill_activations: str = "f32",
               decode_activations: str = "f32") -> CausalLM:
    """load_model(path) or a model of random weights of a preset's shape (no download); the
    KV-cache option is checked against the device first."""
    options = dict(max_positions=max_positions, kv_cache=kv_cache, prefill_activations=prefill_activations,
                   decode_activations=decode_activations)
    if random is not None:
        kv_cache_dtype("open_model", kv_cache, get_runtime().caps)
        return CausalLM(random_weights(PRESETS[random], group_size=group_size, seed=seed), **options)
    return load_model(path, group_size=group_size, progress=True, **options)


def stream(model: CausalLM, ids: list[int], max_new_tokens: int, *, out=None, warm_up: bool = True,
           **sampling) -> list[int]:
    """model.generate, printing each token as it comes (text through the tokenizer when the
    model has one, else ids), then one line of prefill and decode tokens/s. With warm_up, a
    two-token generate of the same prompt runs first, unprinted, so that the rates do not
    count the driver's first-use shader compilation. out: default the sys.stdout of the call."""
    out = out or sys.stdout
    if warm_up:
        model.generate(ids, min(2, max_new_tokens), **sampling)
    text = model.tokenizer is not None
    shown = ""
    new: list[int] = []

    def on_token(token: int) -> None:
        nonlocal shown
        new.append(token)
        if text:
            whole = model.decode(new)
            out.write(whole[len(shown):])
            shown = whole
        else:
            out.write(f"{token} ")
        out.flush()

    model.generate(ids, max_new_tokens, on_token=on_token, **sampling)
    s = model.last_stats
    out.write(f"\n[{s.prompt_tokens} prompt tokens: prefill {s.prefill_tokens_per_s:.1f} tokens/s; "
              f"{s.new_tokens} new tokens: decode {s.decode_tokens_per_s:.1f} tokens/s "
              f"({model.runtime.caps.adapter_name})]\n")
    return new


def run_demo(tokens: int = 48, seed: int = 0, out=None) -> list[int]:
    """Write a small random Llama checkpoint (config.json, model.safetensors, tokenizer.json),
    load it with q4gsw.load_model (quantized at load), and stream a greedy continuation."""
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="q4gsw-demo-") as folder:
        config = write_random_checkpoint(folder, DEMO_CONFIG, seed=seed)
        out.write(f"wrote a random {config.architecture} checkpoint ({config.num_layers} layers, hidden "
                  f"{config.hidden_size}, {config.num_heads}/{config.num_kv_heads} heads, vocab "
                  f"{config.vocab_size}) to {folder}; loading it with q4gsw.load_model\n")
        model = load_model(folder, group_size=64, max_positions=256)
        prompt = "The quick brown fox"
        ids = model.encode(prompt)
        out.write(f"{model.runtime.caps.adapter_name}: greedy continuation of {prompt!r} "
                  f"(random weights: the text is noise, the tokens match transformers')\n{prompt}")
        new = stream(model, ids, tokens, out=out)
        model.release()
        return new


def parse_ids(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; ValueError naming what is wrong."""
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated token ids, e.g. 1,2,3, got {text!r}") from None
    if not ids or min(ids) < 0:
        raise ValueError(f"expected at least one token id >= 0, got {text!r}")
    return ids


def random_prompt(model: CausalLM, length: int, seed: int = 0) -> list[int]:
    """Random token ids (for --random models, which have no tokenizer)."""
    return np.random.default_rng(seed).integers(0, model.config.vocab_size, length).tolist()
