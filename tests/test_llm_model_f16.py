"""Tests of CausalLM(kv_cache="f16") on whole tiny models: logits against the float64 forward
reading the same halves, the f32-cache path and transformers (float32, eager); greedy tokens;
the caches' memory."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.llm import reference_logits

from .llm_fixtures import LOGITS_RTOL, TINY, hf_generate, hf_logits, load_oracle, tiny_model
from .test_llm_kv_f16 import U16, needs_f16  # noqa: F401 (a fixture)

#: Max |logit difference| between the f16-cache path and the f32 path or transformers, as a
#: fraction of max |logit|. Each layer rounds two tensors, K and V, to f16: every element off by
#: at most U16 = 2^-11 relative. The float64 reference with and without that rounding measures
#: how far these tiny models carry it to the logits: 1.9-4.4 U16 over 9 models (3 seeds of
#: Llama, Qwen2, Mistral; 2 layers, 4 rounded tensors), i.e. at most 1.1 U16 per tensor. Allowed:
#: 2 U16 per tensor (the GPU's rounding can differ from the reference's by one half where an f32
#: value lies next to a rounding boundary), 8 U16 = 3.9e-3 in all, plus the f32 path's own 1e-4.
KV_F16_RTOL = LOGITS_RTOL + 2 * 2 * TINY["num_hidden_layers"] * U16
CASES = [("llama", 32), ("qwen2", 32)]


def relative(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture
def models(runtime, tmp_path, rng, request):
    """(transformers model with q4gsw's weights, the f32-cache CausalLM, the f16-cache one)."""
    kind, group_size = request.param
    model = tiny_model(rng, kind)
    model.save_pretrained(tmp_path / "hf")
    lm32 = q4gsw.load_model(tmp_path / "hf", group_size=group_size, max_positions=256)
    lm16 = q4gsw.load_model(tmp_path / "hf", group_size=group_size, max_positions=256, kv_cache="f16")
    load_oracle(model, lm32.weights)
    yield model, lm32, lm16
    lm32.release()
    lm16.release()


@pytest.mark.usefixtures("needs_f16")
class TestModelF16:
    @pytest.mark.parametrize("models", CASES, ids=[c[0] for c in CASES], indirect=True)
    def test_logits(self, models, rng):
        """Logits of 70 positions: equal to the float64 forward reading the halves the GPU cache
        holds to the f32 path's tolerance; within KV_F16_RTOL of the f32 path and transformers."""
        model, lm32, lm16 = models
        ids = rng.integers(0, TINY["vocab_size"], 70)
        ours, f32, theirs = lm16.logits(ids), lm32.logits(ids), hf_logits(model, ids)
        halves = {i: (k.numpy()[:, :70], v.numpy()[:, :70]) for i, (k, v) in enumerate(zip(lm16._k_cache, lm16._v_cache))}
        assert all(k.dtype == np.float16 for k, _ in halves.values())
        assert relative(ours, reference_logits(lm16.weights, ids, kv_override=halves)) <= LOGITS_RTOL
        exact, rounded = reference_logits(lm16.weights, ids), reference_logits(lm16.weights, ids, kv_cache="f16")
        assert 0 < relative(rounded, exact) <= KV_F16_RTOL - LOGITS_RTOL  # what f16 rounding itself does
        assert relative(ours, f32) <= KV_F16_RTOL and relative(ours, theirs) <= KV_F16_RTOL

    @pytest.mark.parametrize("models", CASES, ids=[c[0] for c in CASES], indirect=True)
    def test_greedy(self, models, rng):
        """40 greedy tokens from a 13-token prompt (across the decode step's 64-key splits): each
        is transformers' argmax after the same prefix, or within 2 KV_F16_RTOL of it (where the
        f16 rounding may swap two logits); the ids equal transformers' greedy ids up to the first
        step where its top two logits are that close (the f32 cache: all 40 equal)."""
        model, lm32, lm16 = models
        prompt = rng.integers(0, TINY["vocab_size"], 13)
        ours = lm16.generate(prompt, 40, eos_token_ids=())
        chose = hf_logits(model, np.concatenate([prompt, ours[:-1]]))[12:]
        slack = 2 * KV_F16_RTOL * np.abs(chose).max()
        assert (chose.max(axis=-1) - chose[np.arange(40), ours] <= slack).all()
        theirs = hf_generate(model, prompt, 40)
        logits = hf_logits(model, theirs[:-1])[12:]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        close = np.flatnonzero(top2[:, 1] - top2[:, 0] <= 2 * KV_F16_RTOL * np.abs(logits).max())
        safe = int(close[0]) if close.size else 40
        assert ours[:safe] == list(theirs[13:13 + safe])
        assert lm32.generate(prompt, 40, eos_token_ids=()) == list(theirs[13:])

    @pytest.mark.parametrize("models", CASES[:1], ids=CASES[0][:1], indirect=True)
    def test_half_the_memory(self, models, runtime):
        """The f16 caches take half the f32 caches' bytes; kv_cache says which is which."""
        _, lm32, lm16 = models
        assert (lm32.kv_cache, lm16.kv_cache) == ("f32", "f16")
        assert lm16.kv_cache_bytes_per_token * 2 == lm32.kv_cache_bytes_per_token == 2 * 2 * 2 * 32 * 4
        size = sum(int(t.buffer.size) for t in lm16._k_cache + lm16._v_cache)
        assert size * 2 == sum(int(t.buffer.size) for t in lm32._k_cache + lm32._v_cache)
