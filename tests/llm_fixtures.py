"""Test helpers for q4gsw.llm: tiny random transformers models, the transformers oracle, llama.cpp-style GGUF files."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

#: Shapes of every tiny model: hidden and head dims multiples of 32 and 16, K a multiple of
#: the group sizes 32 and 64, so later GPU kernels can run the same models.
TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            initializer_range=0.2)  # 0.2: logits spread wide enough that greedy decoding varies
#: Llama 3 scaling chosen so that the 16 frequencies of head_dim 32 fall in all three of its
#: regions (unchanged, smoothed, divided by factor): wavelengths 6, 14 | 94 | 2354 vs 64 and 256.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
#: Max |logit difference| allowed between transformers (float32) and reference_logits
#: (float64) on the same weights, as a fraction of max |logit|. Measured over 5 seeds of each
#: tiny model: <= 3.3e-6 (float32 rounding of sums of <= 128 terms, softmax and RMSNorm).
#: Measured for the errors it must catch: q rows left in llama.cpp's order 1.3; one scale of
#: one group of one row of one linear off by 1%: 5e-4 to 8e-4.
LOGITS_RTOL = 1e-4


def tiny_config(kind: str, *, tied: bool = False, **overrides):
    """A transformers config of a tiny random model: "llama" (GQA 4/2, head_dim 32, Llama 3
    RoPE), "qwen2" (q/k/v bias, sliding window 8 on layer 1) or "mistral" (window 8, head_dim 16)."""
    common = dict(TINY, tie_word_embeddings=tied, attn_implementation="eager")
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**common, "head_dim": 32, "rope_parameters": dict(LLAMA3_ROPE), **overrides})
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**{**common, "use_sliding_window": True, "sliding_window": 8,
                                          "max_window_layers": 1, **overrides})
    elif kind == "mistral":
        cfg = transformers.MistralConfig(**{**common, "num_attention_heads": 4, "head_dim": 16,
                                            "sliding_window": 8, **overrides})
    else:
        raise ValueError(kind)
    return cfg


def tiny_model(rng, kind: str, **kwargs):
    """A float32 eager transformers model of tiny_config(kind), weights drawn from rng's seed."""
    torch.manual_seed(int(rng.integers(2**31)))
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(kind, **kwargs), attn_implementation="eager")
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens
    model.generation_config.pad_token_id = 0
    return model.eval()


def load_oracle(model, weights) -> None:
    """Put weights.dequantized_state_dict() into model (strict: every key, no extra)."""
    state = {k: torch.from_numpy(v) for k, v in weights.dequantized_state_dict().items()}
    model.load_state_dict(state, strict=True)


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    """(T, vocab) float64 logits of transformers on one sequence."""
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(ids, np.int64))[None]).logits[0].double().numpy()


def hf_generate(model, ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
    """transformers' greedy generate(do_sample=False) (with its KV cache): prompt + new tokens."""
    ids = torch.from_numpy(np.asarray(ids, np.int64))[None]
    with torch.no_grad():  # an explicit mask: generate() would infer one masking pad_token_id (0) out of the prompt
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, min_new_tokens=max_new_tokens)
    return out[0].numpy()


def assert_logits_close(ours: np.ndarray, theirs: np.ndarray, rtol: float = LOGITS_RTOL) -> float:
    """Max |ours - theirs| <= rtol * max |theirs|; returns the measured ratio."""
    ratio = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    assert ratio <= rtol, f"max |logit diff| / max |logit| = {ratio:.2e} > {rtol:.0e}"
    return ratio


# --- llama.cpp-style GGUF ---------------------------------------------------------------------


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute (rows of q or k; heads = the kv heads for k)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel rope_freqs tensor for a Llama 3 RoPE config."""
    rope = cfg.rope_parameters
    dim = cfg.head_dim
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    old = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / rope["low_freq_factor"], old / rope["high_freq_factor"]
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(rope["factor"])
        else:
            smooth = (old / wavelen - rope["low_freq_factor"]) / (rope["high_freq_factor"] - rope["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    return np.asarray(factors, np.float32)


def write_llama_gguf(path, model, *, linear_type=None, embed_type=None, skip=(), metadata=None,
                     arch: str = "llama") -> None:
    """Write a transformers Llama as llama.cpp's converter would: llama.* metadata, GGUF tensor
    names, q/k rows permuted, rope_freqs for Llama 3 RoPE, output.weight only when untied.

    Args:
        linear_type: GGMLQuantizationType of the 2-D linears (default Q4_0); embed_type: of
            token_embd (default: linear_type). Norms are F32.
        skip: GGUF tensor names to leave out; metadata: extra or replaced {key: value} (str/int/float).
        arch: general.architecture (the keys stay llama.*).
    """
    import gguf

    from q4gsw.llm.from_gguf import gguf_name

    q4_0 = gguf.GGMLQuantizationType.Q4_0
    linear_type = q4_0 if linear_type is None else linear_type
    embed_type = linear_type if embed_type is None else embed_type
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    kv = {"llama.context_length": cfg.max_position_embeddings, "llama.embedding_length": cfg.hidden_size,
          "llama.block_count": cfg.num_hidden_layers, "llama.feed_forward_length": cfg.intermediate_size,
          "llama.attention.head_count": cfg.num_attention_heads,
          "llama.attention.head_count_kv": cfg.num_key_value_heads,
          "llama.rope.freq_base": float(cfg.rope_parameters["rope_theta"]),
          "llama.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
          "llama.rope.dimension_count": cfg.head_dim, "llama.attention.key_length": cfg.head_dim,
          "llama.attention.value_length": cfg.head_dim, "llama.vocab_size": cfg.vocab_size,
          "tokenizer.ggml.bos_token_id": cfg.bos_token_id, "tokenizer.ggml.eos_token_id": cfg.eos_token_id}
    kv.update(metadata or {})
    for key, value in kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, int(value))
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w = t.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            w = llama_cpp_permute(w, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = llama_cpp_permute(w, cfg.num_key_value_heads)
        tensors[gguf_name(name)] = w
    if cfg.rope_parameters.get("rope_type") == "llama3":
        tensors["rope_freqs.weight"] = llama3_rope_factors(cfg)
    for name, w in tensors.items():
        if name in skip:
            continue
        qtype = embed_type if name == "token_embd.weight" else linear_type if w.ndim == 2 else None
        if qtype is None or qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(name, w if qtype is None else gguf.quants.quantize(w, qtype))
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
