"""Tests of q4gsw.tools.torch_llm on the CPU: the tinygemm weight conversion, the torch decoder
against q4gsw's float64 reference, cached greedy decoding, the compiled step, the benchmark's
plumbing. The CUDA kernels themselves (tinygemm, CUDA graphs) run only on the lead's GPU."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import q4gsw
from q4gsw.llm import DecoderConfig, Llama3RopeScaling, random_weights, reference_generate, reference_logits
from q4gsw.llm.weights import dense
from q4gsw.quantize import quantize
from q4gsw.tools import torch_llm as tl

#: Max |logit diff| / max |logit| of the float32 torch model against the float64 reference
#: (the bar of tests/llm_fixtures.py, float32 sums of <= 256 terms).
LOGITS_RTOL = 1e-4
CPU_INT4 = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
needs_cpu_int4 = pytest.mark.skipif(not CPU_INT4, reason="this torch has no _weight_int4pack_mm_for_cpu")

#: Tiny shapes tinygemm takes: every K a multiple of 128, every N of 16 (its CPU variant).
TINY = {"vocab_size": 320, "hidden_size": 128, "intermediate_size": 256, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2, "head_dim": 32, "max_position_embeddings": 1024}
CONFIGS = {
    "llama3-rope": DecoderConfig("LlamaForCausalLM", **TINY, rope_theta=500000.0,
                                 rope_scaling=Llama3RopeScaling(32.0, 1.0, 4.0, 256)),
    "llama-bias-tied": DecoderConfig("LlamaForCausalLM", **TINY, qkv_bias=True, o_bias=True, tie_word_embeddings=True),
    "qwen2-window": DecoderConfig("Qwen2ForCausalLM", **TINY, qkv_bias=True, sliding_window=8, sliding_layers=(1,)),
}


def weights_of(name: str, group_size: int = 32, seed: int = 0):
    return random_weights(CONFIGS[name], group_size=group_size, seed=seed)


def logits_of(model, ids) -> np.ndarray:
    """(T, vocab) float64 logits of the torch model, prefilled from position 0 in one chunk."""
    ids = torch.from_numpy(np.asarray(ids, np.int64))
    with torch.no_grad():
        return model(ids, torch.arange(len(ids)), kv_len=len(ids), every_position=True).double().numpy()


def assert_logits_close(ours, ref, rtol=LOGITS_RTOL):
    ratio = float(np.abs(ours - ref).max() / np.abs(ref).max())
    assert ratio <= rtol, f"max |logit diff| / max |logit| = {ratio:.2e} > {rtol:.0e}"


def greedy(model, prompt, steps, *, step=None, chunk=tl.PREFILL_CHUNK, kv_len=None) -> np.ndarray:
    """prompt + `steps` greedy tokens: prefill's token, then steps - 1 decode steps."""
    ids = torch.from_numpy(np.asarray(prompt, np.int64))
    with torch.no_grad():
        first = tl.prefill(model, ids, chunk=chunk)
        rest = tl.generate(model, step or tl.decode_one_token, first, len(prompt), steps - 1,
                           kv_len=kv_len or model.max_positions)
    return np.concatenate([prompt, first.numpy(), rest.numpy()])


