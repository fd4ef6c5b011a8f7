"""Tests of q4gsw.save / q4gsw.load (q4gsw.io.native): round trips and refused files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import q4gsw
from q4gsw.io import FORMAT_VERSION, read_header

from .utils import random_problem

st_numpy = pytest.importorskip("safetensors.numpy")


def weights(rng):
    """Odd K, a group size that does not divide K, padded scales, an even-K layer."""
    return {
        "layers.0.q_proj.weight": random_problem(rng, 1, 7, 45, 16, extra_groups=2, extra_cols=3).pw,
        "lm_head.weight": random_problem(rng, 1, 12, 64, 32, extra_groups=0, extra_cols=0).pw,
    }


class TestSaveLoad:
    def test_roundtrip(self, rng, tmp_path):
        """load(save(w)) gives the same bytes, scales, group size and K, in order."""
        original = weights(rng)
        path = tmp_path / "m.safetensors"
        q4gsw.save(path, original, {"source": "test"})
        loaded = q4gsw.load(path)
        assert list(loaded) == list(original)
        for name, pw in original.items():
            got = loaded[name]
            np.testing.assert_array_equal(got.weights, pw.weights)
            np.testing.assert_array_equal(got.scales, pw.scales)  # NaN padding included
            assert (got.group_size, got.in_features) == (pw.group_size, pw.in_features)

    def test_header(self, rng, tmp_path):
        """The header holds the format version, per-weight group size, K, N and user metadata."""
        path = tmp_path / "anything.bin"
        q4gsw.save(path, weights(rng), {"source": "unit test"})
        header = read_header(path)
        assert header["source"] == "unit test"
        assert header["q4gsw.format_version"] == str(FORMAT_VERSION)
        entry = json.loads(header["q4gsw.tensors"])["layers.0.q_proj.weight"]
        assert (entry["group_size"], entry["in_features"], entry["out_features"]) == (16, 45, 7)

    def test_not_q4gsw_file(self, rng, tmp_path):
        """A plain safetensors file and a non-safetensors file raise FormatError naming 'path'."""
        plain = tmp_path / "plain.safetensors"
        st_numpy.save_file({"w": rng.standard_normal((2, 2)).astype(np.float32)}, str(plain))
        with pytest.raises(q4gsw.FormatError, match="'path'.*q4gsw file"):
            q4gsw.load(plain)
        junk = tmp_path / "junk.safetensors"
        junk.write_bytes(b"\x00" * 3)
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            q4gsw.load(junk)
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            q4gsw.load(tmp_path / "missing.safetensors")

    def test_newer_version(self, rng, tmp_path):
        """A file from a newer format version is refused with a message to upgrade."""
        path = tmp_path / "m.safetensors"
        q4gsw.save(path, weights(rng))
        header = read_header(path)
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        header["q4gsw.format_version"] = str(FORMAT_VERSION + 1)
        st_numpy.save_file(tensors, str(path), metadata=header)
        with pytest.raises(q4gsw.FormatError, match="newer q4gsw"):
            q4gsw.load(path)

    def test_bad_arguments(self, rng, tmp_path):
        """Bad weights and metadata raise ArgumentError naming the argument; nothing is written."""
        path = tmp_path / "m.safetensors"
        pw = weights(rng)["lm_head.weight"]
        with pytest.raises(q4gsw.ArgumentError, match="'weights'"):
            q4gsw.save(path, {})
        with pytest.raises(q4gsw.ArgumentError, match="'weights'"):
            q4gsw.save(path, {"w": np.zeros((2, 2), np.uint8)})
        with pytest.raises(q4gsw.ArgumentError, match="'metadata'"):
            q4gsw.save(path, {"w": pw}, {"q4gsw.format": "x"})
        with pytest.raises(q4gsw.ArgumentError, match="'metadata'"):
            q4gsw.save(path, {"w": pw}, {"n": 3})
        with pytest.raises(q4gsw.FormatError, match="'path'"):
            q4gsw.save(3, {"w": pw})
        assert not list(tmp_path.iterdir())

    def test_import_is_light(self):
        """import q4gsw (and q4gsw.io) imports none of safetensors, gguf, onnx, torch."""
        code = ("import sys, q4gsw, q4gsw.io; "
                "print([m for m in ('safetensors', 'gguf', 'onnx', 'torch', 'torchao') if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"
