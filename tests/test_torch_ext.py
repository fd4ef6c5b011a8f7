"""Tests of q4gsw.torch_ext: Q4Linear, DenseLinear, quantize_model and the q4gsw::linear_q4gsw and
q4gsw::dense_linear custom ops."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from torch import nn  # noqa: E402

import q4gsw  # noqa: E402
from q4gsw.torch_ext import DenseLinear, Q4Linear, quantize_model  # noqa: E402
from q4gsw.torch_ext.ops import SCHEMA  # noqa: E402

from .utils import assert_matches_reference, executorch_pack, random_problem, random_scales  # noqa: E402


def from_case(case) -> Q4Linear:
    return Q4Linear.from_executorch(case.weights, case.scales, case.group_size, case.bias,
                                    in_features=case.pw.in_features)


class Block(nn.Module):
    """A toy transformer block: q/k/v/o projections, a SwiGLU MLP, an lm_head (attention over one position)."""

    def __init__(self, d=48, f=80, vocab=37, kv=24):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, kv, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, kv, bias=True), nn.Linear(d, d, bias=False)
        self.mlp = nn.ModuleDict({"gate": nn.Linear(d, f, bias=False), "up": nn.Linear(d, f, bias=False),
                                  "down": nn.Linear(f, d, bias=True)})
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        v = self.v_proj(x)
        x = x + self.o_proj(torch.cat([v, v], dim=-1)) + 0 * self.q_proj(x).sum() + 0 * self.k_proj(x).sum()
        h = self.norm(x)
        x = x + self.mlp["down"](nn.functional.silu(self.mlp["gate"](h)) * self.mlp["up"](h))
        return self.lm_head(x)


def float64_reference(model: nn.Module) -> nn.Module:
    """A float64 copy of a quantized model whose Q4Linear and DenseLinear layers are nn.Linear of
    the dequantized (or stored) weight."""
    ref = copy.deepcopy(model)
    for fqn, mod in list(ref.named_modules()):
        if isinstance(mod, (Q4Linear, DenseLinear)):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None).double()
            lin.weight.data = torch.from_numpy((mod.packed if isinstance(mod, Q4Linear) else mod.dense).dequantize())
            if mod.bias is not None:
                lin.bias.data = mod.bias.double()
            parent, _, child = fqn.rpartition(".")
            setattr(ref.get_submodule(parent), child, lin)
    return ref.double()


def assert_close_to(y, ref, rtol=1e-5):
    """y float32 finite, within rtol * max|ref| of the float64 reference, everywhere."""
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert torch.isfinite(y).all()
    err = (y.double() - ref).abs().max().item()
    assert err <= rtol * ref.abs().max().item(), f"max error {err:.3g} vs max |ref| {ref.abs().max().item():.3g}"


class TestQ4Linear:
    @pytest.mark.parametrize("m, n, k, gs, bias, batch", [
        (3, 17, 45, 8, True, None),      # odd K, odd N, bias
        (2, 24, 64, 32, False, None),    # no bias
        (None, 12, 33, 16, True, (2, 3)),  # batch dims, odd K
        (1, 40, 256, 64, True, None),    # decode-sized
    ])
    def test_matches_reference(self, runtime, rng, m, n, k, gs, bias, batch):
        """forward on ExecuTorch's tensors (padded scales, garbage padding nibble) matches the float64 reference."""
        case = random_problem(rng, m or 1, n, k, gs, batch=batch, bias=bias)
        layer = from_case(case)
        y = layer(torch.from_numpy(case.x))
        assert isinstance(y, torch.Tensor)
        assert_matches_reference(y.numpy(), case.x, case.pw, case.bias)

    def test_from_linear_accuracy(self, runtime):
        """from_linear quantizes with q4gsw.quantize; the output is the reference's and near the float layer's."""
        torch.manual_seed(1)
        lin = nn.Linear(97, 40)
        q = Q4Linear.from_linear(lin, group_size=32)
        np.testing.assert_array_equal(q.weights.numpy(), q4gsw.quantize(lin.weight.detach().numpy(), 32).weights)
        x = torch.randn(5, 97)
        with torch.no_grad():
            y, y_float = q(x), lin(x)
        assert_matches_reference(y.numpy(), x.numpy(), q.packed, lin.bias.detach().numpy())
        rel = ((y - y_float).norm() / y_float.norm()).item()
        assert 0 < rel < 0.12, rel

    def test_inference_only(self, runtime, rng):
        """backward through the op raises a Q4gswError saying it is inference-only."""
        layer = from_case(random_problem(rng, 2, 8, 16, 8))
        x = torch.randn(2, 16, requires_grad=True)
        with pytest.raises(q4gsw.Q4gswError, match="inference-only"):
            layer(x).sum().backward()

    @pytest.mark.parametrize("x", [torch.ones(2, 16, dtype=torch.float64), torch.ones(2, 16, device="meta")],
                             ids=["float64", "meta"])
    def test_refuses_dtype_device(self, runtime, rng, x):
        """Non-float32 or non-CPU input raises DTypeError naming 'input'."""
        layer = from_case(random_problem(rng, 2, 8, 16, 8))
        with pytest.raises(q4gsw.DTypeError, match="'input'"):
            layer(x)

    def test_wrong_k(self, runtime, rng):
        """Input whose last dimension is not in_features raises ShapeError naming 'input'."""
        layer = from_case(random_problem(rng, 2, 8, 16, 8))
        with pytest.raises(q4gsw.ShapeError, match="'input'"):
            layer(torch.ones(2, 17))

    def test_executorch_padded_rows(self, runtime, rng):
        """from_executorch takes rows as ExecuTorch's exporter pads them (K = 60 -> 32 bytes),
        ignores the padding, and the op's fake kernel accepts the padded shape."""
        q = rng.integers(-8, 8, (11, 60))
        weights, scales = executorch_pack(q, 8), random_scales(rng, 4, 11)
        layer = Q4Linear.from_executorch(weights, scales, 16, in_features=60)
        x = rng.standard_normal((3, 60)).astype(np.float32)
        assert_matches_reference(layer(torch.from_numpy(x)).numpy(), x, layer.packed)
        np.testing.assert_array_equal(layer.packed.unpack(), q)
        y = torch.ops.q4gsw.linear_q4gsw(torch.empty(3, 60, device="meta"),
                                         torch.empty(11, 32, dtype=torch.uint8, device="meta"),
                                         torch.empty(4, 11, device="meta"), 16)
        assert y.shape == (3, 11)

    def test_state_dict(self, runtime, rng):
        """The packed bytes, scales and bias are buffers: state_dict round-trips into a fresh layer."""
        case = random_problem(rng, 2, 8, 16, 8)
        layer = from_case(case)
        assert set(layer.state_dict()) == {"weights", "weight_scales", "bias"}
        assert not list(layer.parameters())
        other = from_case(random_problem(rng, 2, 8, 16, 8))
        other.load_state_dict(layer.state_dict())
        assert_matches_reference(other(torch.from_numpy(case.x)).numpy(), case.x, case.pw, case.bias)


