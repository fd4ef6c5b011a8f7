"""Tests of q4gsw.llm.CausalLM on the GPU adapter against transformers (float32, eager
attention) holding the same int4 weights (dequantized_state_dict), and against the float64
reference: logits, greedy generation across KV-cache blocks, sampling, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.chain import Chain, upload
from q4gsw.llm import CausalLM, DecoderConfig, random_weights, reference_logits
from q4gsw.llm import ops
from q4gsw.llm.model import DECODE_SPLIT_KEYS
from q4gsw.llm.sampling import Sampling

from .llm_fixtures import TINY, assert_logits_close, hf_generate, hf_logits, load_oracle, tiny_model, write_llama_gguf

#: (model kind, tiny_model kwargs, group size, save_pretrained kwargs)
CASES = [("llama", {}, 32, {"max_shard_size": "40KB"}), ("llama", {"tied": True}, 64, {}),
         ("qwen2", {}, 32, {}), ("mistral", {"tied": True}, 64, {})]
IDS = ["llama-untied-g32-sharded", "llama-tied-g64", "qwen2-g32", "mistral-tied-g64"]


@pytest.fixture
def pair(runtime, tmp_path, rng, request):
    """(transformers model with q4gsw's dequantized weights, q4gsw.load_model of its checkpoint)."""
    kind, kwargs, group_size, save = request.param
    model = tiny_model(rng, kind, **kwargs)
    model.save_pretrained(tmp_path / "hf", **save)
    lm = q4gsw.load_model(tmp_path / "hf", group_size=group_size, max_positions=256)
    load_oracle(model, lm.weights)
    yield model, lm
    lm.release()


class TestLogits:
    @pytest.mark.parametrize("pair", CASES, ids=IDS, indirect=True)
    def test_matches_transformers(self, pair, rng):
        """Logits of all 70 positions (across the 64-key tile) agree with transformers."""
        model, lm = pair
        ids = rng.integers(0, TINY["vocab_size"], 70)
        ours = lm.logits(ids)
        assert ours.shape == (70, TINY["vocab_size"]) and ours.dtype == np.float32
        assert_logits_close(ours, hf_logits(model, ids))


class TestGenerate:
    @pytest.mark.parametrize("pair", CASES, ids=IDS, indirect=True)
    @pytest.mark.parametrize("prompt_len", [13, 70])
    def test_greedy_matches_transformers(self, pair, rng, prompt_len):
        """40 greedy tokens equal transformers' generate(do_sample=False): from a 13-token prompt
        across the 64-key split boundary of the decode step, from a 70-token prompt (prefill
        over two tiles) to position 110."""
        model, lm = pair
        prompt = rng.integers(0, TINY["vocab_size"], prompt_len)
        streamed = []
        ours = lm.generate(prompt, 40, on_token=streamed.append, eos_token_ids=())
        theirs = hf_generate(model, prompt, 40)[prompt_len:]
        np.testing.assert_array_equal(ours, theirs)
        assert streamed == ours and len(set(ours)) > 8
        stats = lm.last_stats
        assert stats.prompt_tokens == prompt_len and stats.new_tokens == 40 and stats.decode_tokens_per_s > 0

    @pytest.mark.parametrize("pair", CASES[:1], ids=IDS[:1], indirect=True)
    def test_stops_at_eos(self, pair, rng):
        """Generation ends right after a token of eos_token_ids (included), as transformers' does."""
        _, lm = pair
        prompt = rng.integers(0, TINY["vocab_size"], 9)
        free = lm.generate(prompt, 12, eos_token_ids=())
        stop = free[6]
        stopped = lm.generate(prompt, 12, eos_token_ids=[stop])
        assert stopped == free[: free.index(stop) + 1]

    @pytest.mark.parametrize("pair", CASES[:1], ids=IDS[:1], indirect=True)
    def test_profile_labels(self, pair, rng):
        """Inside q4gsw.profile() every dispatch of a step is timed under its kernel's label."""
        _, lm = pair
        with q4gsw.profile() as prof:
            lm.generate(rng.integers(0, TINY["vocab_size"], 5), 3, eos_token_ids=())
        labels = {r["label"] for r in prof.rows()}
        assert {"llm/embed_rows", "llm/rope_kv", "llm/attention", "llm/attention_combine", "llm/add_rms_norm",
                "llm/swiglu", "llm/argmax_final"} <= labels
        assert any(label.startswith("linear_q4gsw/") for label in labels)


class TestGguf:
    def test_generate_matches_transformers(self, runtime, tmp_path, rng):
        """A llama.cpp-style Q4_0 GGUF (q/k rows permuted) generates what transformers does
        with the same dequantized weights."""
        model = tiny_model(rng, "llama")
        write_llama_gguf(tmp_path / "m.gguf", model)
        lm = q4gsw.load_model(tmp_path / "m.gguf", max_positions=128)
        load_oracle(model, lm.weights)
        prompt = rng.integers(0, TINY["vocab_size"], 11)
        np.testing.assert_array_equal(lm.generate(prompt, 32, eos_token_ids=()), hf_generate(model, prompt, 32)[11:])
        lm.release()


def tiny_weights(seed: int = 0, **changes):
    config = DecoderConfig(**{**dict(architecture="LlamaForCausalLM", vocab_size=96, hidden_size=32,
                                     intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                                     max_position_embeddings=128), **changes})
    return random_weights(config, group_size=32, seed=seed)


class TestRandomWeights:
    def test_long_generation_matches_reference(self, runtime):
        """Generation to position 120 of 128 (decode split over two blocks of 64 keys, the
        last block partly filled) matches the float64 reference's greedy tokens."""
        weights = tiny_weights(3)
        lm = CausalLM(weights, max_positions=128)
        assert lm.max_positions // DECODE_SPLIT_KEYS == 2
        prompt = np.arange(1, 21)
        ours = lm.generate(prompt, 100, eos_token_ids=())
        seq = list(prompt) + ours
        ref = reference_logits(weights, seq[:-1])
        assert ours == [int(np.argmax(row)) for row in ref[len(prompt) - 1:]]
        lm.release()


class TestSampling:
    def test_distribution(self, runtime, rng):
        """Tokens drawn by sample.wgsl over many steps follow softmax(logits / T) restricted to
        the top k and then the top p (chi-square against the exact probabilities)."""
        logits = (rng.standard_normal(40) * 2).astype(np.float32)
        temperature, top_k, top_p = 1.5, 12, 0.8
        scaled = logits.astype(np.float64) / temperature
        keep = scaled >= np.sort(scaled)[-top_k]
        p = np.where(keep, np.exp(scaled - scaled.max()), 0)
        p /= p.sum()
        order = np.argsort(-p)
        kept_p = order[: np.searchsorted(np.cumsum(p[order]), top_p) + 1]  # smallest set with mass >= top_p
        expected = np.zeros_like(p)
        expected[kept_p] = p[kept_p] / p[kept_p].sum()
        draws = 3000
        usage = runtime.wgpu.BufferUsage
        counts = np.zeros(40)
        with Chain() as chain:
            ids = chain.input((1,), dtype="uint32")
            generated = chain.input((draws,), dtype="uint32")
            state = runtime.buffers.create(16, usage.UNIFORM | usage.COPY_DST, "test/state")
            params = runtime.buffers.upload(Sampling(temperature, top_k, top_p, 1234).words(), usage.UNIFORM, "test/s")
            ops.sample(chain, upload(logits[None]), ids, generated, state, params)
            for step in range(draws):
                runtime.device.queue.write_buffer(state, 0, np.array([0, step, 0, 0], np.uint32))
                chain.run()
            tokens = generated.numpy()
        np.add.at(counts, tokens, 1)
        assert counts[expected == 0].sum() == 0, "a token outside top-k / top-p was drawn"
        nz = expected > 0
        chi2 = float((((counts - draws * expected) ** 2)[nz] / (draws * expected[nz])).sum())
        assert chi2 < 3 * nz.sum() + 30, f"chi-square {chi2:.1f} over {nz.sum()} tokens"

    def test_seeded_generate_repeats(self, runtime):
        """The same seed gives the same tokens; another seed other tokens; top_k=1 is greedy."""
        lm = CausalLM(tiny_weights(5), max_positions=64)
        prompt = [3, 1, 4]
        a = lm.generate(prompt, 20, temperature=1.0, seed=7, eos_token_ids=())
        assert a == lm.generate(prompt, 20, temperature=1.0, seed=7, eos_token_ids=())
        assert a != lm.generate(prompt, 20, temperature=1.0, seed=8, eos_token_ids=())
        assert lm.generate(prompt, 20, temperature=0.7, top_k=1, seed=1, eos_token_ids=()) == \
            lm.generate(prompt, 20, eos_token_ids=())
        lm.release()


class TestBadInput:
    @pytest.mark.parametrize(("kwargs", "error", "fragment"), [
        (dict(input_ids=[], max_new_tokens=4), q4gsw.ShapeError, "'input_ids'"),
        (dict(input_ids=[[1, 2], [3, 4]], max_new_tokens=4), q4gsw.ShapeError, "'input_ids'"),
        (dict(input_ids=[1, 96], max_new_tokens=4), q4gsw.ArgumentError, "'input_ids'"),
        (dict(input_ids=[1.5], max_new_tokens=4), q4gsw.ShapeError, "'input_ids'"),
        (dict(input_ids=list(range(60)), max_new_tokens=5), q4gsw.ShapeError, "max_positions"),
        (dict(input_ids=[1], max_new_tokens=0), q4gsw.ArgumentError, "'max_new_tokens'"),
        (dict(input_ids=[1], max_new_tokens=2, temperature=-1.0), q4gsw.ArgumentError, "'temperature'"),
        (dict(input_ids=[1], max_new_tokens=2, temperature=1.0, top_p=1.5), q4gsw.ArgumentError, "'top_p'"),
        (dict(input_ids=[1], max_new_tokens=2, temperature=1.0, top_k=0), q4gsw.ArgumentError, "'top_k'"),
        (dict(input_ids=[1], max_new_tokens=2, top_k=5), q4gsw.ArgumentError, "'temperature'"),
    ])
    def test_refused_before_gpu_work(self, runtime, no_new_buffers, kwargs, error, fragment):
        """Each bad argument raises a typed error naming it, creating no GPU buffer."""
        lm = CausalLM(tiny_weights(), max_positions=64)
        with no_new_buffers(), pytest.raises(error, match=fragment):
            lm.generate(**kwargs)
        lm.release()

    def test_bad_max_positions(self, runtime):
        """max_positions beyond the model's context is refused by name."""
        with pytest.raises(q4gsw.ArgumentError, match="'max_positions'"):
            CausalLM(tiny_weights(), max_positions=129)


def int8_model(option: dict, ids, label: str, seed: int):
    """(f32 model, model made with `option`, f32 logits of ids) of tiny random weights: the
    second runs ids' linears through `label` (profile) with logits within int8 activation error
    of the f32 model's."""
    weights = tiny_weights(seed, hidden_size=64, intermediate_size=128)
    exact = CausalLM(weights, max_positions=64)
    int8 = CausalLM(weights, max_positions=64, **option)
    ref = exact.logits(ids)
    with q4gsw.profile() as prof:
        got = int8.logits(ids)
    assert label in {r["label"] for r in prof.rows()}
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert 0 < err < 5e-2, err
    return exact, int8, ref


class TestInt8Prefill:
    def test_prefill_linears_run_int8(self, runtime, rng):
        """prefill_activations="int8" runs a long prompt's linears through the int8 route
        (bcast_int8_k64: profile labels), and its logits stay within int8 activation error of
        the f32 model's; short prompts stay f32."""
        ids = rng.integers(0, 96, 20)
        exact, int8, _ = int8_model({"prefill_activations": "int8"}, ids, "linear_q4gsw/bcast_int8", 11)
        with q4gsw.profile() as prof:
            int8.logits(ids[:5])
        assert not any("int8" in r["label"] for r in prof.rows())
        exact.release()
        int8.release()

    def test_decode_linears_run_int8(self, runtime, rng):
        """decode_activations="int8" runs the decode steps' (and short prompts') linears through
        decode_int8 (profile labels), within int8 activation error of the f32 model's logits;
        switching back records f32 chains again."""
        ids = rng.integers(0, 96, 5)
        exact, int8, ref = int8_model({"decode_activations": "int8"}, ids, "linear_q4gsw/decode_int8_subgroup", 12)
        with q4gsw.profile() as prof:
            int8.generate(ids, 3, eos_token_ids=())
        assert "linear_q4gsw/decode_int8_subgroup" in {r["label"] for r in prof.rows()}
        int8.decode_activations = "f32"
        np.testing.assert_allclose(int8.logits(ids), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        exact.release()
        int8.release()

    def test_cli_options(self, runtime, tmp_path, capsys):
        """`q4gsw generate PATH --decode-activations int8 --prefill-activations int8` streams the
        tokens load_model(...) with the same options generates."""
        from q4gsw import cli

        from .test_llm_kv_f16 import tiny_checkpoint

        path = tiny_checkpoint(tmp_path / "ckpt")
        assert cli.main(["generate", str(path), "--ids", "5,6,7", "--max-new-tokens", "6",
                         "--decode-activations", "int8", "--prefill-activations", "int8"]) == 0
        out = capsys.readouterr().out
        model = q4gsw.load_model(path, decode_activations="int8", prefill_activations="int8")
        text = model.decode(model.generate([5, 6, 7], 6))
        assert text and text in out and "6 new tokens" in out
        model.release()

    def test_bad_option(self, runtime):
        """prefill_activations and decode_activations are 'f32' or 'int8'."""
        with pytest.raises(q4gsw.ArgumentError, match="'prefill_activations'"):
            CausalLM(tiny_weights(), prefill_activations="int4")
        with pytest.raises(q4gsw.ArgumentError, match="'decode_activations'"):
            CausalLM(tiny_weights(), decode_activations="f16")


class TestDenseLayers:
    def test_mixed_precision_checkpoint(self, runtime, tmp_path, rng):
        """Linears a checkpoint keeps dense (float32: the LM head, layer 1's o_proj, layer 0's
        gate/up) run on dense_linear beside the int4 ones; logits and greedy tokens equal
        transformers' on the same numbers."""
        model = tiny_model(rng, "llama")
        model.save_pretrained(tmp_path / "hf")
        dense = {"lm_head.weight", "model.layers.1.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight"}
        lm = q4gsw.load_model(tmp_path / "hf", group_size=32, max_positions=128, keep_dense=dense.__contains__)
        assert isinstance(lm.weights.lm_head, np.ndarray) and isinstance(lm.weights.layers[0].gate_up, np.ndarray)
        load_oracle(model, lm.weights)
        ids = rng.integers(0, TINY["vocab_size"], 30)
        with q4gsw.profile() as prof:
            ours = lm.logits(ids)
        assert any(r["label"].startswith("dense_linear/") for r in prof.rows())
        assert_logits_close(ours, hf_logits(model, ids))
        prompt = rng.integers(0, TINY["vocab_size"], 9)
        np.testing.assert_array_equal(lm.generate(prompt, 24, eos_token_ids=()), hf_generate(model, prompt, 24)[9:])
        lm.release()
