"""Tests of q4gsw.io.from_onnx on MatMulNBits models built with onnx.helper on random data."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.io import from_matmul_nbits, read_onnx

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402


def spec_dequant(b, scales, zero_points, k, n, block_size):
    """float64 dequantization written from ONNX Runtime's docs/ContribOperators.md,
    com.microsoft.MatMulNBits: B (N, k_blocks, block_size/2), first element of a byte in the
    low nibble; zero_points packed the same way, default 2**(bits-1) = 8;
    dequantized_weight = (quantized_weight - zero_point) * scale."""
    k_blocks = -(-k // block_size)
    flat = b.reshape(n, -1)
    codes = np.stack([flat & 0x0F, flat >> 4], axis=2).reshape(n, -1)[:, :k].astype(np.float64)
    if zero_points is None:
        zp = np.full((n, k_blocks), 8.0)
    elif zero_points.dtype == np.uint8:
        p = zero_points.reshape(n, -1)
        zp = np.stack([p & 0x0F, p >> 4], axis=2).reshape(n, -1)[:, :k_blocks].astype(np.float64)
    else:
        zp = zero_points.reshape(n, k_blocks).astype(np.float64)
    g = np.arange(k) // block_size
    return (codes - zp[:, g]) * scales.reshape(n, k_blocks).astype(np.float64)[:, g]


def random_nbits(rng, n, k, block_size, scale_dtype=np.float32):
    k_blocks = -(-k // block_size)
    b = rng.integers(0, 256, (n, k_blocks, block_size // 2), dtype=np.uint8)
    scales = (rng.uniform(0.05, 1, (n, k_blocks)) * rng.choice([-1, 1], (n, k_blocks))).astype(scale_dtype)
    return b, scales


def nbits_model(b, scales, zero_points, k, n, block_size, bits=4):
    """A one-node graph Y = MatMulNBits(A, B, scales[, zero_points]) with constant weights."""
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales")]
    inputs = ["A", "B", "scales"]
    if zero_points is not None:
        inits.append(numpy_helper.from_array(zero_points, "zp"))
        inputs.append("zp")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], name="mm", domain="com.microsoft",
                            K=k, N=n, bits=bits, block_size=block_size)
    elem = helper.np_dtype_to_tensor_dtype(scales.dtype)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", elem, [1, k])],
                              [helper.make_tensor_value_info("Y", elem, [1, n])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


class TestAgainstOnnxRuntime:
    @pytest.mark.parametrize(("n", "k", "block_size"), [(8, 64, 32), (5, 128, 16), (6, 256, 128)])
    def test_imported_weight_matches_ort(self, rng, n, k, block_size):
        """ONNX Runtime's own MatMulNBits kernel (the producing library) and q4gsw on the imported
        weight agree on Y = A B^T to fp32 rounding, on the CPU reference and on WebGPU."""
        ort = pytest.importorskip("onnxruntime")
        b, scales = random_nbits(rng, n, k, block_size)
        model = nbits_model(b, scales, None, k, n, block_size)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        a = rng.standard_normal((1, k)).astype(np.float32)
        y_ort = session.run(None, {"A": a})[0].astype(np.float64)
        pw = from_matmul_nbits(b, scales, in_features=k, out_features=n, block_size=block_size)
        scale = np.abs(a).astype(np.float64) @ np.abs(pw.dequantize()).T
        np.testing.assert_array_less(np.abs(q4gsw.linear_reference(a, pw) - y_ort), 1e-5 * scale + 1e-6)
        np.testing.assert_array_less(np.abs(q4gsw.linear(a, pw) - y_ort), 1e-5 * scale + 1e-6)

    def test_mixed_model_matches_ort(self, runtime, rng):
        """A two-layer model, MatMulNBits then a float MatMul + Add: read_onnx imports the int4
        node and lists the float weight and bias as skipped; running the int4 layer with
        q4gsw.linear and the skipped fp32 weight with q4gsw.dense_linear reproduces ONNX
        Runtime's output on fresh inputs."""
        ort = pytest.importorskip("onnxruntime")
        k, n, n2, bs = 96, 40, 24, 32
        b, scales = random_nbits(rng, n, k, bs)
        w2 = rng.standard_normal((n, n2)).astype(np.float32)  # MatMul's B is (K, N)
        bias2 = rng.standard_normal(n2).astype(np.float32)
        nodes = [helper.make_node("MatMulNBits", ["A", "B", "scales"], ["H"], name="mm", domain="com.microsoft",
                                  K=k, N=n, bits=4, block_size=bs),
                 helper.make_node("MatMul", ["H", "W2"], ["P"], name="dense"),
                 helper.make_node("Add", ["P", "bias2"], ["Y"], name="add")]
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales"),
                 numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(bias2, "bias2")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", 1, [None, k])],
                                  [helper.make_tensor_value_info("Y", 1, [None, n2])], initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                        helper.make_opsetid("com.microsoft", 1)])
        imported = read_onnx(model)
        assert list(imported) == ["B"]
        assert [(t.name, t.action) for t in imported.skipped] == [("W2", "skipped"), ("bias2", "skipped")]
        assert imported.skipped[0].detail.startswith("float32 [40, 24] used by MatMul")
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        dense = q4gsw.DenseWeight(np.ascontiguousarray(w2.T))  # (N, K), nn.Linear's layout
        for m in (1, 17):
            a = rng.standard_normal((m, k)).astype(np.float32)
            y_ort = session.run(None, {"A": a})[0].astype(np.float64)
            h = q4gsw.linear(a, imported["B"])
            y = q4gsw.dense_linear(h, dense, bias2)
            magnitude = (np.abs(h) @ np.abs(w2) + np.abs(bias2)) * 2
            np.testing.assert_array_less(np.abs(y - y_ort), 1e-5 * magnitude + 1e-5)