class TestQuantizeModel:
    def test_block(self, runtime):
        """Every linear but the filtered lm_head becomes a Q4Linear; the model matches its float64 reference."""
        torch.manual_seed(2)
        model = Block()
        summary = quantize_model(model, group_size=16, filter_fn=lambda mod, fqn: fqn != "lm_head", progress=False)
        converted = [r.fqn for r in summary.converted]
        assert converted == ["q_proj", "k_proj", "v_proj", "o_proj", "mlp.gate", "mlp.up", "mlp.down"]
        assert [(r.fqn, r.reason) for r in summary.skipped] == [("lm_head", "filter_fn returned False")]
        assert isinstance(model.mlp["down"], Q4Linear) and isinstance(model.lm_head, nn.Linear)
        x = torch.randn(2, 3, 48)
        with torch.no_grad():
            y = model(x)
            ref = float64_reference(model)(x.double())
        assert_close_to(y, ref)

    def test_summary_bytes(self, runtime):
        """bytes_before counts float weights and biases; bytes_after packed bytes, scales and biases."""
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 7, bias=False))
        summary = quantize_model(model, group_size=32, progress=False)
        assert summary.bytes_before == 4 * (64 * 32 + 32 + 32 * 7)
        assert summary.bytes_after == (32 * 32 + 4 * 2 * 32 + 4 * 32) + (7 * 16 + 4 * 1 * 7)
        assert "2 linear layers converted, 0 skipped" in str(summary)
        x = torch.randn(3, 64)
        with torch.no_grad():
            assert_close_to(model(x), float64_reference(model)(x.double()))

    def test_skip_reasons(self, runtime):
        """Ineligible layers are left in place and listed with the reason."""
        nan = nn.Linear(8, 4)
        with torch.no_grad():
            nan.weight[0, 0] = float("nan")
        model = nn.ModuleDict({"nan": nan, "meta": nn.Linear(8, 4, device="meta"),
                               "fp16": nn.Linear(8, 4).half(), "ok": nn.Linear(8, 4)})
        summary = quantize_model(model, group_size=4, progress=False)
        reasons = {r.fqn: r.reason for r in summary.skipped}
        assert "NaN" in reasons["nan"] and "meta" in reasons["meta"]
        assert [r.fqn for r in summary.converted] == ["fp16", "ok"]
        assert isinstance(model["nan"], nn.Linear)
        root = nn.Linear(8, 4)
        assert "from_linear" in quantize_model(root, progress=False).skipped[0].reason

    def test_progress_bar(self, runtime, capsys):
        """progress=True shows a tqdm bar on stderr."""
        quantize_model(nn.Sequential(nn.Linear(8, 4)), group_size=8, progress=True)
        assert "q4gsw: quantizing" in capsys.readouterr().err

    def test_bad_arguments(self):
        """A non-positive group size raises GroupSizeError; a non-module raises DTypeError."""
        with pytest.raises(q4gsw.GroupSizeError, match="'group_size'"):
            quantize_model(nn.Linear(4, 4), group_size=0)
        with pytest.raises(q4gsw.DTypeError, match="'model'"):
            quantize_model(object())