class TestTinygemmBytes:
    def test_matches_torch_packing(self, rng):
        """The bytes are torch's tinygemm packing `u[:, ::2] << 4 | u[:, 1::2]` (torch's
        _group_quantize_tensor, the input of _convert_weight_to_int4pack) of q4gsw's unsigned
        values u = q + 8."""
        w = quantize(rng.standard_normal((24, 256)).astype(np.float32), 64)
        u = torch.from_numpy(w.unpack().astype(np.int32) + 8)
        expected = (u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8)
        packed, _ = tl.upload(w, "cpu")
        assert torch.equal(tl.tinygemm_bytes(packed), expected)

    def test_values_roundtrip(self, rng):
        """tinygemm_values reads back u = q + 8 for every element."""
        w = quantize(rng.standard_normal((16, 128)).astype(np.float32), 32)
        packed, _ = tl.upload(w, "cpu")
        np.testing.assert_array_equal(tl.tinygemm_values(tl.tinygemm_bytes(packed)).numpy(), w.unpack() + 8)

    def test_scales_and_zeros(self, rng):
        """(G, N, 2): q4gsw's scales rounded to bf16, zeros all 0."""
        w = quantize(rng.standard_normal((16, 256)).astype(np.float32), 64)
        _, scales = tl.upload(w, "cpu")
        sz = tl.scales_and_zeros(scales, torch.bfloat16)
        assert sz.shape == (4, 16, 2) and sz.dtype == torch.bfloat16
        assert torch.equal(sz[..., 0], torch.from_numpy(w.scales[:4, :16]).to(torch.bfloat16))
        assert not sz[..., 1].any()

    def test_dequantize_is_dense(self, rng):
        """The device dequantization equals q4gsw's dense() bit for bit (odd K, rows past a chunk)."""
        w = quantize(rng.standard_normal((tl.DEQUANT_ROWS + 3, 67)).astype(np.float32), 32)
        packed, scales = tl.upload(w, "cpu")
        out = tl.dequantize(packed, scales, in_features=67, group_size=32, dtype=torch.float32)
        np.testing.assert_array_equal(out.numpy(), dense(w))


class TestTinygemmUnsupported:
    @pytest.mark.parametrize(("n", "k", "gs", "fragment"), [
        (16, 256, 16, "group size 16"), (16, 192, 64, "K = 192"), (16, 128, 256, "K = 128"), (12, 256, 64, "N = 12")])
    def test_reasons(self, n, k, gs, fragment):
        """Each constraint of int4mm.cu is named in the reason."""
        assert fragment in tl.tinygemm_unsupported(n, k, gs)

    def test_cpu_n_tile(self):
        """The CPU variant needs N % 16 == 0 where CUDA needs N % 8 == 0."""
        assert tl.tinygemm_unsupported(24, 256, 64) is None
        assert "multiple of 16" in tl.tinygemm_unsupported(24, 256, 64, cuda=False)

    def test_supported(self):
        """Llama-3-8B's shapes at group size 128 pass."""
        for n, k in [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]:
            assert tl.tinygemm_unsupported(n, k, 128) is None

    def test_int4_model_refuses(self):
        """from_decoder_weights(int4=True) raises UnsupportedShapeError for a hidden size of 96."""
        config = dataclasses.replace(CONFIGS["llama3-rope"], hidden_size=96)
        with pytest.raises(q4gsw.UnsupportedShapeError, match="K = 96"):
            tl.from_decoder_weights(random_weights(config, group_size=32), "cpu", torch.float32, int4=True)


@needs_cpu_int4
class TestInt4Linear:
    @pytest.mark.parametrize("gs", [32, 128, 256])
    def test_matches_reference(self, rng, gs):
        """Through torch's CPU int4 kernel (fed from the tinygemm bytes), y = x @ W.T + b equals
        q4gsw's float64 linear_reference: nibble order, scale layout and zero point all hold."""
        w = quantize(rng.standard_normal((48, 512)).astype(np.float32), gs)
        bias = rng.standard_normal(48).astype(np.float32)
        x = rng.standard_normal((5, 512)).astype(np.float32)
        packed, scales = tl.upload(w, "cpu")
        layer = tl.Int4Linear(packed, scales, in_features=512, group_size=gs, bias=torch.from_numpy(bias),
                              dtype=torch.float32)
        y = layer(torch.from_numpy(x)).double().numpy()
        ref = q4gsw.linear_reference(x, w, bias)
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


