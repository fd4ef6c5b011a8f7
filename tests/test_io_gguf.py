"""Tests of q4gsw.io.from_gguf against the gguf package's own quantize/dequantize and files."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.io import from_gguf_q4_0, read_gguf

from .utils import assert_matches_reference

gguf = pytest.importorskip("gguf")
Q4_0 = gguf.GGMLQuantizationType.Q4_0


def q4_0_rows(rng, n, k):
    """(float32 weight, its Q4_0 blocks) made by gguf.quants.quantize on random data."""
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    return w, gguf.quants.quantize(w, Q4_0)


def write_gguf(path, tensors):
    """Write {name: (array, raw_dtype or None)} with gguf.GGUFWriter."""
    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (arr, raw) in tensors.items():
        writer.add_tensor(name, arr, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class TestFromGgufQ4_0:
    @pytest.mark.parametrize(("n", "k"), [(1, 32), (7, 96), (16, 256)])
    def test_lossless(self, rng, n, k):
        """dequantize() equals gguf.quants.dequantize exactly, element for element."""
        _, blocks = q4_0_rows(rng, n, k)
        pw = from_gguf_q4_0(blocks, in_features=k)
        expected = gguf.quants.dequantize(blocks, Q4_0).astype(np.float64)
        assert pw.group_size == 32 and pw.scales.shape == (k // 32, n)
        np.testing.assert_array_equal(pw.dequantize(), expected)
        assert np.abs(expected).max() > 0

    def test_negative_scales(self, rng):
        """gguf's quantizer writes d = max / -8, often negative; the sign is carried."""
        _, blocks = q4_0_rows(rng, 8, 128)
        pw = from_gguf_q4_0(blocks, in_features=128)
        assert (pw.scales < 0).any() and (pw.scales > 0).any()
        np.testing.assert_array_equal(pw.dequantize(), gguf.quants.dequantize(blocks, Q4_0))

    def test_gpu_linear(self, runtime, rng):
        """q4gsw.linear on the imported weight matches x @ gguf's dequantization."""
        _, blocks = q4_0_rows(rng, 24, 64)
        pw = from_gguf_q4_0(blocks, in_features=64)
        x = rng.standard_normal((3, 64)).astype(np.float32)
        np.testing.assert_array_equal(pw.dequantize(), gguf.quants.dequantize(blocks, Q4_0))
        assert_matches_reference(q4gsw.linear(x, pw), x, pw)  # the suite's fp32 tolerance model

    def test_bad_blocks(self, rng):
        """Wrong dtype, wrong row length and a K that is not whole blocks name their argument."""
        _, blocks = q4_0_rows(rng, 2, 64)
        with pytest.raises(q4gsw.DTypeError, match="'blocks'"):
            from_gguf_q4_0(blocks.astype(np.int16), in_features=64)
        with pytest.raises(q4gsw.ShapeError, match="'blocks'"):
            from_gguf_q4_0(blocks[:, :-1], in_features=64)
        with pytest.raises(q4gsw.ShapeError, match="'in_features'"):
            from_gguf_q4_0(blocks, in_features=48)
        with pytest.raises(q4gsw.ShapeError, match="'in_features'"):
            from_gguf_q4_0(blocks, in_features=0)


class TestReadGguf:
    def test_reads_q4_0_tensors(self, tmp_path, rng):
        """Every Q4_0 tensor of a GGUFWriter file comes back lossless; float tensors are left out."""
        _, a = q4_0_rows(rng, 5, 64)
        _, b = q4_0_rows(rng, 3, 32)
        norm = rng.standard_normal(64).astype(np.float32)
        path = tmp_path / "m.gguf"
        write_gguf(path, {"a.weight": (a, Q4_0), "norm.weight": (norm, None), "b.weight": (b, Q4_0)})
        out = read_gguf(path)
        assert list(out) == ["a.weight", "b.weight"]
        assert [(t.name, t.action) for t in out.skipped] == [("norm.weight", "skipped")]
        assert out.skipped[0].detail.startswith("F32 64: a float tensor")
        for name, blocks in (("a.weight", a), ("b.weight", b)):
            np.testing.assert_array_equal(out[name].dequantize(), gguf.quants.dequantize(blocks, Q4_0))
        assert list(read_gguf(path, names=["b.weight"])) == ["b.weight"]

    def test_skipped_are_reported(self, tmp_path, rng, caplog):
        """Without names, every tensor left out (float, other quant types) is in .skipped with
        its reason, and one warning names them; with names, nothing is skipped."""
        _, a = q4_0_rows(rng, 4, 64)
        w = rng.standard_normal((4, 64)).astype(np.float32)
        path = tmp_path / "m.gguf"
        write_gguf(path, {"emb.weight": (w, None), "a.weight": (a, Q4_0),
                          "q8.weight": (gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                                        gguf.GGMLQuantizationType.Q8_0)})
        with caplog.at_level("WARNING", logger="q4gsw"):
            out = read_gguf(path)
        assert list(out) == ["a.weight"]
        reasons = {t.name: t.detail for t in out.skipped}
        assert list(reasons) == ["emb.weight", "q8.weight"]
        assert reasons["q8.weight"].startswith("Q8_0 4x64: not Q4_0")
        assert "imported 1 of 3 tensors" in caplog.text and "q8.weight" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="q4gsw"):
            assert read_gguf(path, names=["a.weight"]).skipped == []
        assert caplog.text == ""

    def test_other_quant_type(self, tmp_path, rng):
        """Asking for a Q8_0 tensor raises FormatError naming the type."""
        w = rng.standard_normal((4, 64)).astype(np.float32)
        path = tmp_path / "m.gguf"
        write_gguf(path, {"q8.weight": (gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                                        gguf.GGMLQuantizationType.Q8_0)})
        with pytest.raises(q4gsw.FormatError, match="Q8_0"):
            read_gguf(path, names="q8.weight")
        with pytest.raises(q4gsw.FormatError, match="'path'.*Q4_0"):
            read_gguf(path)

    def test_bad_paths(self, tmp_path, rng):
        """Missing file, non-GGUF file and unknown names raise FormatError naming the argument."""
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            read_gguf(tmp_path / "missing.gguf")
        junk = tmp_path / "junk.gguf"
        junk.write_bytes(b"not a gguf file at all" * 4)
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            read_gguf(junk)
        _, a = q4_0_rows(rng, 2, 32)
        path = tmp_path / "m.gguf"
        write_gguf(path, {"a.weight": (a, Q4_0)})
        with pytest.raises(q4gsw.FormatError, match="'names'"):
            read_gguf(path, names=["nope"])
