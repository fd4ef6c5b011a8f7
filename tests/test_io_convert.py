"""Tests of q4gsw.io.quantize_file and `q4gsw quantize` on generated safetensors and GGUF files."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.cli import main
from q4gsw.io import quantize_file

gguf = pytest.importorskip("gguf")
st_numpy = pytest.importorskip("safetensors.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")


def write_gguf(path, tensors):
    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (arr, raw) in tensors.items():
        writer.add_tensor(name, arr, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class TestQuantizeFile:
    def test_safetensors(self, rng, tmp_path):
        """2-D float *weight tensors (F32, F16, BF16) are quantized as q4gsw.quantize does; others skipped."""
        w32 = rng.standard_normal((8, 64)).astype(np.float32)
        w16 = rng.standard_normal((4, 40)).astype(np.float16)
        wbf = rng.standard_normal((3, 32)).astype(ml_dtypes.bfloat16)
        src = tmp_path / "model.safetensors"
        st_numpy.save_file({"a.weight": w32, "b.weight": w16, "c.weight": wbf,
                            "norm.weight": rng.standard_normal(64).astype(np.float32),
                            "a.bias": rng.standard_normal(8).astype(np.float32),
                            "pos_ids": np.arange(6, dtype=np.int64).reshape(2, 3)}, str(src))
        dst = tmp_path / "out.safetensors"
        report = quantize_file(src, dst, group_size=32)
        assert (report.count("quantized"), report.count("skipped")) == (3, 3)
        loaded = q4gsw.load(dst)
        assert sorted(loaded) == ["a.weight", "b.weight", "c.weight"]
        for name, w in (("a.weight", w32), ("b.weight", w16), ("c.weight", wbf)):
            expected = q4gsw.quantize(w.astype(np.float32), group_size=32)
            np.testing.assert_array_equal(loaded[name].weights, expected.weights)
            np.testing.assert_array_equal(loaded[name].scales, expected.scales)
        header = q4gsw.io.read_header(dst)
        assert header["source"] == "safetensors" and header["source_file"] == "model.safetensors"

    def test_gguf(self, rng, tmp_path):
        """Q4_0 tensors are imported losslessly, F32 weights quantized, Q8_0 and 1-D skipped."""
        q = gguf.GGMLQuantizationType
        w = rng.standard_normal((6, 64)).astype(np.float32)
        blocks = gguf.quants.quantize(w, q.Q4_0)
        f32 = rng.standard_normal((5, 32)).astype(np.float32)
        src = tmp_path / "model.bin"  # told apart by content, not the name
        write_gguf(src, {"blk.0.attn_q.weight": (blocks, q.Q4_0), "blk.0.ffn.weight": (f32, None),
                         "out.weight": (gguf.quants.quantize(w, q.Q8_0), q.Q8_0),
                         "blk.0.attn_norm.weight": (rng.standard_normal(64).astype(np.float32), None)})
        dst = tmp_path / "out.safetensors"
        report = quantize_file(src, dst)
        assert [t.action for t in report.tensors] == ["imported", "quantized", "skipped", "skipped"]
        loaded = q4gsw.load(dst)
        np.testing.assert_array_equal(loaded["blk.0.attn_q.weight"].dequantize(),
                                      gguf.quants.dequantize(blocks, q.Q4_0))
        np.testing.assert_array_equal(loaded["blk.0.ffn.weight"].weights, q4gsw.quantize(f32).weights)

    def test_bad_inputs(self, rng, tmp_path):
        """Unknown formats, files with nothing to convert and bad group sizes raise typed errors."""
        junk = tmp_path / "junk"
        junk.write_bytes(b"hello world, not a model")
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            quantize_file(junk, tmp_path / "o.safetensors")
        only_bias = tmp_path / "b.safetensors"
        st_numpy.save_file({"a.bias": rng.standard_normal(4).astype(np.float32)}, str(only_bias))
        with pytest.raises(q4gsw.FormatError, match="'src'.*all skipped"):
            quantize_file(only_bias, tmp_path / "o.safetensors")
        with pytest.raises(q4gsw.GroupSizeError, match="'group_size'"):
            quantize_file(only_bias, tmp_path / "o.safetensors", group_size=0)
        assert not (tmp_path / "o.safetensors").exists()


class TestCli:
    def test_quantize(self, rng, tmp_path, capsys):
        """`q4gsw quantize IN OUT --group-size 32` writes a loadable file and reports what it did."""
        src = tmp_path / "m.safetensors"
        st_numpy.save_file({"x.weight": rng.standard_normal((4, 64)).astype(np.float32),
                            "x.bias": rng.standard_normal(4).astype(np.float32)}, str(src))
        dst = tmp_path / "o.safetensors"
        assert main(["quantize", str(src), str(dst), "--group-size", "32"]) == 0
        out = capsys.readouterr()
        assert "1 quantized" in out.out and "1 skipped" in out.out
        assert "x.weight" in out.err or "tensor" in out.err  # progress (tqdm or plain lines)
        assert q4gsw.load(dst)["x.weight"].group_size == 32

    def test_quantize_error(self, tmp_path, capsys):
        """A bad input file exits 2 with the error on stderr."""
        assert main(["quantize", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
        assert "argument IN" in capsys.readouterr().err

    def test_plain_progress(self, rng, tmp_path, capsys, monkeypatch):
        """Without tqdm, progress is one plain '[i/n] name' line per tensor on stderr."""
        monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
        src = tmp_path / "m.safetensors"
        st_numpy.save_file({"x.weight": rng.standard_normal((4, 64)).astype(np.float32)}, str(src))
        assert main(["quantize", str(src), str(tmp_path / "o.safetensors")]) == 0
        assert "[1/1] x.weight" in capsys.readouterr().err