class TestInt4LinearCuda:
    def test_cuda_ops_take_the_layout(self):
        """Under FakeTensorMode with a fake CUDA device, the CUDA branch runs the meta kernels
        of _convert_weight_to_int4pack and _weight_int4pack_mm: (N/8, K/128, 32, 4) int32
        packed weight, (K/gs, N, 2) bf16 scales_and_zeros, (M, N) bf16 out on CUDA."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            packed = torch.empty(6144, 2048, dtype=torch.uint8, device="cuda")
            scales = torch.empty(32, 6144, dtype=torch.float32, device="cuda")
            layer = tl.Int4Linear(packed, scales, in_features=4096, group_size=128, bias=None, dtype=torch.bfloat16)
            y = layer(torch.empty(3, 4096, dtype=torch.bfloat16, device="cuda"))
            assert layer.on_cuda and layer.weight.shape == (768, 32, 32, 4) and layer.weight.dtype == torch.int32
            assert layer.scales_and_zeros.shape == (32, 6144, 2) and layer.scales_and_zeros.dtype == torch.bfloat16
            assert y.shape == (3, 6144) and y.dtype == torch.bfloat16 and y.device.type == "cuda"
            with pytest.raises(q4gsw.DTypeError, match="bfloat16"):
                tl.Int4Linear(packed, scales, in_features=4096, group_size=128, bias=None, dtype=torch.float16)


class TestFromDecoderWeights:
    @pytest.mark.parametrize("name", sorted(CONFIGS))
    @pytest.mark.parametrize("int4", [False, pytest.param(True, marks=needs_cpu_int4)], ids=["dense", "int4"])
    def test_logits_match_reference(self, name, int4):
        """float32 on the CPU: logits at all 24 positions equal reference_logits (float64)."""
        weights = weights_of(name)
        model = tl.from_decoder_weights(weights, "cpu", torch.float32, int4=int4, max_positions=64)
        assert all(isinstance(m, tl.Int4Linear if int4 else tl.DenseLinear) for m in model.blocks[0].children()
                   if isinstance(m, (tl.Int4Linear, tl.DenseLinear)))
        ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], 24)
        assert_logits_close(logits_of(model, ids), reference_logits(weights, ids))

    def test_window_is_exercised(self):
        """Dropping Qwen2's window changes the logits from position 8 on: the comparison above is not vacuous."""
        weights = weights_of("qwen2-window")
        full = dataclasses.replace(weights, config=dataclasses.replace(weights.config, sliding_window=None,
                                                                       sliding_layers=()))
        ids = np.arange(20) * 7
        a = logits_of(tl.from_decoder_weights(weights, "cpu", torch.float32, max_positions=32), ids)
        b = logits_of(tl.from_decoder_weights(full, "cpu", torch.float32, max_positions=32), ids)
        diff = np.abs(a - b).max(axis=1)
        assert (diff[:8] == 0).all() and (diff[8:] > 1e-3).all()

    def test_bfloat16_close(self):
        """In bf16 (the benchmark's dtype) the logits stay within bf16 error of the reference."""
        weights = weights_of("llama3-rope")
        model = tl.from_decoder_weights(weights, "cpu", torch.bfloat16, int4=CPU_INT4, max_positions=32)
        ids = np.arange(16) * 11
        assert_logits_close(logits_of(model, ids), reference_logits(weights, ids), rtol=5e-2)

    def test_defaults(self):
        """On a CPU the default is dense bf16 with a cache of min(max_position_embeddings, 4096)."""
        model = tl.from_decoder_weights(weights_of("llama3-rope"), "cpu")
        assert model.embed.dtype == torch.bfloat16 and model.max_positions == 1024
        assert isinstance(model.lm_head, tl.DenseLinear)
        assert model.blocks[0].k_cache.shape == (1, 2, 1024, 32)