class TestFromMatmulNbits:
    @pytest.mark.parametrize(("n", "k", "block_size"), [(4, 64, 32), (5, 100, 16), (3, 33, 32), (2, 256, 128)])
    def test_exact_without_zero_points(self, rng, n, k, block_size):
        """Absent zero points (8): dequantize() equals the spec's float64 dequantization."""
        b, scales = random_nbits(rng, n, k, block_size)
        pw = from_matmul_nbits(b, scales, in_features=k, out_features=n, block_size=block_size)
        np.testing.assert_array_equal(pw.dequantize(), spec_dequant(b, scales, None, k, n, block_size))

    def test_zero_points_eight(self, rng):
        """Packed uint8 and float zero points that are all 8 are exact too; fp16 scales too."""
        b, scales = random_nbits(rng, 3, 96, 32, np.float16)
        packed = np.full((3, 2), 0x88, np.uint8)
        floats = np.full((3, 3), 8, np.float16)
        ref = spec_dequant(b, scales, packed, 96, 3, 32)
        for zp in (packed, floats):
            pw = from_matmul_nbits(b, scales.reshape(-1), zp, in_features=96, out_features=3, block_size=32)
            np.testing.assert_array_equal(pw.dequantize(), ref)

    def test_other_zero_points(self, rng):
        """A zero point other than 8 raises AsymmetricError naming zero_points."""
        b, scales = random_nbits(rng, 2, 64, 32)
        zp = np.full((2, 1), 0x88, np.uint8)
        zp[1, 0] = 0x78
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_points'.*n=1, block=1"):
            from_matmul_nbits(b, scales, zp, in_features=64, out_features=2, block_size=32)
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_points'"):
            from_matmul_nbits(b, scales, np.full((2, 2), 7.5, np.float32), in_features=64, out_features=2,
                              block_size=32)

    def test_bad_inputs(self, rng):
        """Other bit widths, block sizes, dtypes and shapes raise typed errors naming the argument."""
        b, scales = random_nbits(rng, 2, 64, 32)
        kw = dict(in_features=64, out_features=2, block_size=32)
        with pytest.raises(q4gsw.FormatError, match="'bits'"):
            from_matmul_nbits(b, scales, **kw, bits=8)
        with pytest.raises(q4gsw.FormatError, match="'block_size'"):
            from_matmul_nbits(b, scales, in_features=64, out_features=2, block_size=24)
        with pytest.raises(q4gsw.DTypeError, match="'b'"):
            from_matmul_nbits(b.astype(np.int8), scales, **kw)
        with pytest.raises(q4gsw.ShapeError, match="'b'"):
            from_matmul_nbits(b[:1], scales, **kw)
        with pytest.raises(q4gsw.ShapeError, match="'scales'"):
            from_matmul_nbits(b, scales[:, :1], **kw)
        with pytest.raises(q4gsw.DTypeError, match="'scales'"):
            from_matmul_nbits(b, scales.astype(np.float64), **kw)
        with pytest.raises(q4gsw.ShapeError, match="'zero_points'"):
            from_matmul_nbits(b, scales, np.full((2, 3), 0x88, np.uint8), **kw)


class TestReadOnnx:
    def test_model_and_file(self, rng, tmp_path):
        """A helper-built model, in memory and saved to disk, converts exactly."""
        b, scales = random_nbits(rng, 6, 80, 16)
        zp = np.full((6, 3), 0x88, np.uint8)
        model = nbits_model(b, scales, zp, 80, 6, 16)
        onnx.checker.check_model(model)
        ref = spec_dequant(b, scales, zp, 80, 6, 16)
        np.testing.assert_array_equal(read_onnx(model)["B"].dequantize(), ref)
        path = tmp_path / "m.onnx"
        onnx.save(model, str(path))
        np.testing.assert_array_equal(read_onnx(path)["B"].dequantize(), ref)

    def test_bad_models(self, rng, tmp_path):
        """Non-ONNX files, graphs without MatMulNBits and asymmetric nodes raise FormatError."""
        junk = tmp_path / "junk.onnx"
        junk.write_bytes(b"\xff\xfe garbage")
        with pytest.raises(q4gsw.FormatError, match="'model'"):
            read_onnx(junk)
        with pytest.raises(q4gsw.FormatError, match="'model'"):
            read_onnx(tmp_path / "missing.onnx")
        with pytest.raises(q4gsw.FormatError, match="'model'"):
            read_onnx(42)
        empty = helper.make_model(helper.make_graph([], "g", [], []))
        with pytest.raises(q4gsw.FormatError, match="MatMulNBits"):
            read_onnx(empty)
        b, scales = random_nbits(rng, 2, 32, 32)
        with pytest.raises(q4gsw.AsymmetricError):
            read_onnx(nbits_model(b, scales, np.full((2, 1), 0x03, np.uint8), 32, 2, 32))

    def test_skipped_are_logged(self, rng, caplog):
        """read_onnx names what it left out in one warning."""
        b, scales = random_nbits(rng, 4, 32, 32)
        model = nbits_model(b, scales, None, 32, 4, 32)
        model.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.float32), "unused_bias"))
        with caplog.at_level("WARNING", logger="q4gsw"):
            out = read_onnx(model)
        assert [t.name for t in out.skipped] == ["unused_bias"] and "no node" in out.skipped[0].detail
        assert "skipped 1: unused_bias" in caplog.text