class TestDenseLinear:
    @pytest.mark.parametrize("dtype", ["float16", "float32"])
    @pytest.mark.parametrize("shape", [(3, 17, 45), (1, 24, 64), (40, 9, 96)])
    def test_matches_reference(self, runtime, dtype, shape):
        """forward runs q4gsw.dense_linear and matches the float64 reference of the stored weight."""
        m, n, k = shape
        torch.manual_seed(m + n + k)
        lin = nn.Linear(k, n)
        layer = DenseLinear.from_linear(lin, dtype)
        assert layer.weight.dtype == getattr(torch, dtype) and layer.bias.dtype == torch.float32
        x = torch.randn(m, k)
        ref = q4gsw.linear_reference(x.numpy(), layer.dense, lin.bias.detach().numpy())
        assert_close_to(layer(x), torch.from_numpy(ref))
        if dtype == "float32":
            with torch.no_grad():
                assert_close_to(layer(x), lin(x).double())

    def test_casts_and_state_dict(self, runtime):
        """model.half() keeps the stored precision and the float32 bias; state_dict round-trips."""
        torch.manual_seed(3)
        layer = DenseLinear.from_linear(nn.Linear(32, 8))
        x = torch.randn(2, 32)
        before = layer(x)
        nn.Sequential(layer).half()
        assert layer.weight.dtype == torch.float16 and layer.bias.dtype == torch.float32
        assert torch.equal(layer(x), before)
        other = DenseLinear.from_linear(nn.Linear(32, 8))
        other.load_state_dict(layer.state_dict())
        assert torch.equal(other(x), before)

    def test_export(self, runtime):
        """torch.export keeps q4gsw.dense_linear in the graph beside q4gsw.linear_q4gsw."""
        torch.manual_seed(4)
        model = nn.Sequential(Q4Linear.from_linear(nn.Linear(64, 32), 32), nn.ReLU(),
                              DenseLinear.from_linear(nn.Linear(32, 8)))
        x = torch.randn(3, 64)
        ep = torch.export.export(model, (x,))
        targets = {n.target for n in ep.graph.nodes if n.op == "call_function"}
        assert {torch.ops.q4gsw.dense_linear.default, torch.ops.q4gsw.linear_q4gsw.default} <= targets
        assert torch.equal(ep.module()(x), model(x))

    def test_refuses(self, runtime):
        """Bad input and unknown dtypes raise typed errors naming the argument."""
        layer = DenseLinear.from_linear(nn.Linear(16, 4))
        with pytest.raises(q4gsw.DTypeError, match="'input'"):
            layer(torch.ones(2, 16, dtype=torch.float64))
        with pytest.raises(q4gsw.ShapeError, match="'input'"):
            layer(torch.ones(2, 15))
        with pytest.raises(q4gsw.DTypeError, match="'dtype'"):
            DenseLinear.from_linear(nn.Linear(16, 4), "int8")
        with pytest.raises(q4gsw.Q4gswError, match="inference-only"):
            layer(torch.ones(2, 16, requires_grad=True)).sum().backward()


