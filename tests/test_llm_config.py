"""Tests of q4gsw.llm.config: config.json parsing against transformers' config classes, RoPE tables, presets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import q4gsw
from q4gsw.llm import PRESETS, DecoderConfig, Llama3RopeScaling, hf_shapes

from .llm_fixtures import LLAMA3_ROPE, tiny_config, tiny_model, torch, transformers

CONFIG_CLASSES = {"LlamaForCausalLM": "LlamaConfig", "Qwen2ForCausalLM": "Qwen2Config",
                  "MistralForCausalLM": "MistralConfig"}


def hf_dict(kind: str, **overrides) -> dict:
    """A config.json dict as transformers writes it."""
    cfg = tiny_config(kind, **overrides)
    d = cfg.to_dict()
    d["architectures"] = [type(cfg).__name__.replace("Config", "ForCausalLM")]
    return d


class TestFromHf:
    def test_llama(self):
        """A transformers 5 Llama config: GQA, head_dim, Llama 3 RoPE, no biases, no window."""
        c = DecoderConfig.from_hf(hf_dict("llama", tied=True))
        assert (c.architecture, c.num_heads, c.num_kv_heads, c.head_dim) == ("LlamaForCausalLM", 4, 2, 32)
        assert c.rope_scaling == Llama3RopeScaling(32.0, 1.0, 4.0, 256) and c.rope_theta == 500000.0
        assert c.tie_word_embeddings and not c.qkv_bias and not c.o_bias and c.sliding_window is None

    def test_llama_attention_bias(self):
        """Llama's attention_bias gives q/k/v and o biases."""
        c = DecoderConfig.from_hf(hf_dict("llama", attention_bias=True))
        assert c.qkv_bias and c.o_bias

    def test_qwen2_window_layers(self):
        """Qwen2: q/k/v bias always; the window applies from max_window_layers on."""
        c = DecoderConfig.from_hf(hf_dict("qwen2", num_hidden_layers=3, max_window_layers=1))
        assert c.qkv_bias and not c.o_bias
        assert c.sliding_window == 8 and c.sliding_layers == (1, 2) and c.window(0) is None and c.window(2) == 8

    def test_qwen2_window_unused(self):
        """use_sliding_window false: no window, whatever sliding_window says."""
        c = DecoderConfig.from_hf(hf_dict("qwen2", use_sliding_window=False))
        assert c.sliding_window is None and c.sliding_layers == ()

    def test_mistral_window_every_layer(self):
        """Mistral's sliding_window applies to every layer; head_dim is the config's."""
        c = DecoderConfig.from_hf(hf_dict("mistral"))
        assert c.sliding_layers == (0, 1) and c.head_dim == 16

    def test_legacy_layout(self):
        """A transformers 4 config.json: rope_theta and rope_scaling at the top level."""
        d = {"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 2048,
             "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
             "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"},
             "max_position_embeddings": 131072, "tie_word_embeddings": True, "bos_token_id": 128000,
             "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu"}
        assert DecoderConfig.from_hf(d) == PRESETS["llama-3.2-1b"]

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_to_hf_roundtrip_through_transformers(self, name):
        """to_hf() read by transformers' config class and written back parses to the same config."""
        c = PRESETS[name]
        cls = getattr(transformers, CONFIG_CLASSES[c.architecture])
        d = cls.from_dict(c.to_hf()).to_dict()
        d["architectures"] = [c.architecture]
        assert DecoderConfig.from_hf(d) == c

    @pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
    def test_to_hf_roundtrip(self, kind):
        """from_hf(to_hf(c)) == c for tiny configs with windows, biases and Llama 3 RoPE."""
        c = DecoderConfig.from_hf(hf_dict(kind))
        assert DecoderConfig.from_hf(c.to_hf()) == c

    def test_unsupported_architecture(self):
        """Another architecture is refused, naming it and the supported ones."""
        with pytest.raises(q4gsw.FormatError, match="GPT2LMHeadModel") as info:
            DecoderConfig.from_hf({**hf_dict("llama"), "architectures": ["GPT2LMHeadModel"]}, source="x/config.json")
        assert "GPT2LMHeadModel" in str(info.value) and "Qwen2ForCausalLM" in str(info.value)
        assert "x/config.json" in str(info.value)

    @pytest.mark.parametrize("rope_type", ["linear", "dynamic", "yarn", "longrope"])
    def test_unsupported_rope(self, rope_type):
        """RoPE types other than default and llama3 are refused, naming the type."""
        d = {**hf_dict("llama"), "rope_parameters": {"rope_type": rope_type, "factor": 4.0, "rope_theta": 1e4}}
        with pytest.raises(q4gsw.FormatError, match=f"'{rope_type}'"):
            DecoderConfig.from_hf(d)

    @pytest.mark.parametrize(("key", "value", "fragment"), [
        ("hidden_act", "gelu", "hidden_act"), ("mlp_bias", True, "mlp_bias"),
        ("partial_rotary_factor", 0.5, "partial_rotary_factor"), ("hidden_size", None, "'hidden_size'.*missing"),
    ])
    def test_refused_keys(self, key, value, fragment):
        """Activations, MLP biases, partial RoPE and missing keys are refused by name."""
        with pytest.raises(q4gsw.FormatError, match=fragment):
            DecoderConfig.from_hf({**hf_dict("llama"), key: value})

    def test_bad_shapes(self):
        """kv heads that do not divide the heads, or an odd head_dim, are ShapeErrors."""
        with pytest.raises(q4gsw.ShapeError, match="num_kv_heads"):
            dataclasses.replace(PRESETS["llama-3-8b"], num_kv_heads=5)
        with pytest.raises(q4gsw.ShapeError, match="head_dim"):
            dataclasses.replace(PRESETS["llama-3-8b"], head_dim=127)


