"""Tests of q4gsw.llm checkpoints: loading Hugging Face, q4gsw and GGUF files, saving, random models, and bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import q4gsw
from q4gsw.format import PackedWeight
from q4gsw.llm import (PRESETS, DecoderConfig, DecoderWeights, load_checkpoint, random_weights, reference_logits,
                       save_checkpoint, write_random_checkpoint)
from q4gsw.llm.tensorfile import SafetensorsFile

from .llm_fixtures import (TINY, assert_logits_close, hf_logits, load_oracle, tiny_model, torch, transformers,
                           write_llama_gguf)

gguf = pytest.importorskip("gguf")
st_numpy = pytest.importorskip("safetensors.numpy")
Q4_0, Q8_0, F16 = gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16


def float_state(model) -> dict[str, np.ndarray]:
    """The model's weights as float32 numpy arrays."""
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def assert_same_weights(a: DecoderWeights, b: DecoderWeights) -> None:
    """Every tensor of a and b identical (PackedWeight bytes and scales, float arrays)."""
    assert a.config == b.config and len(a.layers) == len(b.layers)
    sa, sb = a.dequantized_state_dict(), b.dequantized_state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


@pytest.fixture
def llama_dir(tmp_path, rng):
    """(transformers model, directory) of a tiny untied Llama saved as one model.safetensors."""
    model = tiny_model(rng, "llama")
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


