"""Tests of q4gsw.io.from_torchao against torchao's own quant primitives and Int4Tensor."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.io import from_torchao, from_torchao_plain

torch = pytest.importorskip("torch")


def pack_plain(q):
    """torchao's plain int4 packing (Int4PackingFormat.PLAIN, mslk/fbgemm pack_int4): int8
    (N, K) -> int8 (N, K/2), low nibble = even k (sign bits masked), high nibble = odd k."""
    return torch.bitwise_or(torch.bitwise_and(q[:, ::2], 0xF), torch.bitwise_left_shift(q[:, 1::2], 4)).contiguous()


def random_plain(seed, n, k, gs, dtype=torch.bfloat16):
    """Random int8 q in [-8, 7] (every value present) and random-sign scales (K/gs, N)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    magnitude = torch.randint(1, 32, (k // gs, n), generator=g) / 16  # few mantissa bits: c * scale is exact
    scale = magnitude * torch.where(torch.rand(k // gs, n, generator=g) < 0.5, -1, 1)
    return q, scale.to(dtype)


def documented_dequant(q, scale, zero_point, gs):
    """float64 value = q * scale + zero_point per group (torchao plain / tinygemm float zero point)."""
    g = np.arange(q.shape[1]) // gs
    s = scale.float().numpy().astype(np.float64)[g].T
    z = zero_point.float().numpy().astype(np.float64)[g].T
    return q.numpy().astype(np.float64) * s + z


class TestFromTorchaoPlain:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
    def test_zero_point_zero(self, dtype):
        """With zero points 0 the import equals the documented q * scale exactly."""
        q, scale = random_plain(1, 9, 128, 32, dtype)
        zp = torch.zeros_like(scale)
        pw = from_torchao_plain(pack_plain(q), scale, zp, group_size=32)
        np.testing.assert_array_equal(pw.dequantize(), documented_dequant(q, scale, zp, 32))
        np.testing.assert_array_equal(pw.unpack(), q.numpy())

    def test_carried_zero_point(self):
        """A zero point of c * scale with q + c in range is carried exactly as q + c."""
        q, scale = random_plain(2, 6, 64, 32)
        c = torch.tensor([[2.0] * 6, [-3.0] * 6])
        q = torch.clamp(q, -8 - int(c.min()), 7 - int(c.max())).to(torch.int8)
        zp = (c * scale.float()).to(torch.bfloat16)
        assert torch.equal(zp.float(), c * scale.float())  # exactly representable
        pw = from_torchao_plain(pack_plain(q), scale, zp, group_size=32)
        np.testing.assert_array_equal(pw.dequantize(), documented_dequant(q, scale, zp, 32))

    def test_asymmetric(self):
        """mslk's affine zero point (min + 8 * scale) raises AsymmetricError saying why."""
        q, scale = random_plain(3, 4, 64, 32)
        zp = (scale.float() * 0.3).to(torch.bfloat16)
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_point'.*asymmetric"):
            from_torchao_plain(pack_plain(q), scale, zp, group_size=32)
        zp = (scale.float() * 3).to(torch.bfloat16)  # an integer multiple, but q + 3 overflows
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_point'.*int4 range"):
            from_torchao_plain(pack_plain(q), scale, zp, group_size=32)

    def test_bad_inputs(self):
        """Wrong dtypes and shapes raise typed errors naming the argument."""
        q, scale = random_plain(4, 4, 64, 32)
        packed = pack_plain(q)
        with pytest.raises(q4gsw.DTypeError, match="'qdata'"):
            from_torchao_plain(packed.float(), scale, group_size=32)
        with pytest.raises(q4gsw.DTypeError, match="'scale'"):
            from_torchao_plain(packed, scale.double(), group_size=32)
        with pytest.raises(q4gsw.GroupSizeError, match="'scale'"):
            from_torchao_plain(packed, scale, group_size=16)
        with pytest.raises(q4gsw.ShapeError, match="'zero_point'"):
            from_torchao_plain(packed, scale, scale[:1], group_size=32)
        with pytest.raises(q4gsw.GroupSizeError, match="'group_size'"):
            from_torchao_plain(packed, scale, group_size=0)


class TestFromTorchao:
    ao = None

    @pytest.fixture(autouse=True)
    def _torchao(self):
        type(self).ao = pytest.importorskip("torchao.quantization.quant_primitives")
        self.Int4Tensor = pytest.importorskip(
            "torchao.quantization.quantize_.workflows.int4.int4_tensor").Int4Tensor

    def test_matches_torchao_dequantize(self):
        """An Int4Tensor built from torchao's symmetric int4 qparams dequantizes as torchao does."""
        ao = self.ao
        n, k, gs = 12, 256, 64
        w = torch.randn(n, k, generator=torch.Generator().manual_seed(5), dtype=torch.bfloat16)
        scale, zp = ao.choose_qparams_affine(w, ao.MappingType.SYMMETRIC, (1, gs), torch.int8,
                                             quant_min=-8, quant_max=7)
        q = ao.quantize_affine(w, (1, gs), scale, zp, torch.int8, -8, 7)
        assert q.min() == -8 or q.max() == 7
        t = self.Int4Tensor(pack_plain(q), scale.reshape(n, -1).t().contiguous(),
                            torch.zeros(k // gs, n, dtype=torch.bfloat16), [1, gs], w.shape)
        pw = from_torchao(t)
        expected = ao.dequantize_affine(q, (1, gs), scale, zp, torch.int8, -8, 7, output_dtype=torch.float32)
        np.testing.assert_array_equal(pw.dequantize(), expected.numpy().astype(np.float64))
        # torchao's float-zero-point (tinygemm) dequantization, the plain layout's meaning
        u = (q.to(torch.int16) + 8).to(torch.uint8)
        tiny = ao._dequantize_affine_tinygemm(u, [1, gs], scale, torch.zeros_like(scale), torch.uint8, 0, 15,
                                              output_dtype=torch.float32)
        np.testing.assert_array_equal(pw.dequantize(), tiny.numpy().astype(np.float64))

    def test_asymmetric_int4tensor(self):
        """An Int4Tensor with torchao-style affine zero points is refused with AsymmetricError."""
        q, scale = random_plain(6, 4, 64, 32)
        zp = (scale.float() * 0.5 + 0.01).to(torch.bfloat16)
        t = self.Int4Tensor(pack_plain(q), scale, zp, [1, 32], torch.Size([4, 64]))
        with pytest.raises(q4gsw.AsymmetricError, match="asymmetric"):
            from_torchao(t)

    def test_not_int4tensor(self):
        """A plain tensor is refused naming 'weight'."""
        with pytest.raises(q4gsw.DTypeError, match="'weight'"):
            from_torchao(torch.zeros(4, 4))
