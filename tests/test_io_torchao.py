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


def assert_fp32_product(exact, torchao_fp32):
    """q * scale exactly (float64) against torchao's float32 product: equal up to its rounding."""
    np.testing.assert_allclose(exact, torchao_fp32.double().numpy(), rtol=2.0**-24, atol=0)


def _ao():
    """torchao's quantize_ API, or a skip."""
    return pytest.importorskip("torchao.quantization")


def intx_config(ao, group_size, weight_dtype=None, mapping="SYMMETRIC"):
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType

    granularity = PerAxis(0) if group_size is None else PerGroup(group_size)
    return ao.IntxWeightOnlyConfig(weight_dtype=weight_dtype or torch.int4, granularity=granularity,
                                   mapping_type=getattr(MappingType, mapping))


def quantized_linear(ao, config, n, k, bias, seed, dtype=torch.float32):
    """An nn.Linear with fresh random weights, quantized in place by torchao's quantize_."""
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias).to(dtype)
    ao.quantize_(lin, config)
    return lin


class TestFromTorchaoIntx:
    @pytest.mark.parametrize("n,k,gs,bias,weight_dtype", [
        (37, 256, 128, True, "int4"),     # odd N, the config
        (16, 384, 32, False, "int4"),     # MiniLM's K, small groups
        (9, 96, 96, True, "int4"),        # one group per row
        (24, 160, None, True, "int4"),    # PerAxis(0): group_size = K
        (12, 128, 64, False, "int2"),     # fewer bits: a subset of int4's range
        (12, 192, 48, True, "int3"),      # group size not a power of two
    ], ids=["g128-odd-N", "g32", "g=K", "per-axis", "int2", "int3-g48"])
    def test_matches_torchao_forward(self, runtime, rng, n, k, gs, bias, weight_dtype):
        """IntxWeightOnlyConfig (symmetric) on the CPU: the import equals torchao's dequantize
        (its fp32 product q * scale, rounded: within 2^-24 relative), and q4gsw.linear on the GPU equals torchao's own forward to fp32 rounding, on
        fresh inputs (M = 1 and M = 33)."""
        ao = _ao()
        lin = quantized_linear(ao, intx_config(ao, gs, getattr(torch, weight_dtype)), n, k, bias, int(rng.integers(1 << 30)))
        assert type(lin.weight).__name__ == "IntxUnpackedToInt8Tensor"
        pw = from_torchao(lin.weight)
        assert (pw.out_features, pw.in_features, pw.group_size) == (n, k, gs or k)
        assert_fp32_product(pw.dequantize(), lin.weight.dequantize())
        b = None if lin.bias is None else lin.bias.detach().numpy()
        for m in (1, 33):
            x = rng.standard_normal((m, k)).astype(np.float32)
            with torch.no_grad():
                expected = lin(torch.from_numpy(x)).numpy()
            y = q4gsw.linear(x, pw, bias=b)
            tolerance = 1e-5 * (np.abs(x) @ np.abs(pw.dequantize()).T + (0 if b is None else np.abs(b))) + 1e-6
            assert (np.abs(y - expected) <= tolerance).all()

    def test_bfloat16_model(self):
        """A bfloat16 model's scales are taken exactly: dequantize() equals torchao's
        dequantize_affine to float32 (torchao's own forward rounds the product to bfloat16)."""
        ao = _ao()
        from torchao.quantization.quant_primitives import dequantize_affine

        lin = quantized_linear(ao, intx_config(ao, 64), 20, 128, True, 3, torch.bfloat16)
        w = lin.weight
        pw = from_torchao(w)
        expected = dequantize_affine(w.qdata, w.block_size, w.scale, w.zero_point, torch.int8, -8, 7,
                                     output_dtype=torch.float32)
        np.testing.assert_array_equal(pw.dequantize(), expected.double().numpy())

    def test_integer_zero_point_carried(self, rng):
        """Zero points that keep q - zero_point within int4 are carried as q' = q - zero_point,
        equal to torchao's dequantize."""
        from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
            IntxUnpackedToInt8Tensor,
        )

        n, k, gs = 6, 64, 32
        zp = torch.from_numpy(rng.integers(-3, 4, (n, k // gs)).astype(np.int8))
        q = torch.from_numpy(rng.integers(-5, 5, (n, k)).astype(np.int8))
        scale = torch.from_numpy(rng.uniform(0.01, 0.1, (n, k // gs)).astype(np.float32))
        t = IntxUnpackedToInt8Tensor(q, scale, zp, torch.int4, (1, gs), torch.float32, None)
        pw = from_torchao(t)
        assert_fp32_product(pw.dequantize(), t.dequantize())

    def test_asymmetric_refused(self):
        """MappingType.ASYMMETRIC: q - zero_point leaves int4; AsymmetricError says to quantize symmetrically."""
        ao = _ao()
        lin = quantized_linear(ao, intx_config(ao, 32, mapping="ASYMMETRIC"), 8, 64, False, 4)
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_point'.*SYMMETRIC"):
            from_torchao(lin.weight)

    def test_activation_quantization(self):
        """Int8DynamicActivationIntxWeightConfig: refused by default (torchao's forward quantizes
        the activations); with ignore_activation_quantization=True the weight is taken exactly."""
        ao = _ao()
        from torchao.quantization.granularity import PerGroup

        lin = torch.nn.Linear(64, 8)
        ao.quantize_(lin, ao.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                    weight_granularity=PerGroup(32)))
        with pytest.raises(q4gsw.FormatError, match="activation_quantization"):
            from_torchao(lin.weight)
        pw = from_torchao(lin.weight, ignore_activation_quantization=True)
        assert_fp32_product(pw.dequantize(), lin.weight.dequantize())

    def test_int8_refused(self):
        """An int8 intx weight raises FormatError naming the target dtype and how to convert."""
        ao = _ao()
        lin = quantized_linear(ao, intx_config(ao, 32, torch.int8), 8, 64, False, 5)
        with pytest.raises(q4gsw.FormatError, match="target_dtype torch.int8.*IntxWeightOnlyConfig"):
            from_torchao(lin.weight)


class TestFromTorchaoRefused:
    def test_other_torchao_tensor(self):
        """Another torchao tensor type (Int8Tensor here, CPU-made) raises FormatError naming its
        type, the supported types and the conversion."""
        ao = _ao()
        lin = torch.nn.Linear(64, 8)
        ao.quantize_(lin, ao.Int8WeightOnlyConfig())
        kind = type(lin.weight).__name__
        with pytest.raises(q4gsw.FormatError, match=f"a {kind}.*IntxWeightOnlyConfig") as info:
            from_torchao(lin.weight)
        assert "IntxUnpackedToInt8Tensor" in str(info.value) and "Int4Tensor" in str(info.value)

    def test_known_layouts_say_why(self):
        """The int4 layouts that need CUDA/XPU kernels are refused with their own reason."""
        from q4gsw.io.from_torchao import REFUSED

        for kind, why in REFUSED.items():
            fake = type(kind, (), {"__module__": "torchao.quantization.fake"})()
            with pytest.raises(q4gsw.FormatError, match=f"a {kind}: .*IntxWeightOnlyConfig"):
                from_torchao(fake)
            assert why


class TestFromTorchaoIntxTensors:
    def test_bad_inputs(self, rng):
        """Wrong dtypes, shapes and group sizes raise typed errors naming the argument."""
        from q4gsw.io import from_torchao_intx

        q = rng.integers(-8, 8, (4, 64)).astype(np.int8)
        s = rng.uniform(0.1, 1, (4, 2)).astype(np.float32)
        assert from_torchao_intx(q, s, group_size=32).unpack().tolist() == q.tolist()
        with pytest.raises(q4gsw.DTypeError, match="'qdata'"):
            from_torchao_intx(q.astype(np.int16), s, group_size=32)
        with pytest.raises(q4gsw.ShapeError, match="'qdata'.*multiple of group_size"):
            from_torchao_intx(q, s, group_size=48)
        with pytest.raises(q4gsw.GroupSizeError, match="'scale'"):
            from_torchao_intx(q, s[:, :1], group_size=32)
        with pytest.raises(q4gsw.AsymmetricError, match="'zero_point'.*integer"):
            from_torchao_intx(q, s, np.full((4, 2), 0.5, np.float32), group_size=32)
