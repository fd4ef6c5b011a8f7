"""Tests of q4gsw.demos.decode: the chained decode step against its float64 reference, and the demo's report."""

from __future__ import annotations

import numpy as np

from q4gsw.chain import Chain
from q4gsw.demos.decode import DecodeShape, embedding, random_model, record_decode_step, reference_logits, run_decode_demo

TINY = DecodeShape(hidden=64, intermediate=96, heads=4, kv_heads=2, vocab=50)


class TestRecordDecodeStep:
    def test_matches_reference(self, runtime):
        """One chained decode step (2 blocks) gives the float64 reference's logits within 1e-5 of their scale."""
        model = random_model(TINY, layers=2, group_size=32, seed=3)
        with Chain() as chain:
            x, logits = record_decode_step(chain, model, TINY)
            x0 = embedding(7, TINY.hidden)
            chain.run({x: x0})
            got = logits.numpy()
        ref = reference_logits(x0, model, TINY)
        assert np.isfinite(got).all()
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


class TestRunDecodeDemo:
    def test_reports(self, runtime):
        """The demo decodes the asked number of tokens and reports tokens/s, dispatches and the check."""
        lines = []
        r = run_decode_demo(layers=1, tokens=3, group_size=32, shape=TINY, out=lines.append)
        assert len(r["tokens"]) == 3 and all(0 <= t < TINY.vocab for t in r["tokens"])
        assert r["tokens_per_s"] > 0 and r["dispatches_per_token"] == 15
        assert r["rel_error"] < 1e-5
        assert any("tokens/s" in line for line in lines)