class TestGenerate:
    @pytest.mark.parametrize("name", sorted(CONFIGS))
    @pytest.mark.parametrize("int4", [False, pytest.param(True, marks=needs_cpu_int4)], ids=["dense", "int4"])
    def test_greedy_matches_reference(self, name, int4):
        """Prefill of 13 tokens, then 19 cached decode steps: the 20 tokens equal
        reference_generate's (which recomputes the whole sequence every step)."""
        weights = weights_of(name, seed=3)
        model = tl.from_decoder_weights(weights, "cpu", torch.float32, int4=int4, max_positions=40)
        prompt = np.random.default_rng(2).integers(0, TINY["vocab_size"], 13)
        ours = greedy(model, prompt, 20)
        np.testing.assert_array_equal(ours, reference_generate(weights, prompt, 20))
        assert len(set(ours[13:].tolist())) > 5

    def test_cached_step_equals_recompute(self):
        """Each decode step's logits, from the static cache, equal the last row of a full
        recompute of the sequence so far."""
        weights = weights_of("qwen2-window", seed=5)
        model = tl.from_decoder_weights(weights, "cpu", torch.float32, max_positions=48)
        seq = list(np.random.default_rng(4).integers(0, TINY["vocab_size"], 6))
        with torch.no_grad():
            tl.prefill(model, torch.tensor(seq))
            for _ in range(12):
                token = int(np.argmax(reference_logits(weights, seq)[-1]))
                logits = model(torch.tensor([token]), torch.tensor([len(seq)]), kv_len=48).double().numpy()
                seq.append(token)
                assert_logits_close(logits[0], reference_logits(weights, seq)[-1])

    def test_chunked_prefill_and_short_kv_len(self):
        """Prefill in chunks of 5 and decode attending 32 of 64 cache positions give the tokens
        of one-chunk prefill over the whole cache."""
        model = tl.from_decoder_weights(weights_of("llama3-rope", seed=6), "cpu", torch.float32, max_positions=64)
        prompt = np.arange(17) * 13 % TINY["vocab_size"]
        whole = greedy(model, prompt, 12)
        np.testing.assert_array_equal(greedy(model, prompt, 12, chunk=5, kv_len=32), whole)


class TestCompileDecode:
    def test_one_graph_tokens_equal_eager(self):
        """decode_one_token traces as one graph (fullgraph=True, aot_eager on the CPU) that
        serves three kv_len values without a recompile, and gives the eager tokens."""
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = tl.from_decoder_weights(weights_of("qwen2-window", seed=7), "cpu", torch.float32, max_positions=128)
        step = tl.compile_decode(mode=None, backend="aot_eager")
        prompt = np.arange(9) * 5
        for kv_len in (32, 64, 96):
            np.testing.assert_array_equal(greedy(model, prompt, 8, step=step, kv_len=kv_len), greedy(model, prompt, 8))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


class TestBenchmark:
    def test_skips_without_cuda(self, monkeypatch):
        """Without CUDA (and no device given) the result is one 'skipped' entry, before any weights are made."""
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(tl, "random_weights", lambda *a, **k: pytest.fail("built weights"))
        result = tl.benchmark(q4gsw.llm.PRESETS["llama-3-8b"])
        assert list(result) == ["skipped"] and "CUDA" in result["skipped"]

    def test_cpu_run(self):
        """On the CPU (eager only) every context gets tokens/s, bytes and its kv_len; prefill is timed."""
        r = tl.benchmark(CONFIGS["llama3-rope"], contexts=(40, 8), new_tokens=4, group_size=32, compile=False,
                         prefill_tokens=16, device="cpu")
        assert r["device"] == "cpu" and r["int4"] == CPU_INT4 and r["group_size"] == 32
        assert [row["context"] for row in r["contexts"]] == [8, 40]
        assert [row["kv_len"] for row in r["contexts"]] == [64, 64] and r["max_positions"] == 128
        for row in r["contexts"]:
            assert row["eager_tokens_per_s"] > 0 and "tokens_per_s" not in row
            assert row["decode_bytes_per_token"] > r["weight_bytes_per_token"] > 0
        assert r["prefill_tokens_per_s"] > 0
        json.dumps(r)

    @pytest.mark.slow
    def test_cpu_run_compiled(self):
        """The benchmark's own compiled step (Inductor, reduce-overhead; no CUDA graphs on a CPU)
        compiles once and times every context, without a compile error."""
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        r = tl.benchmark(CONFIGS["qwen2-window"], contexts=(8, 70), new_tokens=4, group_size=32, tune=False,
                         prefill_tokens=16, device="cpu")
        assert "compile_error" not in r
        assert [row["kv_len"] for row in r["contexts"]] == [64, 128]
        assert all(row["tokens_per_s"] > 0 and row["same_tokens_as_eager"] >= 0 for row in r["contexts"])
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1

    def test_main_writes_json(self, tmp_path, monkeypatch):
        """main() writes the benchmark's dict, with the preset, to --out."""
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        out = tmp_path / "r.json"
        assert tl.main(["--preset", "qwen2.5-0.5b", "--contexts", "128", "--out", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["preset"] == "qwen2.5-0.5b" and "skipped" in result