class TestRope:
    @pytest.mark.parametrize("rope", [None, LLAMA3_ROPE, {**LLAMA3_ROPE, "original_max_position_embeddings": 8192}])
    def test_inv_freq_matches_transformers(self, rng, rope):
        """rope_inv_freq() equals the inv_freq buffer of transformers' rotary embedding (measured: 0 ulp)."""
        kwargs = {} if rope is None else {"rope_parameters": dict(rope)}
        model = tiny_model(rng, "llama", **kwargs)
        c = DecoderConfig.from_hf({**model.config.to_dict(), "architectures": ["LlamaForCausalLM"]})
        theirs = model.model.rotary_emb.inv_freq.numpy()
        ours = c.rope_inv_freq()
        assert ours.dtype == np.float32 and ours.shape == (16,)
        # torch's float32 pow may differ by 1 ulp from the correctly rounded one used here
        np.testing.assert_array_max_ulp(ours, theirs, maxulp=1)

    def test_llama3_regions(self):
        """The tiny Llama 3 RoPE has unchanged, smoothed and divided frequencies."""
        c = DecoderConfig.from_hf(hf_dict("llama"))
        plain = dataclasses.replace(c, rope_scaling=None).rope_inv_freq()
        ratio = plain / c.rope_inv_freq()
        assert ratio[0] == 1 and ratio[-1] == 32 and ((ratio > 1) & (ratio < 32)).any()

    def test_cos_sin_matches_transformers(self, rng):
        """rope_cos_sin equals transformers' cos/sin (float32) within 2 ulp-sized steps of 1."""
        model = tiny_model(rng, "llama")
        c = DecoderConfig.from_hf({**model.config.to_dict(), "architectures": ["LlamaForCausalLM"]})
        positions = np.arange(300)
        with torch.no_grad():
            cos_t, sin_t = model.model.rotary_emb(torch.zeros(1), torch.from_numpy(positions)[None])
        cos, sin = c.rope_cos_sin(positions)
        assert cos.shape == (300, 16) and cos.dtype == np.float32
        for ours, theirs in ((cos, cos_t[0].numpy()), (sin, sin_t[0].numpy())):
            np.testing.assert_array_equal(theirs[:, :16], theirs[:, 16:])  # rotate_half: both halves
            assert np.abs(ours - theirs[:, :16]).max() <= 2 * np.finfo(np.float32).eps

    def test_freq_factors(self):
        """rope_freq_factors (GGUF's rope_freqs) divide the plain inverse frequencies."""
        c = dataclasses.replace(PRESETS["llama-3-8b"], rope_freq_factors=tuple(range(1, 65)))
        plain = PRESETS["llama-3-8b"].rope_inv_freq()
        np.testing.assert_array_equal(c.rope_inv_freq(), plain / np.arange(1, 65, dtype=np.float32))

    def test_bad_positions(self):
        """Float or 2-D positions are a ShapeError."""
        with pytest.raises(q4gsw.ShapeError, match="positions"):
            PRESETS["llama-3-8b"].rope_cos_sin(np.zeros((2, 2), np.int64))


class TestPresets:
    @pytest.mark.parametrize(("name", "params"), [
        ("llama-3-8b", 8_030_261_248), ("llama-3.2-1b", 1_235_814_400), ("qwen2.5-0.5b", 494_032_768)])
    def test_parameter_counts(self, name, params):
        """The presets have the published parameter counts (embedding counted once when tied)."""
        assert sum(math.prod(s) for s in hf_shapes(PRESETS[name]).values()) == params
