"""Tests of q4gsw.llm.reference against transformers (float32, eager attention) on the same int4 weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import q4gsw
from q4gsw.llm import load_checkpoint, reference_generate, reference_logits

from .llm_fixtures import TINY, assert_logits_close, hf_generate, hf_logits, load_oracle, tiny_model

#: (model kind, tiny_model kwargs, group size): GQA + Llama 3 RoPE untied and tied, Qwen2 with
#: q/k/v bias and a window on layer 1, Mistral with a window on every layer and head_dim 16.
CASES = [("llama", {}, 32), ("llama", {"tied": True}, 64), ("qwen2", {"tied": True}, 32), ("mistral", {}, 64)]
IDS = ["llama-untied-g32", "llama-tied-g64", "qwen2-tied-g32", "mistral-g64"]


def oracle_pair(tmp_path, rng, kind, kwargs, group_size):
    """(transformers model holding q4gsw's dequantized weights, DecoderWeights) of a fresh tiny model."""
    model = tiny_model(rng, kind, **kwargs)
    model.save_pretrained(tmp_path / "hf")
    weights = load_checkpoint(tmp_path / "hf", group_size=group_size)
    load_oracle(model, weights)
    return model, weights


class TestReferenceLogits:
    @pytest.mark.parametrize(("kind", "kwargs", "group_size"), CASES, ids=IDS)
    def test_matches_transformers(self, tmp_path, rng, kind, kwargs, group_size):
        """Logits at all 40 positions agree with transformers to LOGITS_RTOL of max |logit|."""
        model, weights = oracle_pair(tmp_path, rng, kind, kwargs, group_size)
        ids = rng.integers(0, TINY["vocab_size"], 40)
        ours = reference_logits(weights, ids)
        assert ours.shape == (40, TINY["vocab_size"]) and ours.dtype == np.float64
        assert_logits_close(ours, hf_logits(model, ids))

    def test_window_is_exercised(self, tmp_path, rng):
        """Without Mistral's window of 8 the logits change from position 8 on, not before:
        the sliding-window comparison above is not vacuous."""
        _, weights = oracle_pair(tmp_path, rng, "mistral", {}, 32)
        ids = rng.integers(0, TINY["vocab_size"], 20)
        full = dataclasses.replace(weights, config=dataclasses.replace(weights.config, sliding_window=None,
                                                                       sliding_layers=()))
        diff = np.abs(reference_logits(weights, ids) - reference_logits(full, ids)).max(axis=1)
        assert (diff[:8] == 0).all() and (diff[8:] > 1e-3).all()

    def test_bad_ids(self, tmp_path, rng):
        """Ids outside the vocabulary, empty or 2-D ids are refused by name."""
        _, weights = oracle_pair(tmp_path, rng, "llama", {}, 32)
        with pytest.raises(q4gsw.ValueRangeError, match="'ids'"):
            reference_logits(weights, [0, TINY["vocab_size"]])
        with pytest.raises(q4gsw.ShapeError, match="'ids'"):
            reference_logits(weights, np.zeros((2, 3), np.int64))
        with pytest.raises(q4gsw.ShapeError, match="'ids'"):
            reference_logits(weights, [])


class TestReferenceGenerate:
    @pytest.mark.parametrize(("kind", "kwargs", "group_size"), CASES, ids=IDS)
    def test_matches_transformers(self, tmp_path, rng, kind, kwargs, group_size):
        """32 greedy tokens after a 13-token prompt (positions 13..44: across 16 and 32, and past
        the window of 8) equal transformers' generate(do_sample=False) with its KV cache."""
        model, weights = oracle_pair(tmp_path, rng, kind, kwargs, group_size)
        prompt = rng.integers(0, TINY["vocab_size"], 13)
        ours = reference_generate(weights, prompt, 32)
        np.testing.assert_array_equal(ours, hf_generate(model, prompt, 32))
        assert len(ours) == 45 and len(set(ours[13:].tolist())) > 8  # not one token repeated

    def test_stops_at_eos(self, tmp_path, rng):
        """Generation stops right after a token in eos_token_ids."""
        _, weights = oracle_pair(tmp_path, rng, "llama", {}, 32)
        prompt = rng.integers(0, TINY["vocab_size"], 5)
        free = reference_generate(weights, prompt, 6)
        stopped = reference_generate(weights, prompt, 6, eos_token_ids=[int(free[7])])
        np.testing.assert_array_equal(stopped, free[:len(stopped)])
        assert stopped[-1] == free[7] and len(stopped) <= 8