class TestQuantizeModelMixed:
    def test_keep_dense_by_name(self, runtime):
        """keep_dense patterns make those layers DenseLinear; the model matches its float64 reference."""
        torch.manual_seed(5)
        model = Block()
        summary = quantize_model(model, group_size=16, keep_dense=["lm_head", "mlp.d*"], progress=False)
        assert isinstance(model.lm_head, DenseLinear) and isinstance(model.mlp["down"], DenseLinear)
        assert isinstance(model.q_proj, Q4Linear)
        assert [r.fqn for r in summary.dense] == ["mlp.down", "lm_head"]
        assert {r.precision for r in summary.dense} == {"float16"}
        assert summary.dense[1].bytes_after == 37 * 48 * 2
        assert "kept dense" in str(summary) and "dense lm_head (float16)" in str(summary)
        x = torch.randn(2, 3, 48)
        with torch.no_grad():
            assert_close_to(model(x), float64_reference(model)(x.double()))

    def test_dense_budget(self, runtime):
        """dense_budget measures each linear's output error on the calibration inputs and keeps
        the most sensitive ones dense within the budget; on fresh inputs the mixed model is
        closer to the float model than the all-int4 one."""
        torch.manual_seed(6)
        float_model = Block()
        calibration = torch.randn(4, 5, 48)
        mixed, int4 = copy.deepcopy(float_model), copy.deepcopy(float_model)
        summary = quantize_model(mixed, group_size=16, dense_budget=1.6, calibration=(calibration,), progress=False)
        quantize_model(int4, group_size=16, progress=False)
        sens = {r.fqn: r.sensitivity for r in summary.converted}
        assert all(v is not None and v >= 0 for v in sens.values())
        assert sens["q_proj"] == sens["k_proj"] == 0  # Block multiplies their outputs by 0
        dense = {r.fqn for r in summary.dense}
        assert dense and len(dense) < len(sens) and not dense & {"q_proj", "k_proj"}
        all_int4 = sum(r.bytes_after for r in quantize_model(copy.deepcopy(float_model), 16, progress=False).converted)
        assert summary.bytes_after <= 1.6 * all_int4 + sum(4 * r.out_features for r in summary.converted)
        x = torch.randn(3, 5, 48)
        with torch.no_grad():
            y = float_model(x)
            err_mixed, err_int4 = (mixed(x) - y).norm().item(), (int4(x) - y).norm().item()
        assert err_mixed < err_int4

    def test_bad_mixed_arguments(self):
        """Both ways at once, a budget without calibration or below 1, and bad names are refused."""
        with pytest.raises(q4gsw.ArgumentError, match="'keep_dense'"):
            quantize_model(Block(), keep_dense=["lm_head"], dense_budget=1.5, calibration=torch.ones(1, 48))
        with pytest.raises(q4gsw.ArgumentError, match="'calibration'"):
            quantize_model(Block(), dense_budget=1.5)
        with pytest.raises(q4gsw.ArgumentError, match="'dense_budget'"):
            quantize_model(Block(), dense_budget=0.5, calibration=torch.ones(1, 48))
        with pytest.raises(q4gsw.DTypeError, match="'keep_dense'"):
            quantize_model(Block(), keep_dense=[3])
        with pytest.raises(q4gsw.DTypeError, match="'dense_dtype'"):
            quantize_model(Block(), keep_dense=["lm_head"], dense_dtype="bfloat16")


class TestLinearQ4gswOp:
    def test_schema(self):
        """The op's schema is ExecuTorch's et_vk::linear_q4gsw schema."""
        assert str(torch.ops.q4gsw.linear_q4gsw.default._schema) == "q4gsw::linear_q4gsw" + SCHEMA

    def test_eager(self, runtime, rng):
        """The CPU kernel runs q4gsw on ExecuTorch's tensors and matches the float64 reference."""
        case = random_problem(rng, 3, 13, 45, 7)
        y = torch.ops.q4gsw.linear_q4gsw(torch.from_numpy(case.x), torch.from_numpy(case.weights),
                                         torch.from_numpy(case.scales), 7, torch.from_numpy(case.bias))
        assert_matches_reference(y.numpy(), case.x, case.pw, case.bias)

    def test_fake_kernel(self):
        """On meta tensors the op gives (..., N) float32 without running anything."""
        y = torch.ops.q4gsw.linear_q4gsw(torch.empty(2, 5, 45, device="meta"),
                                         torch.empty(13, 23, dtype=torch.uint8, device="meta"),
                                         torch.empty(8, 16, device="meta"), 7)
        assert y.shape == (2, 5, 13) and y.dtype == torch.float32 and y.device.type == "meta"

    def test_export(self, runtime, rng):
        """torch.export keeps q4gsw.linear_q4gsw in the graph, and the exported program matches the reference."""
        case = random_problem(rng, 4, 20, 64, 16)
        model = nn.Sequential(from_case(case), nn.ReLU())
        x = torch.from_numpy(case.x)
        ep = torch.export.export(model, (x,))
        targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
        assert torch.ops.q4gsw.linear_q4gsw.default in targets
        y = ep.module()(x)
        ref = np.maximum(q4gsw.linear_reference(case.x, case.pw, case.bias), 0)
        assert torch.equal(y, model(x))
        assert_close_to(y, torch.from_numpy(ref))

    def test_compile_fullgraph(self, runtime, rng):
        """torch.compile(fullgraph=True) traces through the fake kernel without a graph break and matches.

        Backend aot_eager (dynamo + AOTAutograd over the fake kernel, no C++ build): inductor
        also works but its cold C++ compile took ~57 s on the 2-core CI machine."""
        case = random_problem(rng, 2, 16, 32, 8)
        model = nn.Sequential(from_case(case), nn.GELU())
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        x = torch.from_numpy(case.x)
        y = compiled(x)
        ref = torch.nn.functional.gelu(torch.from_numpy(q4gsw.linear_reference(case.x, case.pw, case.bias)))
        assert_close_to(y, ref)


