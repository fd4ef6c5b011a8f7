"""Tests of q4gsw.format: int4 packing, PackedWeight, the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import q4gsw
from q4gsw import DTypeError, GroupSizeError, PackedWeight, ShapeError

from .strategies import int4_arrays
from .utils import executorch_pack, random_scales, random_weights


def loop_unpack(weights: np.ndarray, k: int) -> np.ndarray:
    """The data contract, one element at a time: byte k//2, even k low nibble, q = u - 8."""
    n = weights.shape[0]
    q = np.empty((n, k), np.int64)
    for row in range(n):
        for col in range(k):
            byte = int(weights[row, col // 2])
            u = (byte >> 4) if col % 2 else (byte & 0x0F)
            q[row, col] = u - 8
    return q


class TestPackInt4:
    @given(int4_arrays())
    def test_roundtrip(self, q):
        """unpack_int4(pack_int4(q), K) gives back q for any shape, odd K included."""
        packed = q4gsw.pack_int4(q)
        assert packed.dtype == np.uint8
        assert packed.shape == (q.shape[0], (q.shape[1] + 1) // 2)
        np.testing.assert_array_equal(q4gsw.unpack_int4(packed, q.shape[1]), q)

    def test_layout(self):
        """Element k sits in byte k//2, even k in the low nibble, stored as q + 8; odd K pads with 8."""
        q = np.array([[-8, 7, 0], [1, -1, 3]], np.int8)
        expected = np.array([[0x0 | (0xF << 4), 0x8 | (0x8 << 4)], [0x9 | (0x7 << 4), 0xB | (0x8 << 4)]], np.uint8)
        np.testing.assert_array_equal(q4gsw.pack_int4(q), expected)

    def test_matches_loop_unpack(self, rng):
        """pack_int4 agrees with an element-by-element reading of the data contract."""
        q = rng.integers(-8, 8, (5, 13))
        np.testing.assert_array_equal(loop_unpack(q4gsw.pack_int4(q), 13), q)

    @pytest.mark.parametrize("bad", [-9, 8])
    def test_out_of_range(self, bad):
        """A value outside [-8, 7] raises ValueRangeError naming 'q'."""
        with pytest.raises(q4gsw.ValueRangeError, match="'q'"):
            q4gsw.pack_int4(np.array([[0, bad]]))

    @pytest.mark.parametrize("q", [np.zeros((2, 2), np.float32), np.zeros(4, np.int8)], ids=["float", "1-D"])
    def test_not_2d_integer(self, q):
        """A non-integer or non-2-D array raises DTypeError naming 'q'."""
        with pytest.raises(DTypeError, match="'q'"):
            q4gsw.pack_int4(q)


class TestUnpackInt4:
    def test_padding_nibble_ignored(self, rng):
        """For odd K the high nibble of the last byte is dropped, whatever it holds."""
        q = rng.integers(-8, 8, (6, 9))
        clean = q4gsw.pack_int4(q)
        for garbage in range(16):
            dirty = clean.copy()
            dirty[:, -1] = (dirty[:, -1] & 0x0F) | np.uint8(garbage << 4)
            np.testing.assert_array_equal(q4gsw.unpack_int4(dirty, 9), q)

    def test_matches_loop_unpack(self, rng):
        """unpack_int4 agrees with an element-by-element reading of the data contract."""
        weights = random_weights(rng, 7, 15)
        np.testing.assert_array_equal(q4gsw.unpack_int4(weights, 15), loop_unpack(weights, 15))

    def test_wrong_byte_count(self, rng):
        """A row length other than ceil(K/2) raises ShapeError naming 'weights'."""
        with pytest.raises(ShapeError, match="'weights'"):
            q4gsw.unpack_int4(random_weights(rng, 3, 8), 10)

    def test_wrong_dtype(self):
        """Non-uint8 bytes raise DTypeError naming 'weights'."""
        with pytest.raises(DTypeError, match="'weights'"):
            q4gsw.unpack_int4(np.zeros((3, 4), np.int8) + 1, 8)

    @pytest.mark.parametrize("k", [0, -2, 2.0, True])
    def test_bad_k(self, rng, k):
        """K that is not a positive int raises ShapeError naming 'k'."""
        with pytest.raises(ShapeError, match="'k'"):
            q4gsw.unpack_int4(random_weights(rng, 3, 2), k)


def valid_parts(rng, n=6, k=20, gs=8):
    """Arguments of a valid PackedWeight: weights, scales (3 groups + 1 spare row), group size."""
    return random_weights(rng, n, k), random_scales(rng, -(-k // gs), n), gs


class TestPackedWeight:
    def test_attributes(self, rng):
        """N, K, num_groups and nbytes follow from the arrays and the group size."""
        weights, scales, gs = valid_parts(rng, n=6, k=19, gs=8)
        pw = PackedWeight(weights, scales, gs, in_features=19)
        assert (pw.out_features, pw.in_features, pw.group_size, pw.num_groups) == (6, 19, 8, 3)
        assert pw.nbytes == 6 * 10 + 4 * 3 * 6

    def test_default_in_features(self, rng):
        """Without in_features, K is twice the bytes per row."""
        weights, scales, gs = valid_parts(rng, k=20)
        assert PackedWeight(weights, scales, gs).in_features == 20

    def test_numpy_integer_group_size(self, rng):
        """A numpy integer group size is accepted and stored as an int."""
        weights, scales, _ = valid_parts(rng, k=20, gs=8)
        pw = PackedWeight(weights, scales, np.int64(8))
        assert type(pw.group_size) is int and pw.group_size == 8

    def test_arrays_read_only(self, rng):
        """The stored arrays cannot be written through the PackedWeight."""
        weights, scales, gs = valid_parts(rng)
        pw = PackedWeight(weights, scales, gs)
        with pytest.raises(ValueError):
            pw.weights[0, 0] = 1
        with pytest.raises(ValueError):
            pw.scales[0, 0] = 1.0

    def test_unpack(self, rng):
        """unpack() reads the contract's nibbles, ignoring the odd-K padding."""
        weights, scales, gs = valid_parts(rng, k=21)
        pw = PackedWeight(weights, scales, gs, in_features=21)
        np.testing.assert_array_equal(pw.unpack(), loop_unpack(weights, 21))

    @pytest.mark.parametrize("n,k,gs", [(6, 20, 8), (5, 21, 8), (3, 17, 5), (4, 7, 256), (2, 9, 1)])
    def test_dequantize_matches_loop(self, rng, n, k, gs):
        """dequantize() equals (u - 8) * scales[k // gs, n], computed one element at a time."""
        weights, scales, _ = valid_parts(rng, n=n, k=k, gs=gs)
        pw = PackedWeight(weights, scales, gs, in_features=k)
        expected = np.empty((n, k))
        for row in range(n):
            for col in range(k):
                byte = int(weights[row, col // 2])
                u = (byte >> 4) if col % 2 else (byte & 0x0F)
                expected[row, col] = (u - 8) * float(scales[col // gs, row])
        dq = pw.dequantize()
        assert dq.dtype == np.float64
        np.testing.assert_array_equal(dq, expected)

    @pytest.mark.parametrize("field,value,error,match", [
        ("weights", np.zeros((6, 10), np.int8) + 1, DTypeError, "'weights'"),
        ("weights", np.ones((6, 10)), DTypeError, "'weights'"),
        ("weights", [[1, 2]], DTypeError, "'weights'"),
        ("weights", np.ones(10, np.uint8), ShapeError, "'weights'"),
        ("weights", np.ones((6, 10, 1), np.uint8), ShapeError, "'weights'"),
        ("weights", np.ones((0, 10), np.uint8), ShapeError, "'weights'"),
        ("weights", np.ones((6, 0), np.uint8), ShapeError, "'weights'"),
        ("scales", np.ones((4, 9), np.float64), DTypeError, "scales'"),
        ("scales", np.ones((4, 9), np.float16), DTypeError, "scales'"),
        ("scales", np.ones(9, np.float32), ShapeError, "scales'"),
        ("scales", np.ones((4, 5), np.float32), ShapeError, "scales'"),
        ("scales", np.ones((2, 9), np.float32), GroupSizeError, "scales'"),
        ("group_size", 0, GroupSizeError, "'group_size'"),
        ("group_size", -8, GroupSizeError, "'group_size'"),
        ("group_size", 8.0, GroupSizeError, "'group_size'"),
        ("group_size", True, GroupSizeError, "'group_size'"),
        ("group_size", "8", GroupSizeError, "'group_size'"),
        ("group_size", None, GroupSizeError, "'group_size'"),
        ("in_features", 0, ShapeError, "'in_features'"),
        ("in_features", 21.0, ShapeError, "'in_features'"),
        ("in_features", 17, ShapeError, "'weights'"),
        ("in_features", 22, ShapeError, "'weights'"),
    ], ids=lambda v: (f"{v.dtype}{list(v.shape)}" if isinstance(v, np.ndarray)
                      else v.__name__ if isinstance(v, type)
                      else v.strip("'") if isinstance(v, str) else repr(v)))
    def test_invalid(self, rng, field, value, error, match):
        """Each malformed field raises its ArgumentError subclass, naming the argument."""
        weights, scales, gs = valid_parts(rng, n=6, k=20, gs=8)
        kwargs = {"weights": weights, "scales": scales, "group_size": gs, "in_features": 20, field: value}
        with pytest.raises(error, match=match):
            PackedWeight(**kwargs)

    def test_too_few_scale_rows_counts_remainder_group(self, rng):
        """A group size that does not divide K needs ceil(K/group_size) rows, not floor."""
        weights = random_weights(rng, 4, 20)
        with pytest.raises(GroupSizeError, match="scales'"):
            PackedWeight(weights, random_scales(rng, 2, 4, extra_groups=0), 8)
        PackedWeight(weights, random_scales(rng, 3, 4, extra_groups=0), 8)

    def test_padded_rows(self, rng):
        """Rows padded as ExecuTorch's exporter pads them (K = 60 -> 32 bytes, inner_dim_padding
        8) are accepted; the padding is ignored and compact() drops it."""
        q = rng.integers(-8, 8, (5, 60))
        weights = executorch_pack(q, 8)
        assert weights.shape == (5, 32)
        weights[:, 30:] = rng.integers(0, 256, (5, 2), dtype=np.uint8)  # garbage in the padding
        scales = random_scales(rng, 4, 5)
        pw = PackedWeight(weights, scales, 16, in_features=60)
        assert pw.padded and pw.row_bytes == 32 and pw.nbytes == 5 * 30 + 4 * 4 * 5
        np.testing.assert_array_equal(pw.unpack(), q)
        compact = pw.compact()
        assert not compact.padded and compact.weights.shape == (5, 30)
        np.testing.assert_array_equal(compact.dequantize(), pw.dequantize())
        assert compact.compact() is compact

    @pytest.mark.parametrize("k,row_bytes", [(60, 32), (17, 12), (17, 16), (17, 32), (3, 4), (3, 32)])
    def test_accepted_paddings(self, rng, k, row_bytes):
        """Rows of K rounded up to a multiple of 8, 16, 32 or 64 elements are accepted."""
        pw = PackedWeight(rng.integers(0, 256, (2, row_bytes), dtype=np.uint8), random_scales(rng, 1, 2), 64,
                          in_features=k)
        assert pw.row_bytes == row_bytes and pw.in_features == k

    @pytest.mark.parametrize("k,row_bytes", [(60, 31), (60, 36), (60, 40), (17, 10), (17, 14), (64, 36)])
    def test_other_paddings_refused(self, rng, k, row_bytes):
        """Any other row length raises ShapeError naming 'weights' and the accepted lengths."""
        with pytest.raises(ShapeError, match="'weights'.*bytes per row"):
            PackedWeight(rng.integers(0, 256, (2, row_bytes), dtype=np.uint8), random_scales(rng, 1, 2), 64,
                         in_features=k)


class TestLinearReference:
    @pytest.mark.parametrize("lead", [(1,), (5,), (2, 3), (0,)])
    @pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
    def test_matches_einsum(self, rng, lead, with_bias):
        """linear_reference equals an einsum over the contract's dequantized weight, for any lead shape."""
        n, k, gs = 7, 23, 5
        weights, scales, _ = valid_parts(rng, n=n, k=k, gs=gs)
        pw = PackedWeight(weights, scales, gs, in_features=k)
        x = rng.standard_normal((*lead, k)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
        q = loop_unpack(weights, k).astype(np.float64)
        s = scales.astype(np.float64)[np.arange(k) // gs, :n]  # (K, N)
        expected = np.einsum("...k,nk,kn->...n", x.astype(np.float64), q, s)
        if with_bias:
            expected = expected + bias
        out = q4gsw.linear_reference(x, pw, bias)
        assert out.dtype == np.float64
        assert out.shape == (*lead, n)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