class TestLoadCheckpoint:
    def test_quantized_like_quantize(self, llama_dir):
        """qkv and gate_up are the float rows stacked then quantized with q4gsw.quantize; the
        embedding too; dequantized_state_dict splits them back exactly."""
        model, path = llama_dir
        w = load_checkpoint(path, group_size=32)
        sd = float_state(model)
        p = "model.layers.1."
        qkv = np.concatenate([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        expected = q4gsw.quantize(qkv, 32)
        np.testing.assert_array_equal(w.layers[1].qkv.weights, expected.weights)
        np.testing.assert_array_equal(w.layers[1].qkv.scales, expected.scales)
        assert w.layers[1].gate_up.out_features == 2 * TINY["intermediate_size"]
        np.testing.assert_array_equal(w.embed.weights, q4gsw.quantize(sd["model.embed_tokens.weight"], 32).weights)
        dq = w.dequantized_state_dict()
        for name in (p + "self_attn.k_proj.weight", p + "mlp.up_proj.weight", "lm_head.weight"):
            np.testing.assert_array_equal(dq[name], q4gsw.quantize(sd[name], 32).dequantize().astype(np.float32))
        np.testing.assert_array_equal(dq[p + "input_layernorm.weight"], sd[p + "input_layernorm.weight"])
        assert w.lm_head is not w.embed and w.tokenizer_path is None and w.source == str(path)

    def test_quantized_in_row_chunks(self, llama_dir, monkeypatch):
        """Quantizing a linear in chunks of rows gives the bytes and scales of one quantize() call."""
        model, path = llama_dir
        monkeypatch.setattr("q4gsw.llm.weights.QUANTIZE_ROWS", 100)
        w = load_checkpoint(path, group_size=32)
        expected = q4gsw.quantize(float_state(model)["model.embed_tokens.weight"], 32)
        np.testing.assert_array_equal(w.embed.weights, expected.weights)
        np.testing.assert_array_equal(w.embed.scales, expected.scales)

    def test_sharded_equals_single(self, tmp_path, llama_dir):
        """Shards listed in model.safetensors.index.json load to the same weights as one file."""
        model, path = llama_dir
        model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
        assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
        assert_same_weights(load_checkpoint(path, group_size=64), load_checkpoint(tmp_path / "sharded", group_size=64))

    def test_bf16(self, tmp_path, rng):
        """BF16 tensors are read exactly (the top half of a float32) and then quantized."""
        model = tiny_model(rng, "qwen2").to(torch.bfloat16)
        model.save_pretrained(tmp_path / "bf16")
        assert SafetensorsFile(tmp_path / "bf16" / "model.safetensors").tensors["model.norm.weight"].dtype == "BF16"
        w = load_checkpoint(tmp_path / "bf16", group_size=32)
        sd = float_state(model)
        np.testing.assert_array_equal(w.final_norm, sd["model.norm.weight"])
        np.testing.assert_array_equal(w.layers[0].down.weights,
                                      q4gsw.quantize(sd["model.layers.0.mlp.down_proj.weight"], 32).weights)
        np.testing.assert_array_equal(w.layers[0].qkv_bias[:TINY["hidden_size"]],
                                      sd["model.layers.0.self_attn.q_proj.bias"])

    def test_tied(self, tmp_path, rng):
        """Tied embeddings: lm_head is the embedding object, and no lm_head tensor is needed."""
        model = tiny_model(rng, "llama", tied=True)
        model.save_pretrained(tmp_path / "tied")
        w = load_checkpoint(tmp_path / "tied", group_size=32)
        assert w.lm_head is w.embed and w.config.tie_word_embeddings

    def test_keep_dense(self, llama_dir, rng):
        """keep_dense keeps a linear float32 (the whole fused group), and the model still matches transformers."""
        model, path = llama_dir
        w = load_checkpoint(path, group_size=32,
                            keep_dense=lambda name: name.endswith(("k_proj.weight", "down_proj.weight")))
        sd = float_state(model)
        layer = w.layers[0]
        assert isinstance(layer.qkv, np.ndarray) and layer.qkv.dtype == np.float32
        assert isinstance(layer.down, np.ndarray) and isinstance(layer.gate_up, PackedWeight)
        np.testing.assert_array_equal(layer.qkv[:TINY["hidden_size"] * 2], sd["model.layers.0.self_attn.q_proj.weight"])
        load_oracle(model, w)
        ids = rng.integers(0, TINY["vocab_size"], 24)
        assert_logits_close(reference_logits(w, ids), hf_logits(model, ids))

    def test_progress(self, llama_dir, capsys):
        """progress gets one item per layer plus embedding and head; True writes to stderr."""
        _, path = llama_dir
        seen = []

        def progress(items, total):
            seen.append(total)
            for item in items:
                seen.append(item)
                yield item

        load_checkpoint(path, group_size=32, progress=progress)
        assert seen == [4, "embedding", "layer 0", "layer 1", "final norm and LM head"]
        load_checkpoint(path, group_size=32, progress=True)
        assert capsys.readouterr().err

    def test_ignores_rotary_buffers(self, tmp_path, llama_dir):
        """Old checkpoints' rotary_emb.inv_freq tensors are ignored."""
        model, _ = llama_dir
        tensors = float_state(model)
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(16, np.float32)
        out = tmp_path / "old"
        out.mkdir()
        st_numpy.save_file(tensors, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps({**model.config.to_dict(), "architectures": ["LlamaForCausalLM"]}))
        assert len(load_checkpoint(out, group_size=32).layers) == 2


class TestSaveCheckpoint:
    def test_roundtrip(self, tmp_path, llama_dir):
        """save_checkpoint then load_checkpoint gives identical weights; the int4 file is a q4gsw.io file."""
        _, path = llama_dir
        w = load_checkpoint(path, group_size=32)
        save_checkpoint(w, tmp_path / "q4")
        back = load_checkpoint(tmp_path / "q4")
        assert_same_weights(w, back)
        np.testing.assert_array_equal(back.layers[1].qkv.weights, w.layers[1].qkv.weights)
        assert set(q4gsw.io.load(tmp_path / "q4" / "model.q4gsw.safetensors")) >= {"model.layers.0.self_attn.qkv_proj"}

    def test_roundtrip_dense_tied_bias_tokenizer(self, tmp_path, rng):
        """Dense linears, tied embeddings, q/k/v biases, a window and the tokenizer survive the round trip."""
        model = tiny_model(rng, "qwen2", tied=True)
        model.save_pretrained(tmp_path / "hf")
        (tmp_path / "hf" / "tokenizer.json").write_text("{}")
        w = load_checkpoint(tmp_path / "hf", group_size=64, keep_dense=lambda n: "layers.1.mlp" in n)
        save_checkpoint(w, tmp_path / "q4")
        back = load_checkpoint(tmp_path / "q4")
        assert_same_weights(w, back)
        assert back.lm_head is back.embed and isinstance(back.layers[1].gate_up, np.ndarray)
        assert back.config.sliding_layers == (1,) and back.tokenizer_path == str(tmp_path / "q4" / "tokenizer.json")

    def test_bad_directory(self, tmp_path, llama_dir):
        """A q4gsw directory whose config.json disagrees with its files, or that lost its int4
        file, names the file and tensor."""
        _, path = llama_dir
        save_checkpoint(load_checkpoint(path, group_size=32), tmp_path / "q4")
        config = json.loads((tmp_path / "q4" / "config.json").read_text())
        (tmp_path / "q4" / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
        with pytest.raises(q4gsw.ShapeError, match=r"model.q4gsw.safetensors: tensor 'model.layers.0.mlp.gate_up"):
            load_checkpoint(tmp_path / "q4")
        os.remove(tmp_path / "q4" / "model.q4gsw.safetensors")
        with pytest.raises(q4gsw.FormatError, match="missing tensor 'model.embed_tokens'"):
            load_checkpoint(tmp_path / "q4")

    def test_roundtrip_gguf_rope_factors(self, tmp_path, rng):
        """A GGUF model's rope_freqs survive in config.json."""
        model = tiny_model(rng, "llama")
        write_llama_gguf(tmp_path / "m.gguf", model)
        w = load_checkpoint(tmp_path / "m.gguf")
        save_checkpoint(w, tmp_path / "q4")
        back = load_checkpoint(tmp_path / "q4")
        assert back.config.rope_freq_factors is not None
        assert_same_weights(w, back)


class TestLoadGguf:
    @pytest.mark.parametrize("tied", [False, True])
    def test_matches_transformers(self, tmp_path, rng, tied):
        """A llama.cpp-style Q4_0 GGUF (permuted q/k, rope_freqs) loads to weights whose q/k rows
        are back in Hugging Face order: each linear equals gguf's Q4_0 round trip of the original
        exactly, and the logits match transformers."""
        model = tiny_model(rng, "llama", tied=tied)
        write_llama_gguf(tmp_path / "m.gguf", model)
        w = load_checkpoint(tmp_path / "m.gguf", group_size=128)
        assert w.embed.group_size == 32 and (w.lm_head is w.embed) == tied
        sd, dq = float_state(model), w.dequantized_state_dict()
        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                     "model.layers.1.self_attn.v_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                     "model.embed_tokens.weight"):
            np.testing.assert_array_equal(dq[name], gguf.quants.dequantize(gguf.quants.quantize(sd[name], Q4_0), Q4_0),
                                          err_msg=name)
        ratio = w.config.rope_inv_freq() / DecoderConfig.from_hf(
            {**model.config.to_dict(), "architectures": ["LlamaForCausalLM"]}).rope_inv_freq()
        assert np.abs(ratio - 1).max() < 1e-6  # llama.cpp's rope_freqs == transformers' llama3 scaling
        load_oracle(model, w)
        ids = rng.integers(0, TINY["vocab_size"], 40)
        assert_logits_close(reference_logits(w, ids), hf_logits(model, ids))

    def test_float_tensors_quantized(self, tmp_path, rng):
        """F16 linears are quantized with group_size; the metadata gives the config."""
        model = tiny_model(rng, "llama")
        write_llama_gguf(tmp_path / "m.gguf", model, linear_type=F16)
        w = load_checkpoint(tmp_path / "m.gguf", group_size=64)
        q = float_state(model)["model.layers.0.self_attn.q_proj.weight"].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(w.dequantized_state_dict()["model.layers.0.self_attn.q_proj.weight"],
                                      q4gsw.quantize(q, 64).dequantize().astype(np.float32))
        assert w.layers[0].qkv.group_size == 64 and w.config.num_kv_heads == 2 and w.config.head_dim == 32

    def test_other_quant_type_refused(self, tmp_path, rng):
        """A Q8_0 tensor is refused, naming the tensor and its type, before anything is converted."""
        model = tiny_model(rng, "llama")
        write_llama_gguf(tmp_path / "m.gguf", model, embed_type=Q8_0)
        with pytest.raises(q4gsw.FormatError, match="'token_embd.weight'.*Q8_0"):
            load_checkpoint(tmp_path / "m.gguf")

    def test_bad_files(self, tmp_path, rng):
        """Another architecture, a missing tensor, RoPE scaling metadata and a truncated file are FormatErrors."""
        model = tiny_model(rng, "llama")
        write_llama_gguf(tmp_path / "arch.gguf", model, arch="gpt2")
        with pytest.raises(q4gsw.FormatError, match="'gpt2'"):
            load_checkpoint(tmp_path / "arch.gguf")
        write_llama_gguf(tmp_path / "missing.gguf", model, skip=("blk.1.ffn_up.weight",))
        with pytest.raises(q4gsw.FormatError, match="missing tensor 'blk.1.ffn_up.weight'"):
            load_checkpoint(tmp_path / "missing.gguf")
        write_llama_gguf(tmp_path / "yarn.gguf", model, metadata={"llama.rope.scaling.type": "yarn"})
        with pytest.raises(q4gsw.FormatError, match="'yarn'"):
            load_checkpoint(tmp_path / "yarn.gguf")
        data = (tmp_path / "missing.gguf").read_bytes()
        (tmp_path / "short.gguf").write_bytes(data[: len(data) // 2])
        with pytest.raises(q4gsw.FormatError, match="short.gguf"):
            load_checkpoint(tmp_path / "short.gguf")


class TestErrors:
    """Each bad input is a typed error naming the file and tensor, raised before any tensor is read."""

    @pytest.fixture(autouse=True)
    def no_tensor_reads(self, monkeypatch):
        def fail(self, name):
            raise AssertionError(f"read {name} before the error")

        monkeypatch.setattr(SafetensorsFile, "read_float", fail)

    @staticmethod
    def rewrite(path, edit_tensors=None, edit_config=None):
        """Rewrite path/model.safetensors and/or path/config.json through edit functions."""
        if edit_tensors:
            tensors = st_numpy.load_file(path / "model.safetensors")
            edit_tensors(tensors)
            st_numpy.save_file(tensors, path / "model.safetensors")
        if edit_config:
            config = json.loads((path / "config.json").read_text())
            edit_config(config)
            (path / "config.json").write_text(json.dumps(config))

    def test_missing_tensor(self, llama_dir):
        _, path = llama_dir
        self.rewrite(path, edit_tensors=lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
        with pytest.raises(q4gsw.FormatError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
            load_checkpoint(path)

    def test_unexpected_tensor(self, llama_dir):
        _, path = llama_dir
        self.rewrite(path, edit_tensors=lambda t: t.update(extra=np.zeros(3, np.float32)))
        with pytest.raises(q4gsw.FormatError, match="unexpected tensor 'extra'"):
            load_checkpoint(path)

    def test_shape_disagrees_with_config(self, llama_dir):
        _, path = llama_dir
        self.rewrite(path, edit_config=lambda c: c.update(intermediate_size=96))
        with pytest.raises(q4gsw.ShapeError, match=r"'model.layers.0.mlp.gate_proj.weight'.*\(96, 64\)"):
            load_checkpoint(path)

    def test_unsupported_architecture(self, llama_dir):
        _, path = llama_dir
        self.rewrite(path, edit_config=lambda c: c.update(architectures=["GPT2LMHeadModel"]))
        with pytest.raises(q4gsw.FormatError, match="config.json.*GPT2LMHeadModel"):
            load_checkpoint(path)

    def test_unsupported_rope(self, llama_dir):
        _, path = llama_dir
        self.rewrite(path, edit_config=lambda c: c.update(rope_parameters={"rope_type": "dynamic", "factor": 2.0}))
        with pytest.raises(q4gsw.FormatError, match="'dynamic'"):
            load_checkpoint(path)

    def test_header_past_end(self, llama_dir):
        _, path = llama_dir
        (path / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
        with pytest.raises(q4gsw.FormatError, match="header length 1000000000 past the end"):
            load_checkpoint(path)

    def test_truncated(self, llama_dir):
        _, path = llama_dir
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:-100])
        with pytest.raises(q4gsw.FormatError, match="truncated"):
            load_checkpoint(path)

    def test_corrupt_header(self, llama_dir):
        _, path = llama_dir
        data = bytearray((path / "model.safetensors").read_bytes())
        data[8] = ord("[")
        (path / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(q4gsw.FormatError, match="JSON"):
            load_checkpoint(path)

    def test_index_names_missing_shard(self, tmp_path, llama_dir):
        model, _ = llama_dir
        model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
        shard = sorted(p for p in os.listdir(tmp_path / "sharded") if p.startswith("model-"))[1]
        os.remove(tmp_path / "sharded" / shard)
        with pytest.raises(q4gsw.FormatError, match=f"index.json.*'{shard}' missing"):
            load_checkpoint(tmp_path / "sharded")

    def test_no_such_path(self, tmp_path):
        with pytest.raises(q4gsw.FormatError, match="no such file or directory"):
            load_checkpoint(tmp_path / "nope")

    def test_not_a_checkpoint(self, tmp_path):
        (tmp_path / "x.bin").write_bytes(b"\0" * 16)
        with pytest.raises(q4gsw.FormatError, match="checkpoint directory or a GGUF file"):
            load_checkpoint(tmp_path / "x.bin")
        with pytest.raises(q4gsw.FormatError, match="config.json"):
            load_checkpoint(tmp_path)

    def test_bad_group_size(self, llama_dir):
        _, path = llama_dir
        with pytest.raises(q4gsw.GroupSizeError, match="group_size"):
            load_checkpoint(path, group_size=0)


class TestRandomWeights:
    def test_shapes_and_scale(self):
        """Fused shapes of the config, tied head, and activations of order 1 through 8 layers."""
        c = DecoderConfig("LlamaForCausalLM", vocab_size=512, hidden_size=256, intermediate_size=768, num_layers=8,
                          num_heads=8, num_kv_heads=2, head_dim=32, tie_word_embeddings=True, qkv_bias=True)
        w = random_weights(c, group_size=64, seed=3)
        layer = w.layers[7]
        assert (layer.qkv.out_features, layer.qkv.in_features) == (256 + 2 * 64, 256)
        assert (layer.gate_up.out_features, layer.down.in_features) == (1536, 768)
        assert layer.qkv_bias.shape == (384,) and w.lm_head is w.embed and w.embed.group_size == 64
        logits = reference_logits(w, np.arange(16))
        assert np.isfinite(logits).all() and 0.3 < logits.std() < 3  # measured 1.05

    def test_preset_builds(self):
        """The Qwen2.5-0.5B preset builds without float weights (packed bytes only)."""
        w = random_weights(PRESETS["qwen2.5-0.5b"], seed=1)
        assert w.layers[0].qkv_bias.shape == (1152,) and 2.5e8 < w.nbytes < 3e8


class TestWriteRandomCheckpoint:
    def test_transformers_reads_it(self, tmp_path):
        """transformers loads the written checkpoint; load_checkpoint's weights reproduce its logits."""
        shapes = {k: v for k, v in TINY.items() if k != "initializer_range"}
        qwen2 = transformers.Qwen2Config(**shapes, use_sliding_window=True, sliding_window=8, max_window_layers=1)
        c = DecoderConfig.from_hf({**qwen2.to_dict(), "architectures": ["Qwen2ForCausalLM"]})
        written = write_random_checkpoint(tmp_path, c, seed=5)
        assert written.bos_token_id == 0 and written.eos_token_ids == (1,)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
        w = load_checkpoint(tmp_path, group_size=32)
        assert w.config == written and w.tokenizer_path == str(tmp_path / "tokenizer.json")
        load_oracle(model, w)
        ids = np.arange(3, 40)
        assert_logits_close(reference_logits(w, ids), hf_logits(model, ids))

    def test_tokenizer(self, tmp_path):
        """The tokenizer round-trips text, with <s> = 0 and </s> = 1, inside the vocabulary."""
        tokenizers = pytest.importorskip("tokenizers")
        write_random_checkpoint(tmp_path, DecoderConfig.from_hf(
            {"architectures": ["LlamaForCausalLM"], "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 2}))
        tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
        ids = tok.encode("Hello, whole model on the GPU!").ids
        assert max(ids) < 300 and tok.decode(ids) == "Hello, whole model on the GPU!"
        assert tok.token_to_id("<s>") == 0 and tok.token_to_id("</s>") == 1

    def test_needs_neither_torch_nor_transformers(self, tmp_path):
        """Writing and loading a random checkpoint imports neither torch nor transformers (make demo)."""
        code = ("import sys; from q4gsw.llm import PRESETS, write_random_checkpoint, load_checkpoint; "
                "from q4gsw.llm.config import DecoderConfig; "
                "c = DecoderConfig('LlamaForCausalLM', 300, 64, 128, 1, 2, 1, 32); "
                f"write_random_checkpoint({str(tmp_path)!r}, c); load_checkpoint({str(tmp_path)!r}, group_size=32); "
                "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)

    def test_small_vocab_refused(self, tmp_path):
        c = DecoderConfig("LlamaForCausalLM", 100, 64, 128, 1, 2, 1, 32)
        with pytest.raises(q4gsw.ShapeError, match="vocab_size"):
            write_random_checkpoint(tmp_path, c)