class TestDtypeCasts:
    def test_half_cast_keeps_the_packed_format(self, runtime):
        """model.half() leaves a Q4Linear's scales and bias float32, so forward still runs, unchanged."""
        torch.manual_seed(0)
        layer = Q4Linear.from_linear(nn.Linear(64, 24), group_size=32)
        x = torch.randn(3, 64)
        before = layer(x)
        model = nn.Sequential(layer).half()
        assert layer.weight_scales.dtype == torch.float32 and layer.bias.dtype == torch.float32
        assert layer.weights.dtype == torch.uint8
        assert torch.equal(model(x), before)


class TestInt8Activations:
    """activations="int8" on Q4Linear / quantize_model, and the q4gsw::linear_dq8ca_q4gsw op."""

    def test_q4linear_runs_the_dq8ca_op(self, runtime, rng):
        """An int8 Q4Linear gives what q4gsw.linear_dq8ca_q4gsw gives, and says so in its repr."""
        case = random_problem(rng, 5, 24, 64, 32)
        layer = Q4Linear.from_executorch(case.weights, case.scales, 32, case.bias, activations="int8")
        with torch.no_grad():
            y = layer(torch.from_numpy(case.x))
        want = q4gsw.linear_dq8ca_q4gsw(case.x, case.weights, case.scales, 32, case.bias)
        np.testing.assert_array_equal(y.numpy(), want)
        assert "activations=int8" in repr(layer)
        with pytest.raises(q4gsw.ValueRangeError, match="'activations'"):
            Q4Linear(case.pw, activations="fp8")

    def test_export_keeps_the_op(self, runtime, rng):
        """torch.export keeps q4gsw.linear_dq8ca_q4gsw in the graph; its schema is linear_q4gsw's."""
        case = random_problem(rng, 4, 20, 64, 32)
        model = nn.Sequential(Q4Linear(case.pw, case.bias, activations="int8"))
        x = torch.from_numpy(case.x)
        ep = torch.export.export(model, (x,))
        assert torch.ops.q4gsw.linear_dq8ca_q4gsw.default in [n.target for n in ep.graph.nodes]
        assert torch.equal(ep.module()(x), model(x))
        assert str(torch.ops.q4gsw.linear_dq8ca_q4gsw.default._schema) == "q4gsw::linear_dq8ca_q4gsw" + SCHEMA

    def test_quantize_model(self, runtime):
        """quantize_model(activations="int8") makes int8 layers of those with in_features % 32 == 0,
        skips the others with the reason, and refuses a group size that is no multiple of 32."""
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 8))
        summary = quantize_model(model, group_size=32, progress=False, activations="int8")
        assert [r.fqn for r in summary.converted] == ["0"] and model[0].activations == "int8"
        assert "multiple of 32" in summary.skipped[0].reason
        x = torch.randn(3, 64)
        with torch.no_grad():
            y = model[0](x)
        ref = q4gsw.linear_reference(x.numpy(), model[0].packed, model[0].bias.numpy())
        assert np.abs(y.numpy() - ref).max() < 3e-2 * np.abs(ref).max()
        with pytest.raises(q4gsw.GroupSizeError, match="multiple of 32"):
            quantize_model(nn.Sequential(nn.Linear(64, 8)), group_size=16, activations="int8")
